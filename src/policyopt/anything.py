"""Optimize any text artifact (code, a config, a prompt) with any registered optimizer.

:func:`optimize_anything` runs one of three searches, chosen by the data given:

- **single-task** (no ``dataset``): ``evaluate(candidate)`` scores the candidate itself (one hard
  problem; the candidate is the solution). The run stops at ``target_score`` or the budget.
- **multi-task** (``dataset``, no ``valset``): ``evaluate(candidate, example)`` over many
  problems with one artifact; the problems are both the training and the validation set.
- **generalization** (``dataset`` and ``valset``): train on one, choose on the other.

All three are one :class:`~policyopt.Program` and the optimizer's usual ``optimize`` call
(:func:`search_inputs` builds them), so every optimizer, the journal, resume and the harness work
unchanged. ``objective`` and ``background`` reach every proposal prompt; ``policyopt.log(...)``
inside ``evaluate`` adds side information to the rollout's feedback (:mod:`policyopt.sideinfo`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from policyopt.errors import ConfigError, describe
from policyopt.registry import get_spec
from policyopt.rollout.loop import is_async_callable
from policyopt.types import OptimizationResult, Program

__all__ = ["ARTIFACT_LM", "SINGLE_TASK", "Search", "optimize_anything", "search_inputs"]

#: the one example of a single-task search (what a reflection LM sees as its input)
SINGLE_TASK = "(a single task: the candidate is scored as the solution itself)"

Mode = Literal["single_task", "multi_task", "generalization"]

#: LM call settings for proposing an artifact: a whole text (code), not one line
ARTIFACT_LM: dict[str, Any] = {"stop": None, "max_tokens": 256}


@dataclass(frozen=True)
class Search:
    """What one search hands an optimizer: its program, trainset and valset, and its mode."""

    mode: Mode
    program: Program
    trainset: Sequence[Any]
    valset: Sequence[Any] | None


class _SingleTask:
    """``evaluate(candidate)`` called as ``evaluate(candidate, example)``: picklable, and named
    after what it wraps (``__wrapped__``) in a run's identity."""

    def __init__(self, evaluate: Callable[[Any], object]) -> None:
        self.__wrapped__ = evaluate

    def __call__(self, candidate: Any, example: Any) -> object:
        return self.__wrapped__(candidate)


class _SingleTaskAsync(_SingleTask):
    """The same for an ``async def evaluate(candidate)``."""

    async def __call__(self, candidate: Any, example: Any) -> object:  # type: ignore[override]
        return await self.__wrapped__(candidate)  # type: ignore[misc]


def _positional(evaluate: Callable[..., object]) -> tuple[int, int | None] | None:
    """``(required, most)`` positional arguments ``evaluate`` takes (``most`` None: any number),
    or None when its signature cannot be read (a builtin: it is taken at its word)."""
    try:
        signature = inspect.signature(evaluate)
    except (TypeError, ValueError):
        return None
    required, most = 0, 0
    for param in signature.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return required, None
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            required += param.default is param.empty
    return required, most


def _check_arity(evaluate: Callable[..., object], n_args: int, mode: Mode) -> None:
    """A one-line error when ``evaluate`` cannot be called with ``n_args`` positional args."""
    arity = _positional(evaluate)
    if arity is None:
        return
    required, most = arity
    if required <= n_args and (most is None or n_args <= most):
        return
    if mode == "single_task":
        raise ConfigError(
            "With no dataset (single-task search), evaluate is called as evaluate(candidate); "
            f"{describe(evaluate)} needs {required} arguments. Pass dataset=[...] to call it as "
            "evaluate(candidate, example)."
        )
    raise ConfigError(
        f"With a dataset ({mode.replace('_', '-')} search), evaluate is called as "
        f"evaluate(candidate, example); {describe(evaluate)} takes {most} positional "
        "argument(s). Drop dataset= for single-task search with evaluate(candidate)."
    )


def search_inputs(
    seed_candidate: str | Mapping[str, str],
    evaluate: Callable[..., object],
    *,
    dataset: Sequence[Any] | None = None,
    valset: Sequence[Any] | None = None,
    objective: str | None = None,
    background: str | None = None,
) -> Search:
    """The program and data of a search over ``seed_candidate`` (see the module doc: the mode
    follows from ``dataset`` and ``valset``; ``evaluate``'s arity is checked against it)."""
    if not callable(evaluate):
        raise ConfigError(
            f"The 'evaluate' parameter must be callable; got {describe(evaluate)} instead."
        )
    if dataset is None:
        if valset is not None:
            raise ConfigError("A valset needs a dataset to train on: pass dataset= as well.")
        _check_arity(evaluate, 1, "single_task")
        single = _SingleTaskAsync if is_async_callable(evaluate) else _SingleTask
        program = Program(
            seed_candidate, single(evaluate), objective=objective, background=background
        )
        return Search("single_task", program, [SINGLE_TASK], None)
    mode: Mode = "multi_task" if valset is None else "generalization"
    _check_arity(evaluate, 2, mode)
    program = Program(seed_candidate, evaluate, objective=objective, background=background)
    return Search(mode, program, dataset, valset)


def optimize_anything(
    seed_candidate: str | Mapping[str, str],
    evaluate: Callable[..., object],
    *,
    dataset: Sequence[Any] | None = None,
    valset: Sequence[Any] | None = None,
    objective: str | None = None,
    background: str | None = None,
    optimizer: str = "gepa",
    lm: Any = None,
    max_rollouts: int,
    target_score: float | None = None,
    **settings: Any,
) -> OptimizationResult:
    """Optimize ``seed_candidate`` (a text, or named texts) for ``evaluate`` with ``optimizer``.

    ``evaluate(candidate)`` without a dataset, ``evaluate(candidate, example)`` with one; it
    returns a float, a ``(score, feedback)`` pair or a :class:`~policyopt.Score`, and may call
    ``policyopt.log(...)``. ``target_score`` stops the run once the best candidate reaches it
    (by default, the top of ``score_range``). ``lm`` is the optimizer's LM (None: the embedded
    SmolLM2-135M, weak but offline); ``settings`` are the optimizer's own, over its defaults for
    artifacts and single-task search (see :class:`~policyopt.registry.OptimizerSpec`).
    ``details["search"]`` of the result names the mode.
    """
    spec = get_spec(optimizer)
    search = search_inputs(
        seed_candidate,
        evaluate,
        dataset=dataset,
        valset=valset,
        objective=objective,
        background=background,
    )
    chosen = dict(spec.artifact_settings)
    if search.mode == "single_task":
        if spec.single_task is None:
            raise ConfigError(
                f"{optimizer} cannot search a single task (it needs examples); pass "
                "dataset=[...] or use optimizer='gepa' or 'opro'."
            )
        chosen.update(spec.single_task)
    chosen.update(settings)
    if target_score is not None:
        if "perfect_score" not in spec.settings.model_fields:
            raise ConfigError(f"{optimizer} has no target-score stop; drop target_score.")
        chosen["perfect_score"] = target_score
    own_lm = lm is None
    if own_lm:
        from policyopt.lm.local import LocalLM

        lm = LocalLM(n_parallel=2, temperature=0.9, **ARTIFACT_LM)
    try:
        built = spec.build(lm=lm, max_rollouts=max_rollouts, **chosen)
        result = built.optimize(search.program, search.trainset, search.valset)
    finally:
        if own_lm:
            lm.close()
    return result.model_copy(update={"details": {**result.details, "search": search.mode}})
