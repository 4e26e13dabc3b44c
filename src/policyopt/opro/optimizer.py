"""OPRO: large language models as optimizers (Yang et al. 2023, arXiv 2309.03409).

The seed prompt is scored on the whole valset first (candidate 0: a run always has a result).
Then each step:

1. **Meta-prompt.** The best ``max_history`` instructions scored so far, in ascending order of
   score (``text: ...`` / ``score: ...``, scores as 0-100 integers), and ``n_exemplars``
   training examples drawn with the run's seeded RNG.
2. **Proposals.** ``proposals_per_step`` meta LM calls (in parallel), one new instruction each:
   the last fenced block of the answer, or the whole answer stripped of a ``text:`` label and
   quotes. Empty, cut-off, over-long and already-seen instructions are retried (the retry
   prompt says why), then dropped. Every answer is journaled under ``step/slot/attempt``.
3. **Scoring.** The distinct new instructions are scored together on one seeded valset
   minibatch (``minibatch_size``; ``None``: the whole valset) and join the history with that
   score. The step's best is scored on the whole valset (a new candidate) when its minibatch
   mean is at least the best candidate's mean on the same minibatch.

The result is the best full-valset candidate. A step starts only when the budget can pay for
all of it (exemplar runs, every proposal's minibatch, one full evaluation); otherwise fewer
proposals, else the run stops with ``"budget"``. Other stops: ``max_steps``, a perfect score,
``patience`` (steps without a new best), ``"stalled"`` (steps that neither pay a rollout nor
score an instruction: the meta LM keeps repeating itself), and the shared lifecycle of
:class:`~policyopt.runtime.RunContext` (time, cost, STOP file, Ctrl-C, evaluate and LM faults).

Kept from the paper: the meta-prompt's shape (ascending scored history capped at 20, 0-100
scores, exemplars drawn at random from the training set), several proposals per step, every
proposal scored and shown to later steps. Changed:

- the paper scores every proposal on the whole training set; here proposals are scored on a
  valset minibatch and only the step's best pays a full valset evaluation (the history shows the
  full score when there is one, else the minibatch mean), so a budget of rollouts buys many
  more steps;
- ``evaluate`` is a black box whose expected outputs may exist only in its feedback, so by
  default (``exemplar_feedback``) the best prompt runs on the exemplars (cached, paid from the
  budget) and the meta-prompt shows its answer, score and feedback; the paper shows the
  exemplar's question and ground-truth answer, which here are the example's own fields;
- each proposal draws its own exemplars (the paper samples one meta-prompt 8 times at
  temperature 1): the calls differ, so a cached or greedy meta LM still gives distinct
  proposals;
- the answer is read from a fenced block (the paper asks for square brackets), as everywhere
  in policyopt; the paper's instruction position (``<INS>`` before the question) is the
  program's business here.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from policyopt.errors import ConfigError
from policyopt.events import (
    CandidateEvaluated,
    Listener,
)
from policyopt.lm.base import resolve_lm
from policyopt.opro.config import RESUMABLE_CHANGES, OPROSettings, estimate
from policyopt.opro.meta import (
    ARTIFACT_TEMPLATE,
    DEFAULT_TEMPLATE,
    REPEATED,
    RETRY,
    Exemplar,
    Scored,
    normalize,
    read_answer,
    render_exemplars,
    render_history,
    render_meta_prompt,
)
from policyopt.prompts import PromptShape
from policyopt.proposals import (
    DUPLICATE,
    FAILED,
    Guard,
    ProposalLoop,
    copy_guard,
    echo_guard,
    parse_complete,
    repeat_guard,
)
from policyopt.registry import with_settings_args
from policyopt.rollout.engine import DEFAULT_TIMEOUT_S
from policyopt.runtime import (
    RunContext,
    _one_lm,
    call_all,
    proposal_workers,
    settings_or_error,
)
from policyopt.steps import StepLoop
from policyopt.types import Candidate, ExampleId, OptimizationResult, Program, PromptValue

__all__ = ["OPRO"]

logger = logging.getLogger("policyopt")


@with_settings_args(OPROSettings)
class OPRO:
    """``OPRO(meta_lm=..., max_rollouts=...).optimize(program, trainset, valset)``.

    ``meta_lm`` (alias ``lm``) is a litellm model string, a :class:`policyopt.LM`, or any
    callable ``str -> str``: the optimizer LLM that reads the meta-prompt and writes new
    instructions. The program's prompt must be a ``str`` (one instruction) or chat messages
    (OPRO rewrites the system message, else the first; the others stay). ``listeners``
    receive every event of the run. Every other parameter is a setting, validated by
    :class:`~policyopt.opro.config.OPROSettings` (their docs below are its fields').
    """

    name = "opro"

    def __init__(
        self,
        *,
        meta_lm: Any = None,
        lm: Any = None,
        max_rollouts: int,
        listeners: Sequence[Listener] = (),
        seed: int = 0,
        n_jobs: int = 4,
        backend: str | None = None,
        max_time_s: float | None = None,
        max_cost_usd: float | None = None,
        max_lm_calls: int | None = None,
        max_lm_tokens: int | None = None,
        max_errors: int | None = None,
        max_error_rate: float | None = 0.5,
        error_window: int = 20,
        quarantine_after: int | None = 3,
        strict: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        score_range: tuple[float, float] | None = (0.0, 1.0),
        failure_score: float = 0.0,
        progress: bool = True,
        run_dir: str | None = None,
        accept_changed: tuple[str, ...] = (),
        retry_failures: bool = False,
        proposals_per_step: int = 4,
        max_history: int = 20,
        n_exemplars: int = 3,
        exemplar_feedback: bool = True,
        minibatch_size: int | None = 10,
        max_steps: int | None = None,
        patience: int | None = None,
        perfect_score: float | None = None,
        stop_at_perfect: bool = True,
        max_proposal_retries: int = 2,
        max_prompt_chars: int = 4000,
        max_exemplar_chars: int = 300,
        reject_copies: bool = True,
        meta_template: str = DEFAULT_TEMPLATE,
    ) -> None:
        values = {k: v for k, v in locals().items() if k in OPROSettings.model_fields}
        self.meta_lm = resolve_lm(_one_lm(meta_lm, lm, "meta_lm"), name="meta_lm (lm)")
        self.listeners = list(listeners)
        self.settings = settings_or_error(OPROSettings, values, "OPRO")

    def optimize(
        self, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None = None
    ) -> OptimizationResult:
        """Run OPRO and return the best instruction found on the full valset."""
        if not isinstance(program, Program):
            raise ConfigError(
                f"OPRO.optimize expects a policyopt.Program; got {type(program).__name__}. "
                "Wrap your prompt and evaluate: Program(prompt, evaluate)."
            )
        if isinstance(program.prompt, dict):
            raise ConfigError(
                "OPRO optimizes one instruction: the program's prompt must be a str or chat "
                f"messages; got a dict of {len(program.prompt)} components (use GEPA or MIPRO "
                "for those)."
            )
        return _Run(self, program, trainset, valset).run()


class _Run:
    """One optimize() call: the state that lives for the run and the loop over it."""

    def __init__(
        self, opro: OPRO, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None
    ) -> None:
        s = self.s = opro.settings
        # a chat prompt: OPRO rewrites its instruction-bearing message, the rest stays
        self.shape = PromptShape.of(program.prompt)
        self.fixed = self.shape.components(program.prompt)
        self.seed_prompt = self.fixed[self.shape.instruction]
        self.ctx = RunContext(
            optimizer="opro",
            settings=s,
            resumable=RESUMABLE_CHANGES,
            identity={"seed_prompt": program.prompt},
            program=program,
            trainset=trainset,
            valset=valset,
            listeners=opro.listeners,
        )
        self.engine = self.ctx.engine
        rng_exemplars, rng_batch = (
            random.Random(int(q.generate_state(1)[0]))
            for q in np.random.SeedSequence(s.seed).spawn(2)
        )
        self.rng_exemplars, self.rng_batch = rng_exemplars, rng_batch
        self.meta = self.ctx.journaled_lm(opro.meta_lm, kind="meta", rollouts_per_call=1)
        self.proposals = ProposalLoop(
            self.meta, max_retries=s.max_proposal_retries, max_chars=s.max_prompt_chars
        )
        self.history: list[Scored] = []  # every instruction scored, in the order scored
        self.log: list[dict[str, Any]] = []  # the same, for details: step, slot, score, ...
        self.seen: set[str] = set()
        self.loop = StepLoop(
            self.ctx,
            usage=lambda: self.meta.usage,
            state=self._state,
            end=lambda: (
                "max_steps" if s.max_steps is not None and self.step >= s.max_steps else None
            ),
        )
        self.counts = {"proposed": 0, "rejected": 0, "failed": 0, "scored": 0, "promoted": 0}

    # ------------------------------------------------------------------ helpers
    @property
    def candidates(self) -> list[Candidate]:
        """The run's candidates (the kit's candidate book)."""
        return self.ctx.book.candidates

    @property
    def step(self) -> int:
        """Steps started so far (the step loop's count)."""
        return self.loop.steps

    @property
    def best(self) -> Candidate:
        """The best full-valset candidate (the earliest among equals)."""
        return self.ctx.book.best

    def wrap(self, text: str) -> PromptValue:
        """The prompt ``evaluate`` receives for an instruction, in the seed's shape."""
        return self.shape.shaped({**self.fixed, self.shape.instruction: text})

    def _record(self, text: str, score: float, full: bool, **where: Any) -> None:
        self.history.append(Scored(text, score, full, len(self.history)))
        self.seen.add(normalize(text))
        self.log.append({"text": text, "score": score, "full_valset": full, **where})

    # ------------------------------------------------------------------ loop
    def run(self) -> OptimizationResult:
        s, ctx = self.s, self.ctx
        plan = estimate(s, len(ctx.train_ids), len(ctx.val_ids))
        useful = len(ctx.val_ids) + 3 * plan["rollouts_per_step_max"]
        return ctx.execute(
            optimizer="opro",
            seed_prompt=self.wrap(self.seed_prompt),
            settings=s.model_dump(exclude={"meta_template"}),
            estimate=plan,
            body=self._body,
            has_result=lambda: bool(self.candidates),
            finish=self._finish,
            budget_hint=f" A useful run needs at least {useful}.",
        )

    def _body(self) -> str:
        if self.ctx.book.add(self.wrap(self.seed_prompt), parents=[], origin="seed") is None:
            raise ConfigError("the budget ran out while scoring the seed prompt")
        self._record(self.seed_prompt, self.candidates[0].val_score, True, step=0, candidate=0)
        return self.loop.run(self._step, made=lambda: len(self.history))

    def _step(self) -> str | None:
        """One step: meta-prompts, proposals, minibatch scores, maybe a promotion."""
        s, ctx = self.s, self.ctx
        incumbent = self.best
        n_val = len(ctx.val_ids)
        size = n_val if s.minibatch_size is None else min(s.minibatch_size, n_val)
        # every random draw happens before the budget check, so a resumed run draws the same
        batch = sorted(self.rng_batch.sample(list(ctx.val_ids), size))
        n_ex = min(s.n_exemplars, len(ctx.train_ids))
        draws = [
            self.rng_exemplars.sample(list(ctx.train_ids), n_ex)
            for _ in range(s.proposals_per_step)
        ]
        while draws:  # never start what the budget cannot finish; fewer proposals first
            feedback = [(incumbent.prompt, i) for i in self._feedback_ids(draws)]
            # exemplar runs, every proposal on the minibatch, then one full evaluation
            if ctx.affordable(feedback, ctx.train_split, extra=len(draws) * size + n_val - size):
                break
            draws.pop()
        if not draws:
            return "budget"
        exemplars, shown = self._exemplars(incumbent, draws)
        history = render_history(self.history, s.max_history, s.score_range)
        texts = self._propose(history, exemplars, shown)
        if not texts:
            return None
        return self._score(incumbent, batch, texts)

    def _feedback_ids(self, draws: list[list[ExampleId]]) -> list[ExampleId]:
        if not self.s.exemplar_feedback:
            return []
        return sorted({i for draw in draws for i in draw})

    def _exemplars(
        self, incumbent: Candidate, draws: list[list[ExampleId]]
    ) -> tuple[list[str], list[list[dict[str, Any]]]]:
        """Each proposal's exemplars, rendered (with feedback, the best prompt's runs on them),
        and as records for the copy guard (:func:`policyopt.guards.find_copy`)."""
        s, ctx = self.s, self.ctx
        runs: dict[ExampleId, Any] = {}
        ids = self._feedback_ids(draws)
        if ids:
            result = self.engine.run(
                [(incumbent.prompt, i) for i in ids], split=ctx.train_split, label="exemplars"
            )
            runs = dict(zip(ids, result.rollouts, strict=True))
        rendered: list[str] = []
        shown: list[list[dict[str, Any]]] = []
        for draw in draws:
            items = []
            for i in draw:
                example = self.engine.example(ctx.train_split, i)
                run = runs.get(i)
                if run is None:
                    items.append(Exemplar(example))
                    continue
                answer = run.error if run.failed else run.score.output
                items.append(
                    Exemplar(
                        example,
                        answer="" if answer is None else str(answer),
                        score=run.value,
                        feedback=run.score.feedback,
                    )
                )
            rendered.append(render_exemplars(items, s.max_exemplar_chars, s.score_range))
            shown.append([_guard_record(item.example, item.feedback) for item in items])
        return rendered, shown

    def _propose(
        self, history: str, exemplars: list[str], shown: list[list[dict[str, Any]]]
    ) -> list[tuple[int, str]]:
        """Ask the meta LM once per slot (in parallel); ``(slot, text)`` of new distinct ones.

        With ``reject_copies``, a text that copies one of the slot's exemplars (``shown``) is
        rejected as ``copies_example`` and asked again."""

        def one(slot: int) -> str | object | None:
            guards: list[Guard] = [repeat_guard(self.seen, REPEATED)]
            if self.s.reject_copies:
                guards.append(copy_guard(history, shown[slot]))
            guards.append(echo_guard(self.s.meta_template, history, also=(RETRY,)))
            return self.proposals.propose(
                f"{self.step}/{slot}",
                lambda _, retry: render_meta_prompt(
                    self.s.meta_template, history, exemplars[slot], retry, self.proposals.length
                ),
                # a whole artifact: its last complete block, whatever the model wrote after it
                parse=parse_complete if self.s.meta_template == ARTIFACT_TEMPLATE else read_answer,
                guards=guards,
            )

        slots = range(len(exemplars))
        attempts = self.s.max_proposal_retries + 1
        workers = proposal_workers(self.meta, len(exemplars), attempts, self.s.n_jobs)
        # a run-stopping LM failure (LMUnavailable) is raised once every sibling finished
        with self.proposals.batch():  # the loop's re-ask rule changes only between batches
            outcomes = call_all([partial(one, slot) for slot in slots], workers)
        texts, seen = [], set()
        for slot, text in zip(slots, outcomes, strict=True):
            if text is FAILED:
                self.counts["failed"] += 1
            elif not isinstance(text, str):
                self.counts["rejected"] += 1
            elif normalize(text) in seen:  # two slots proposed the same: keep the first
                self.counts["rejected"] += 1
                self.proposals.reject(DUPLICATE, f"{self.step}/{slot}", REPEATED)
            else:
                seen.add(normalize(text))
                texts.append((slot, text))
        self.counts["proposed"] += len(texts)
        return texts

    def _score(
        self, incumbent: Candidate, batch: list[ExampleId], texts: list[tuple[int, str]]
    ) -> str | None:
        """Score the proposals on the minibatch; promote the step's best when it holds up."""
        ctx, engine = self.ctx, self.engine
        requests = [(self.wrap(text), i) for _, text in texts for i in batch]
        result = engine.run(requests, split=ctx.val_split, label="proposals")
        rollouts = iter(result.rollouts)
        reference = math.fsum(incumbent.val_scores.get(i, 0.0) for i in batch) / len(batch)
        scored = []
        for slot, text in texts:
            runs = [next(rollouts) for _ in batch]
            if any(r is None for r in runs):
                continue  # cut by the budget (not expected: the step was planned to fit)
            mean = math.fsum(r.value for r in runs if r is not None) / len(batch)
            self._record(text, mean, len(batch) == len(ctx.val_ids), step=self.step, slot=slot)
            self.counts["scored"] += 1
            scored.append((mean, -slot, text, len(self.log) - 1))
        if not scored:
            return None if result.complete else "budget"
        top = max(scored)  # best mean; among equals, the lowest slot
        promote = top[0] >= reference - 1e-12
        for entry in scored:
            ctx.events.emit(
                CandidateEvaluated(
                    candidate=-1,
                    split="minibatch",
                    score=entry[0],
                    n_examples=len(batch),
                    accepted=promote and entry is top,
                )
            )
        if not promote:
            return None
        _, _, text, where = top
        candidate = ctx.book.add(self.wrap(text), parents=[incumbent.index], origin="opro")
        if candidate is None:
            return "budget"
        self.counts["promoted"] += 1
        full = candidate.val_score
        self.history[where] = Scored(text, full, True, where)  # history and log share indices
        self.log[where].update(score=full, full_valset=True, candidate=candidate.index)
        return None

    # ------------------------------------------------------------------ end
    def _state(self) -> dict[str, Any]:
        """OPRO's part of ``state.json``: the scored history, the counts and the RNGs."""
        return {
            "history": self.log,
            "counts": self.counts,
            "rng": {
                "exemplars": self.rng_exemplars.getstate(),
                "minibatches": self.rng_batch.getstate(),
            },
        }

    def _finish(self, reason: str) -> OptimizationResult:
        return self.loop.finish(
            reason,
            best=self.best,
            role="meta",
            details={
                "steps": self.step,
                "proposals_made": self.counts["proposed"],
                "proposals_rejected": self.counts["rejected"],
                "proposals_failed": self.counts["failed"],
                "proposals_scored": self.counts["scored"],
                "promoted": self.counts["promoted"],
                "rejections": dict(self.proposals.rejections),
                "reasks_skipped": dict(self.proposals.reasks_skipped),
                "history": self.log,
            },
        )


def _guard_record(example: Any, feedback: str | None) -> dict[str, Any]:
    """An exemplar as the copy guard reads it: its fields (``id`` dropped) and its feedback."""
    fields = (
        {k: v for k, v in example.items() if k != "id"} if isinstance(example, Mapping) else example
    )
    return {"Input": fields, "Feedback": feedback or ""}
