"""The ``gepa`` library (gepa-ai/gepa) as a benchmark peer: ``gepa-lib``.

gepa's ``optimize`` runs over a ``GEPAAdapter`` written here: it scores a candidate with the
cell's task program (``ctx.program()``: the task's user message, lm_kwargs and metric on
``ctx.task_lm``), ``ctx.n_jobs`` rollouts in parallel, and hands gepa each example's input,
output and the metric's feedback for reflection. The reflection LM is ``ctx.reflection_lm``
passed as a callable, so every model call is counted by the harness.

Settings as ``benchmarks/gepa_vs_gepa_lib.py`` found fair against policyopt's GEPA: minibatch 3,
Pareto candidate selection, merge (at most 5), and on the tiny embedded model policyopt's
``COMPACT_TEMPLATE`` in gepa's placeholders (gepa's default meta-prompt asks for more than a
135M model can write). The budget is kept by :class:`~policyopt.bench.peers._common.GEPABudget`:
gepa's own ``max_metric_calls`` is checked only between iterations and overshoots.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from policyopt.errors import ConfigError
from policyopt.feedback import output_space
from policyopt.lm.base import LM, Completion, Messages
from policyopt.tasks.base import Task
from policyopt.types import Program, Score

__all__ = ["GEPALibrary"]

DEFAULTS: dict[str, Any] = {
    "minibatch_size": 3,
    "candidate_selection": "pareto",
    "merge": True,
    "max_merges": 5,
    "reflection_template": None,  # None: COMPACT_TEMPLATE on the small model, else gepa's own
    # "gepa": gepa's own reflective proposer; "advice": policyopt's small-model proposer (the
    # advice template, its checks, guards and re-asks) through gepa's propose_new_texts hook,
    # one proposal a reflection: the equal-preset comparison with policyopt's GEPA
    "proposer": "gepa",
}


def compact_template() -> str:
    """policyopt's COMPACT_TEMPLATE in gepa's placeholders; the side info replaces {feedback}.

    Not policyopt's small-model template (ADVICE_TEMPLATE): its ``{advice}`` is computed from
    policyopt's own records, which gepa's side info is not shaped like.
    """
    from policyopt.gepa.reflection import COMPACT_TEMPLATE

    return COMPACT_TEMPLATE.format(
        current="<curr_param>", feedback="<side_info>", retry="", length=""
    )


class ReflectionCallable:
    """gepa's reflection LM: text (or messages) in, text out, through the cell's reflection LM;
    counts cut-off and empty answers."""

    def __init__(self, lm: LM) -> None:
        self.lm = lm
        self.calls = 0
        self.truncated = 0
        self.empty = 0
        self._lock = threading.Lock()

    def __call__(self, prompt: str | Messages) -> str:
        return self.complete(prompt).text

    def complete(self, prompt: str | Messages, **kwargs: Any) -> Completion:
        """The cell's reflection LM's answer, counted (the advice proposer asks through this)."""
        answer = self.lm.complete(prompt, **kwargs)
        with self._lock:
            self.calls += 1
            self.truncated += answer.truncated
            self.empty += not answer.text.strip()
        return answer


class ProgramAdapter:
    """A ``gepa.GEPAAdapter`` over a policyopt task program, rollouts in a thread pool.

    The reflection LM sees each example as the task LM saw it (``task.render_input``), never
    its labels.
    """

    def __init__(
        self,
        task: Task,
        program: Program,
        pool: ThreadPoolExecutor,
        runs: ProgramRuns,
        proposer: AdviceProposer | None = None,
    ) -> None:
        self.task = task
        self.program = program
        self.pool = pool
        self.runs = runs
        # gepa's propose_new_texts hook; None: gepa's own reflective proposer does the proposing
        self.propose_new_texts = proposer

    def evaluate(
        self, batch: list[dict[str, Any]], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        from gepa.core.adapter import EvaluationBatch

        prompt = candidate["prompt"]
        scores: list[Score] = list(
            self.pool.map(lambda ex: self.runs.evaluate(self.program, prompt, ex), batch)
        )
        return EvaluationBatch(
            outputs=[s.output for s in scores],
            scores=[float(s.score) for s in scores],
            trajectories=list(zip(batch, scores, strict=True)) if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        records = [
            {
                "Inputs": self.task.render_input(example),
                "Generated Outputs": "" if score.output is None else str(score.output),
                "Feedback": score.feedback or f"This answer scored {score.score:g}.",
            }
            for example, score in eval_batch.trajectories
        ]
        return {name: records for name in components_to_update}


class AdviceProposer:
    """gepa's ``propose_new_texts`` hook answered by policyopt's GEPA proposer with its
    small-model preset (:data:`~policyopt.feedback.ADVICE_TEMPLATE`, the copy, label and echo
    guards, re-asks of unusable answers, the data's label set in the prompt); a component whose
    every attempt is rejected keeps its text (gepa then finds the child no better)."""

    def __init__(self, lm: Any, outputs: Sequence[str]) -> None:
        from policyopt.feedback import ADVICE_TEMPLATE
        from policyopt.gepa.config import GEPASettings
        from policyopt.gepa.proposer import Proposer
        from policyopt.state.memo import JournaledLM

        fields = GEPASettings.model_fields  # policyopt GEPA's defaults for both
        self.proposer = Proposer(
            JournaledLM(lm, journal=None, kind="reflection"),
            template=ADVICE_TEMPLATE,
            max_retries=fields["max_proposal_retries"].default,
            max_chars=fields["max_prompt_chars"].default,
            reject_copies=True,
            outputs=outputs,
        )
        self._calls = 0
        self._lock = threading.Lock()

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        with self._lock:
            self._calls += 1
            number = self._calls
        new = {}
        for name in components_to_update:
            records = [{k: str(v) for k, v in r.items()} for r in reflective_dataset[name]]
            text = self.proposer.propose(f"{number}/{name}", name, candidate[name], records)
            new[name] = candidate[name] if text is None else text
        return new


class Log:
    """gepa's logger protocol, writing to the cell's log file; counts what gepa reports."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.accepted = 0
        self.proposed = 0

    def log(self, message: str) -> None:
        text = str(message)
        self.proposed += "Proposed new text for" in text
        self.accepted += "Accepted candidate" in text
        self.stream.write(text + "\n")


class GEPALibrary:
    """The ``gepa`` library's ``optimize`` on the cell's task program."""

    name = "gepa-lib"

    def unavailable(self) -> str | None:
        """Why it cannot run here (``gepa`` not installed), or None."""
        return missing("gepa")

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        """Search within ``ctx.budget`` rollouts; logs in ``ctx.run_dir/gepa-lib.log``."""
        import gepa

        settings = check_settings(self.name, ctx.settings, DEFAULTS)
        if ctx.task.make_program is not None:
            raise ConfigError(
                f"gepa-lib runs prompt-template tasks; {ctx.task.name!r} is a program of named "
                "components (use gepa, mipro, dspy-gepa or dspy-mipro)."
            )
        if settings["proposer"] not in ("gepa", "advice"):
            raise ConfigError(
                f"gepa-lib: proposer must be 'gepa' or 'advice', not {settings['proposer']!r}."
            )
        advice = settings["proposer"] == "advice"
        template = settings["reflection_template"]
        if template is None and ctx.small_model and not advice:
            template = compact_template()
        train, val = list(ctx.task.train), list(ctx.task.val)
        budget = GEPABudget(
            ctx.budget,
            n_val=len(val),
            minibatch=int(settings["minibatch_size"]),
            merge=bool(settings["merge"]),
            max_merges=int(settings["max_merges"]),
        )
        runs = ProgramRuns()
        reflect = ReflectionCallable(ctx.reflection_lm)
        proposer = AdviceProposer(reflect, output_space(train)) if advice else None
        with (
            peer_log(ctx.run_dir, self.name) as stream,
            ThreadPoolExecutor(max_workers=max(1, ctx.n_jobs)) as pool,
            Stopwatch() as watch,
        ):
            log = Log(stream)
            optimize: Any = gepa.optimize  # our adapter and budget keeper are duck-typed
            result = optimize(
                seed_candidate={"prompt": ctx.task.seed_prompt},
                trainset=train,
                valset=val,
                adapter=ProgramAdapter(ctx.task, ctx.program(), pool, runs, proposer),
                reflection_lm=None if advice else reflect,
                reflection_prompt_template=None if advice else template,
                candidate_selection_strategy=settings["candidate_selection"],
                reflection_minibatch_size=int(settings["minibatch_size"]),
                use_merge=bool(settings["merge"]),
                max_merge_invocations=int(settings["max_merges"]),
                max_metric_calls=ctx.budget,
                stop_callbacks=[budget],
                acceptance_criterion=budget,
                callbacks=[budget],
                seed=ctx.seed,
                logger=log,
                display_progress_bar=False,
                raise_on_exception=True,
            )
        runs.check(self.name)
        best = result.best_candidate
        assert isinstance(best, dict)
        scores = list(result.val_aggregate_scores)
        return OptimizerOutcome(
            best_prompt=best["prompt"],
            rollouts=runs.runs,
            best_val_score=float(scores[result.best_idx]),
            curve=gepa_curve(scores, result.discovery_eval_counts, len(val)),
            details={
                "version": importlib.metadata.version("gepa"),
                "settings": {
                    **settings,
                    "reflection_template": (
                        "advice" if advice else "compact" if template else "gepa default"
                    ),
                    "n_jobs": ctx.n_jobs,
                    "seed": ctx.seed,
                },
                "candidates": result.num_candidates,
                "gepa_metric_calls": result.total_metric_calls,
                "val_seed": float(scores[0]),
                "proposed": log.proposed,
                "accepted": log.accepted,
                "refused_for_budget": budget.refused_full_evals,
                "unspent_at_stop": budget.unspent_at_stop,
                "failed_rollouts": runs.failures,
                "reflection_calls": reflect.calls,
                "reflection_truncated": reflect.truncated,
                "reflection_empty": reflect.empty,
                "wall_s": watch.seconds,
            },
        )
