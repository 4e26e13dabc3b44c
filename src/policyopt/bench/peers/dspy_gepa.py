"""DSPy's GEPA (``dspy.GEPA``, which runs the ``gepa`` library) as a benchmark peer: ``dspy-gepa``.

The task is a one-predictor DSPy program whose adapter renders exactly the task's user message
(:func:`~policyopt.bench.peers._dspy.task_program`), so the instruction DSPy's GEPA evolves is a
policyopt prompt and ``best_prompt`` is that instruction, scored by the harness with the task's
own program. The task model and the reflection model are DSPy LMs over ``ctx.task_lm`` and
``ctx.reflection_lm``. The metric is the task's, its feedback GEPA's textual feedback.

DSPy's GEPA keeps its own reflection meta-prompt (it refuses ``reflection_prompt_template``). On
the tiny embedded model two things change so that it can propose at all: its reflection LM
answers without the one-line stop and with room for a paragraph (``stop=None, max_tokens=128``),
and its instruction proposer (DSPy's own ``InstructionProposer``, same prompt) reads the answer
with a lenient ChatAdapter instead of its JSONAdapter: the 135M model never writes JSON, and
every proposal failed to parse. The budget is kept as for ``gepa-lib`` by
:class:`~policyopt.bench.peers._common.GEPABudget`, passed through ``gepa_kwargs``.

A DSPy-program task (:func:`policyopt.integrations.dspy.dspy_task`) is compiled as it is: the
user's module, examples, metric (asked for each predictor's feedback under the user's predictor
names) and adapter; ``best_prompt`` is its instructions as JSON text, which the task's program
takes, so the harness scores it with the same program as policyopt's optimizers.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from policyopt.bench.cell import CellContext, OptimizerOutcome
from policyopt.bench.peers._common import (
    GEPABudget,
    ProgramRuns,
    Stopwatch,
    check_settings,
    gepa_curve,
    missing,
    peer_log,
)

__all__ = ["DSPyGEPA"]

DEFAULTS: dict[str, Any] = {
    "minibatch_size": 3,
    "candidate_selection": "pareto",
    "merge": True,
    "max_merges": 5,
    "reflection_max_tokens": None,  # None: 128 on the small model, else the LM's own
}


class DSPyGEPA:
    """``dspy.GEPA`` compiling the task as a DSPy program."""

    name = "dspy-gepa"

    def unavailable(self) -> str | None:
        """Why it cannot run here (``dspy`` or ``gepa`` not installed), or None."""
        return missing("dspy") or missing("gepa")

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        """Search within ``ctx.budget`` rollouts; logs in ``ctx.run_dir/dspy-gepa.log``."""
        import dspy

        from policyopt.bench.peers._dspy import Setup, dspy_lm, lenient_chat_adapter

        settings = check_settings(self.name, ctx.settings, DEFAULTS)
        task = ctx.task
        runs = ProgramRuns()
        setup = Setup.of(task, runs)
        budget = GEPABudget(
            ctx.budget,
            n_val=len(setup.valset),
            minibatch=int(settings["minibatch_size"]),
            merge=bool(settings["merge"]),
            max_merges=int(settings["max_merges"]),
        )
        scored = ProgramRuns()  # metric calls that score a run (not feedback look-ups)
        reflection_settings: dict[str, Any] = {}
        max_tokens = settings["reflection_max_tokens"] or (128 if ctx.small_model else None)
        if ctx.small_model:
            reflection_settings["stop"] = None
        if max_tokens:
            reflection_settings["max_tokens"] = int(max_tokens)
        task_model, task_engine = dspy_lm(ctx.task_lm, "task", dict(task.lm_kwargs))
        reflection_model, reflection_engine = dspy_lm(
            ctx.reflection_lm, "reflection", reflection_settings, pass_through=("temperature",)
        )

        def metric(
            gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
        ) -> Any:
            if pred_name is None:
                scored.add()
            score = setup.score(gold, pred, trace, pred_name, pred_trace)
            return dspy.Prediction(score=float(score.score), feedback=score.feedback)

        proposer: dict[str, Any] = {}
        if ctx.small_model:
            from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer

            proposer["instruction_proposer"] = InstructionProposer(adapter=lenient_chat_adapter())
        optimizer = dspy.GEPA(
            metric=metric,
            max_metric_calls=ctx.budget,
            reflection_minibatch_size=int(settings["minibatch_size"]),
            candidate_selection_strategy=settings["candidate_selection"],
            reflection_lm=reflection_model,
            use_merge=bool(settings["merge"]),
            max_merge_invocations=int(settings["max_merges"]),
            num_threads=max(1, ctx.n_jobs),
            track_stats=True,
            seed=ctx.seed,
            **proposer,
            gepa_kwargs={
                "stop_callbacks": [budget],
                "acceptance_criterion": budget,
                "callbacks": [budget],
            },
        )
        with (
            peer_log(ctx.run_dir, self.name),
            dspy.context(lm=task_model, adapter=setup.adapter),
            Stopwatch() as watch,
        ):
            compiled = optimizer.compile(
                setup.program, trainset=setup.trainset, valset=setup.valset
            )
        runs.check(self.name)
        result = compiled.detailed_results
        scores = [float(s) for s in result.val_aggregate_scores]
        return OptimizerOutcome(
            best_prompt=setup.best_prompt(compiled),
            evaluate=setup.scorer(compiled, ctx.task_lm),
            rollouts=runs.runs,
            best_val_score=scores[result.best_idx],
            curve=gepa_curve(scores, result.discovery_eval_counts, len(setup.valset)),
            details={
                "version": importlib.metadata.version("dspy"),
                "gepa_version": importlib.metadata.version("gepa"),
                "settings": {
                    **settings,
                    "reflection_lm_settings": reflection_settings,
                    "proposer_adapter": "lenient chat" if ctx.small_model else "DSPy default",
                    "n_jobs": ctx.n_jobs,
                    "seed": ctx.seed,
                },
                "candidates": len(result.candidates),
                "gepa_metric_calls": result.total_metric_calls,
                "scoring_metric_calls": scored.runs,
                "val_seed": scores[0],
                "refused_for_budget": budget.refused_full_evals,
                "unspent_at_stop": budget.unspent_at_stop,
                "failed_rollouts": runs.failures,
                "task_lm_calls": task_engine.calls,
                "reflection_calls": reflection_engine.calls,
                "wall_s": watch.seconds,
            },
        )
