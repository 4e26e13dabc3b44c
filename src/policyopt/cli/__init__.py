"""The ``policyopt`` command line: ``demo``, ``optimize`` and ``estimate`` (your own program from
a config file), ``show``, ``plot``, ``compare``, ``bench``, ``tasks``, ``version`` (and more).

One module per command group; importing this package registers every command on :data:`app`.
A mistake on the command line (an unknown task, a budget of 0, a bad setting, a directory that is
not a run) is one line on stderr saying what, where and how to fix it, and exit code 2, checked
before any model is loaded; never a traceback.
"""

from __future__ import annotations

import os
import sys

from policyopt.cli._app import app
from policyopt.cli._signals import STOP_CODES

# importing a command module registers its commands; this order is the order of `--help`
# isort: off
from policyopt.cli import info, demo, runs, own, bench, serving  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``policyopt`` script.

    After a stop signal (exit code 130 or 143) everything is written and flushed when the
    command returns; the process then ends at once instead of waiting at interpreter exit for
    LM calls and model servers it abandoned.
    """
    try:
        app()
    except SystemExit as exc:
        if exc.code in STOP_CODES:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(exc.code))
        raise


if __name__ == "__main__":
    main()
