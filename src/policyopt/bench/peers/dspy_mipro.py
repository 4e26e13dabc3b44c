"""DSPy's MIPROv2 as a benchmark peer: ``dspy-mipro``.

The task is a one-predictor DSPy program whose adapter renders exactly the task's user message,
demos written into the prompt as policyopt's MIPRO writes them
(:func:`~policyopt.bench.peers._dspy.task_program`). So the optimized program, instruction plus
demos, *is* one prompt string for the task's own program: ``best_prompt`` is that string
(``prompt_of(instruction, demos)``) and the harness scores it like everyone's, no ``evaluate=``
needed: the task program sends, word for word, the message the DSPy program sends.

MIPROv2 has no rollout budget. Its plan is fitted to ``ctx.budget`` by :func:`plan`, an upper
bound of its metric calls read from DSPy's code (bootstrapping runs over the whole trainset once
per bootstrapped demo set, the default program's valset evaluation, minibatch trials, periodic
and final valset evaluations); ``rollouts`` is the number of metric calls it really made,
counted in the metric.

Defaults as ``benchmarks/mipro_vs_dspy.py`` and ``policyopt demo --algorithm mipro``: 4
candidates, minibatch 10, 4 bootstrapped and 4 labeled demos at most. The instruction proposer
(DSPy's GroundedProposer) answers in ``[[ ## field ## ]]`` blocks, which the embedded model never
writes, so its adapter is a ChatAdapter that takes an unparsable reply whole; on the small model
its LM answers without the one-line stop, with room for those blocks (``max_tokens=128``).

A DSPy-program task (:func:`policyopt.integrations.dspy.dspy_task`) is compiled as it is: the
user's module, examples, metric and adapter; ``best_prompt`` is its instructions as JSON text,
and when the compiled module carries demos, ``evaluate`` scores it (demos and all) on test.
"""

from __future__ import annotations

import importlib.metadata
import math
from typing import Any

from policyopt.bench.cell import CellContext, OptimizerOutcome
from policyopt.bench.peers._common import (
    ProgramRuns,
    Stopwatch,
    check_settings,
    missing,
    peer_log,
)
from policyopt.errors import ConfigError

__all__ = ["DSPyMIPROv2", "plan", "planned_metric_calls"]

DEFAULTS: dict[str, Any] = {
    "num_candidates": 4,
    "minibatch_size": 10,
    "max_bootstrapped_demos": 4,
    "max_labeled_demos": 4,
    "num_trials": None,  # None: the most that fit in the budget
    "full_eval_steps": 5,
    "init_temperature": None,  # None: 0.9 on the small model (as policyopt's proposer), else 1.0
    "proposer_max_tokens": None,  # None: 128 on the small model, else the LM's own
}


def planned_metric_calls(
    num_trials: int,
    n_train: int,
    n_val: int,
    *,
    num_candidates: int,
    minibatch_size: int,
    max_bootstrapped_demos: int,
    max_labeled_demos: int,
    full_eval_steps: int,
) -> dict[str, int]:
    """The most metric calls MIPROv2 (DSPy 3.4) can make with these settings, by stage."""
    zero_shot = max_bootstrapped_demos == 0 and max_labeled_demos == 0
    # demo sets: zero-shot, labeled-only, then num_candidates - 2 bootstrapped ones, each a
    # BootstrapFewShot pass over the (shuffled) trainset until it has enough demos
    bootstrap_sets = 0 if zero_shot or max_bootstrapped_demos == 0 else max(0, num_candidates - 2)
    full_evals = num_trials // full_eval_steps + (1 if num_trials % full_eval_steps else 0)
    stages = {
        "bootstrap": bootstrap_sets * n_train,
        "default_program": n_val,
        "minibatch_trials": num_trials * min(minibatch_size, n_val),
        "full_evals": full_evals * n_val,
    }
    stages["total"] = sum(stages.values())
    return stages


def plan(budget: int, n_train: int, n_val: int, **settings: int) -> tuple[int, dict[str, int]]:
    """The largest ``num_trials`` whose upper bound of metric calls fits ``budget``, and it."""
    trials = 0
    while planned_metric_calls(trials + 1, n_train, n_val, **settings)["total"] <= budget:
        trials += 1
        if trials >= 10_000:
            break
    if trials == 0:
        need = planned_metric_calls(1, n_train, n_val, **settings)["total"]
        raise ConfigError(
            f"DSPy MIPROv2 cannot run one trial within {budget} rollouts with these settings "
            f"({need} needed: bootstrapping over {n_train} training examples per demo set, and "
            f"valset evaluations of {n_val}); raise the budget or use fewer examples."
        )
    return trials, planned_metric_calls(trials, n_train, n_val, **settings)


