"""Look at finished (or running) runs: ``policyopt show``, ``plot`` and ``compare``.

A run directory (see :mod:`policyopt.state.rundir`) is read, never written:
:func:`load_run` gives a :class:`RunView`; :mod:`policyopt.runview.show` prints it and
:mod:`policyopt.runview.plots` draws it (matplotlib, ``pip install 'policyopt[bench]'``).
"""

from policyopt.runview.load import Proposal, RunView, load_run

__all__ = ["Proposal", "RunView", "load_run"]
