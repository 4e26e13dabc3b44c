"""Optimize a DSPy program's predictors with policyopt's optimizers (``policyopt[dspy]``).

``optimize_dspy(module, metric, trainset, optimizer="gepa", lm=..., max_rollouts=...)`` exposes
each predictor's instruction (optionally its field and ReAct tool descriptions) as named
components of a dict prompt, runs the optimizer through its normal API, and returns a copy of the
module with the best texts written in, plus the usual :class:`~policyopt.OptimizationResult`.
:class:`DSPyProgram` is the adapter underneath; :class:`PlainAdapter` is a DSPy adapter for very
small models (the embedded SmolLM2) that read one user message and write no field markers.
:func:`dspy_task` makes a DSPy program a benchmark task, for policyopt's optimizers and DSPy's.
"""

from __future__ import annotations

try:
    import dspy as _dspy  # noqa: F401  (the extra's one dependency, checked on import)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from policyopt.errors import MissingDependencyError

    raise MissingDependencyError(
        "policyopt.integrations.dspy needs DSPy: pip install 'policyopt[dspy]'"
    ) from exc

from policyopt.integrations.dspy.adapter import PlainAdapter
from policyopt.integrations.dspy.components import COMPONENT_KINDS, Component, find_components
from policyopt.integrations.dspy.optimize import DSPyResult, optimize_dspy
from policyopt.integrations.dspy.program import DSPyProgram
from policyopt.integrations.dspy.task import DSPyNative, dspy_task

__all__ = [
    "COMPONENT_KINDS",
    "Component",
    "DSPyNative",
    "DSPyProgram",
    "DSPyResult",
    "PlainAdapter",
    "dspy_task",
    "find_components",
    "optimize_dspy",
]