class DSPyMIPROv2:
    """``dspy.MIPROv2`` compiling the task as a DSPy program."""

    name = "dspy-mipro"

    def unavailable(self) -> str | None:
        """Why it cannot run here (``dspy`` not installed), or None."""
        return missing("dspy")

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        """Compile with a plan fitted to ``ctx.budget``; logs in ``ctx.run_dir/dspy-mipro.log``."""
        import dspy
        import optuna  # noqa: F401  (MIPROv2's; imported now so that peer_log routes its logs)
        from dspy.teleprompt import MIPROv2

        from policyopt.bench.peers._dspy import Setup, dspy_lm

        settings = check_settings(self.name, ctx.settings, DEFAULTS)
        task = ctx.task
        runs = ProgramRuns()
        setup = Setup.of(task, runs)
        n_train, n_val = len(setup.trainset), len(setup.valset)
        if not setup.labeled:
            settings["max_labeled_demos"] = 0  # nothing to label a demo with
        minibatch = min(int(settings["minibatch_size"]), n_val)
        shape = {
            "num_candidates": int(settings["num_candidates"]),
            "minibatch_size": minibatch,
            "max_bootstrapped_demos": int(settings["max_bootstrapped_demos"]),
            "max_labeled_demos": int(settings["max_labeled_demos"]),
            "full_eval_steps": int(settings["full_eval_steps"]),
        }
        if settings["num_trials"] is None:
            trials, estimate = plan(ctx.budget, n_train, n_val, **shape)
        else:
            trials = int(settings["num_trials"])
            estimate = planned_metric_calls(trials, n_train, n_val, **shape)
        temperature = settings["init_temperature"] or (0.9 if ctx.small_model else 1.0)
        proposer_settings: dict[str, Any] = {}
        max_tokens = settings["proposer_max_tokens"] or (128 if ctx.small_model else None)
        if ctx.small_model:
            proposer_settings["stop"] = None
        if max_tokens:
            proposer_settings["max_tokens"] = int(max_tokens)

        metric_calls = ProgramRuns()
        task_model, task_engine = dspy_lm(ctx.task_lm, "task", dict(task.lm_kwargs))
        prompt_model, prompt_engine = dspy_lm(
            ctx.reflection_lm, "proposer", proposer_settings, pass_through=("temperature",)
        )

        def metric(example: Any, prediction: Any, trace: Any = None) -> float:
            metric_calls.add()
            return float(setup.score(example, prediction, trace).score)

        optimizer = MIPROv2(
            metric=metric,
            prompt_model=prompt_model,
            task_model=task_model,
            auto=None,
            num_candidates=shape["num_candidates"],
            max_bootstrapped_demos=shape["max_bootstrapped_demos"],
            max_labeled_demos=shape["max_labeled_demos"],
            num_threads=max(1, ctx.n_jobs),
            seed=ctx.seed,
            init_temperature=temperature,
            verbose=False,
        )
        with (
            peer_log(ctx.run_dir, self.name),
            dspy.context(lm=task_model, adapter=setup.adapter),
            Stopwatch() as watch,
        ):
            compiled = optimizer.compile(
                setup.program,
                trainset=setup.trainset,
                valset=setup.valset,
                num_trials=trials,
                minibatch=True,
                minibatch_size=minibatch,
                minibatch_full_eval_steps=shape["full_eval_steps"],
                seed=ctx.seed,
            )
        runs.check(self.name)
        curve, searched = _curve(getattr(compiled, "trial_logs", {}) or {}, metric_calls.runs)
        score = getattr(compiled, "score", None)
        return OptimizerOutcome(
            best_prompt=setup.best_prompt(compiled),
            evaluate=setup.scorer(compiled, ctx.task_lm),
            rollouts=metric_calls.runs,
            best_val_score=None if score is None else float(score) / 100.0,
            curve=curve,
            details={
                "version": importlib.metadata.version("dspy"),
                "settings": {
                    **shape,
                    "num_trials": trials,
                    "init_temperature": temperature,
                    "proposer_lm_settings": proposer_settings,
                    "n_jobs": ctx.n_jobs,
                    "seed": ctx.seed,
                },
                "planned_metric_calls": estimate,
                "metric_calls_before_search": metric_calls.runs - searched,
                "program_runs": runs.runs,
                "failed_runs": runs.failures,
                "demos": setup.demos(compiled),
                "full_evals": len(getattr(compiled, "candidate_programs", []) or []),
                "minibatch_trials": len(getattr(compiled, "mb_candidate_programs", []) or []),
                "task_lm_calls": task_engine.calls,
                "proposer_calls": prompt_engine.calls,
                "wall_s": watch.seconds,
            },
        )


def _curve(trial_logs: dict[int, dict[str, Any]], total_calls: int) -> tuple[list[Any], int]:
    """(rollouts, best full-valset score so far) from MIPROv2's trial logs, and the metric calls
    its search made (the rest, before the search, bootstrapped demos)."""
    searched = max(
        (int(t.get("total_eval_calls_so_far", 0)) for t in trial_logs.values()), default=0
    )
    offset = total_calls - searched
    points: list[tuple[int, float]] = []
    best = -math.inf
    for _, log in sorted(trial_logs.items()):
        if "full_eval_score" not in log:
            continue
        score = float(log["full_eval_score"]) / 100.0
        if score > best:
            best = score
            points.append((offset + int(log["total_eval_calls_so_far"]), best))
    return points, searched
