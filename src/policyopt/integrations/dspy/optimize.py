"""``optimize_dspy``: any registered policyopt optimizer on a DSPy program, through its normal API.

The optimizer sees a :class:`~policyopt.Program` whose prompt is a dict of the module's
components (:class:`~policyopt.integrations.dspy.DSPyProgram`); the best texts it finds are
written into a copy of the module, which is returned with the :class:`OptimizationResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from policyopt.errors import ConfigError, describe
from policyopt.integrations.dspy.program import DSPyProgram
from policyopt.lm.local import LocalLM
from policyopt.lm.metered import MeteredLM
from policyopt.protocol import Optimizer
from policyopt.registry import get_spec
from policyopt.types import OptimizationResult

__all__ = ["DSPyResult", "build_optimizer", "optimize_dspy"]


@dataclass(frozen=True)
class DSPyResult:
    """The optimized copy of the module, the optimizer's result, and the texts before/after."""

    module: dspy.Module
    result: OptimizationResult
    seed_components: dict[str, str]
    best_components: dict[str, str]

    @property
    def changed(self) -> dict[str, str]:
        """The components whose text the optimizer changed, with their new text."""
        return {k: v for k, v in self.best_components.items() if self.seed_components.get(k) != v}


def build_optimizer(
    optimizer: str | Optimizer,
    *,
    lm: Any,
    max_rollouts: int | None,
    n_train: int,
    n_val: int,
    settings: dict[str, Any],
) -> Optimizer:
    """An optimizer instance: ``optimizer`` itself, or the registry's ``optimizer`` built with
    ``lm`` and ``max_rollouts`` as the harness builds it (its small-model preset when ``lm`` is
    the embedded :class:`~policyopt.LocalLM`, then ``settings``, then its budget fit)."""
    if not isinstance(optimizer, str):
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(
                "The 'optimizer' parameter of optimize_dspy must be a registered name ('gepa', "
                f"'mipro', 'opro', ...) or an Optimizer; got {describe(optimizer)} instead."
            )
        given = [n for n, v in (("lm", lm), ("max_rollouts", max_rollouts)) if v is not None]
        if given or settings:
            raise ConfigError(
                f"optimize_dspy got an Optimizer instance and {', '.join(given + list(settings))}"
                "; give those to the optimizer's constructor instead."
            )
        return optimizer
    spec = get_spec(optimizer)
    if lm is None or max_rollouts is None:
        raise ConfigError(
            f"optimize_dspy(optimizer={optimizer!r}) needs lm= (the optimizer's {spec.lm_role} "
            "LM, e.g. policyopt.LM('openai/gpt-4.1-mini') or LocalLM.for_reflection()) and "
            "max_rollouts= (the rollout budget)."
        )
    small = isinstance(lm, LocalLM)
    planned = spec.plan(
        settings, budget=max_rollouts, n_train=n_train, n_val=n_val, small_model=small
    )
    if small and spec.small_model_lm:
        lm = MeteredLM(lm, **spec.small_model_lm)
    return spec.build(lm=lm, max_rollouts=max_rollouts, **planned)


def optimize_dspy(
    module: dspy.Module,
    metric: Callable[..., Any],
    trainset: Sequence[dspy.Example],
    valset: Sequence[dspy.Example] | None = None,
    *,
    optimizer: str | Optimizer = "gepa",
    lm: Any = None,
    max_rollouts: int | None = None,
    components: str | Iterable[str] = "instructions",
    task_lm: Any = None,
    adapter: Any = None,
    **settings: Any,
) -> DSPyResult:
    """Optimize ``module``'s texts with a policyopt optimizer; return an optimized copy.

    ``metric(example, prediction, trace=None)`` or dspy.GEPA's ``(gold, pred, trace, pred_name,
    pred_trace)`` returns a number, a bool or ``dspy.Prediction(score=..., feedback=...)``.
    ``optimizer`` is a registered name (built with ``lm``, its own LM, ``max_rollouts`` and
    ``settings``) or an :class:`~policyopt.Optimizer` instance. ``components`` is
    ``"instructions"`` or any of ``("instructions", "fields", "tools")``. The module runs with
    ``task_lm``/``adapter``, by default DSPy's configured ones. ``module`` is never changed.
    """
    program = DSPyProgram(module, metric, components=components, lm=task_lm, adapter=adapter)
    train = program.rows(trainset, "train")
    val = program.rows(valset, "val") if valset is not None else None
    instance = build_optimizer(
        optimizer,
        lm=lm,
        max_rollouts=max_rollouts,
        n_train=len(train),
        n_val=len(val if val is not None else train),
        settings=settings,
    )
    result = instance.optimize(program.program(), train, val)
    best = result.best_prompt
    if not isinstance(best, str | dict):
        raise ConfigError(
            f"The optimizer returned a {type(best).__name__} best prompt; a DSPy program's "
            "prompt is a dict of components (or one str)."
        )
    texts = program.texts(best)
    return DSPyResult(
        module=program.apply(texts),
        result=result,
        seed_components=program.seed,
        best_components=texts,
    )
