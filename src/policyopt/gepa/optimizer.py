"""GEPA: reflective prompt evolution over a Pareto population (arXiv 2507.19457).

Each iteration picks parents from the Pareto front, runs them on a training minibatch, asks the
reflection LM to diagnose the failures from the feedback and rewrite one component, and keeps a
child that beats its parent on the same minibatch; kept children are scored on the valset and
join the front. Merges combine lineages that improved different components.

Several children are proposed per iteration and evaluated together, so ``n_jobs`` stays busy. The
budget is hard (a step that cannot finish is not started). Every rollout and every reflection
answer is journaled; a resumed run replays them and ends where an uninterrupted one would.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from typing import Any, Literal

import numpy as np

from policyopt.book import NewCandidate
from policyopt.errors import ConfigError
from policyopt.events import CandidateEvaluated, Listener
from policyopt.feedback import output_space
from policyopt.gepa import strategies
from policyopt.gepa.budget import gepa_estimate
from policyopt.gepa.config import RESUMABLE_CHANGES, GEPASettings
from policyopt.gepa.economy import batches_samples, prefetch, sample_seed, widen
from policyopt.gepa.finish import finish, state
from policyopt.gepa.merge import merge_step
from policyopt.gepa.proposer import Proposer
from policyopt.gepa.reflection import DEFAULT_TEMPLATE, make_records
from policyopt.gepa.state import Population
from policyopt.gepa.strategies import (
    AcceptanceCriterion,
    BatchSamplerFactory,
    CandidateSelector,
    ComponentSelector,
    MergePairing,
    ReflectionProposer,
)
from policyopt.lm.base import resolve_lm
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
from policyopt.types import LMUsage, OptimizationResult, Program

__all__ = ["GEPA", "estimate"]

logger = logging.getLogger("policyopt")

#: GEPA's limit for the kit's stall rule (iterations in a row that pay no rollout and add no
#: candidate): an iteration asks one to four reflections (``proposals_per_iteration``), an OPRO
#: step four proposals, so GEPA waits more iterations than the kit's ``STALL_LIMIT`` steps
_STALL_ITERATIONS = 25


def estimate(
    settings: GEPASettings,
    n_val: int,
    n_components: int,
    n_train: int | None = None,
    batched: bool = True,
) -> dict[str, Any]:
    """What the settings imply: rollouts, iterations and reflection calls (a forecast with its
    range; see :mod:`policyopt.gepa.budget`)."""
    return gepa_estimate(
        settings, n_train=n_train, n_val=n_val, n_components=n_components, batched=batched
    )


@with_settings_args(GEPASettings)
class GEPA:
    """``GEPA(reflection_lm=..., max_rollouts=...).optimize(program, trainset, valset)``.

    ``reflection_lm`` (alias ``lm``) is a litellm model string, a :class:`policyopt.LM`, or any
    callable ``str -> str``. ``listeners`` receive every event of the run (see
    :mod:`policyopt.events`). Every other parameter is a setting, validated by
    :class:`~policyopt.gepa.config.GEPASettings` (their docs below are its fields').

    Strategy settings take a built-in's name or your own object (see
    :mod:`policyopt.gepa.strategies`).
    """

    name = "gepa"

    def __init__(
        self,
        *,
        reflection_lm: Any = None,
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
        minibatch_size: int = 3,
        merge: bool = True,
        max_merges: int = 5,
        merge_subsample_size: int = 5,
        proposals_per_iteration: int | None = None,
        proposals_per_reflection: int = 1,
        max_accepted_per_iteration: int = 1,
        candidate_selection: Literal["pareto", "current_best", "epsilon_greedy"]
        | CandidateSelector = "pareto",
        epsilon: float = 0.1,
        component_selection: Literal["round_robin", "all"] | ComponentSelector = "round_robin",
        minibatch_sampler: Literal["epoch"] | BatchSamplerFactory = "epoch",
        acceptance: Literal["improvement", "non_decreasing"] | AcceptanceCriterion = "improvement",
        merge_pairing: Literal["common_ancestor"] | MergePairing = "common_ancestor",
        proposer: Literal["reflection"] | ReflectionProposer = "reflection",
        acceptance_margin: float = 0.0,
        tie_tolerance: float = 1e-06,
        skip_perfect: bool = True,
        perfect_score: float | None = None,
        stop_at_perfect: bool = True,
        patience: int | None = None,
        max_proposal_retries: int = 2,
        max_prompt_chars: int = 20000,
        max_record_chars: int = 1500,
        reject_copies: bool = True,
        final_choice: Literal["mean", "lower_bound"] = "mean",
        final_z: float = 1.0,
        reflection_template: str = DEFAULT_TEMPLATE,
        min_rollouts_per_call: float | None = None,
    ) -> None:
        values = {k: v for k, v in locals().items() if k in GEPASettings.model_fields}
        self.reflection_lm = resolve_lm(
            _one_lm(reflection_lm, lm, "reflection_lm"), name="reflection_lm (lm)"
        )
        self.listeners = list(listeners)
        self.settings = settings_or_error(GEPASettings, values, "GEPA")

    def optimize(
        self, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None = None
    ) -> OptimizationResult:
        """Run GEPA and return the best prompt found, with the whole population."""
        if not isinstance(program, Program):
            raise ConfigError(
                f"GEPA.optimize expects a policyopt.Program; got {type(program).__name__}. "
                "Wrap your prompt and evaluate: Program(prompt, evaluate)."
            )
        return _Run(self, program, trainset, valset).run()


class _Run:
    """One optimize() call: the state that lives for the run and the loop over it."""

    def __init__(
        self, gepa: GEPA, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None
    ) -> None:
        s = self.s = gepa.settings
        self.gepa = gepa
        self.k = s.proposals()
        self.ctx = RunContext(
            optimizer="gepa",
            settings=s,
            resumable=RESUMABLE_CHANGES,
            identity={"proposals_per_iteration": self.k, "seed_prompt": program.prompt},
            program=program,
            trainset=trainset,
            valset=valset,
            listeners=gepa.listeners,
        )
        # the candidates live in the kit's book; the population keeps what is GEPA's own
        self.pop = Population.of(self.ctx.book, program.prompt, s.tie_tolerance)
        self.seed = self.pop.shape.components(program.prompt)
        self.events, self.engine, self.rundir = self.ctx.events, self.ctx.engine, self.ctx.rundir
        self.train_split, self.train_ids = self.ctx.train_split, self.ctx.train_ids
        self.val_split, self.val_ids = self.ctx.val_split, self.ctx.val_ids
        seeds = np.random.SeedSequence(s.seed).spawn(3)
        self.rng_parent, self.rng_sampler, self.rng_merge = (
            random.Random(int(q.generate_state(1)[0])) for q in seeds
        )
        # the strategies: built-ins by name, or the user's own objects
        self.selector: CandidateSelector = strategies.resolve(
            "candidate_selection", s.candidate_selection, s
        )
        self.components: ComponentSelector = strategies.resolve(
            "component_selection", s.component_selection, s
        )
        make_sampler = strategies.resolve("minibatch_sampler", s.minibatch_sampler, s)
        self.sampler = make_sampler(self.train_ids, s.minibatch_size, self.rng_sampler)
        self.acceptance: AcceptanceCriterion = strategies.resolve("acceptance", s.acceptance, s)
        self.pairing: MergePairing = strategies.resolve("merge_pairing", s.merge_pairing, s)
        self.proposer: Any = strategies.resolve("proposer", s.proposer, s) or Proposer(
            self.ctx.journaled_lm(
                gepa.reflection_lm,
                kind="proposal",
                rollouts_per_call=min(s.minibatch_size, len(self.train_ids)),
            ),
            template=s.reflection_template,
            max_retries=s.max_proposal_retries,
            max_chars=s.max_prompt_chars,
            reject_copies=s.reject_copies,
            outputs=output_space(
                [self.engine.example(self.train_split, i) for i in self.train_ids]
            ),
        )
        resumable = all(strategies.resumable(getattr(s, name)) for name in strategies.NAMES)
        self.ctx.strategies_resumable = resumable
        if self.rundir is not None and not resumable:
            logger.warning(
                "a custom GEPA strategy declares resumable=False: resuming this run_dir will "
                "replay rollouts from the journal but may take other decisions"
            )
        # the kit's step loop: its stop rules, stall and no-new-best counts, snapshot and result
        self.loop = StepLoop(
            self.ctx,
            usage=self.usage,
            state=partial(state, self),
            stall_limit=_STALL_ITERATIONS,
        )
        self.counts = {
            "proposed": 0,
            "accepted": 0,
            "rejected": 0,
            "skipped_perfect": 0,
            "proposal_failed": 0,
            "raced_out": 0,
            "merges_tried": 0,
            "merges_accepted": 0,
            "widened": 0,
        }
        self.samples = s.proposals_per_reflection  # this iteration's (fewer near the end)
        self.tried: set[tuple[int, str]] = set()  # (parent, child key) that lost its minibatch
        self.merges_due = 0
        self.merge_blocked_at = -1
        self.tried_merges: set[tuple[int, int, int]] = set()

    @property
    def iteration(self) -> int:
        """Iterations started so far (the step loop's count)."""
        return self.loop.steps

    def usage(self) -> LMUsage:
        """The reflection LM's usage so far (none for a user's proposer that keeps no count)."""
        return getattr(self.proposer, "usage", None) or LMUsage()

    # ------------------------------------------------------------------ loop
    def run(self) -> OptimizationResult:
        s = self.s
        return self.ctx.execute(
            optimizer="gepa",
            seed_prompt=self.pop.shaped(self.seed),
            settings=s.model_dump(exclude={"reflection_template"}),
            estimate=estimate(
                s,
                len(self.val_ids),
                len(self.pop.components),
                len(self.train_ids),
                batched=batches_samples(self.proposer),
            ),
            body=self._body,
            has_result=lambda: bool(self.ctx.book),
            finish=partial(finish, self),
            budget_hint=(
                f" A useful run needs at least {len(self.val_ids) + 2 * s.minibatch_size * 5}."
            ),
        )

    def _body(self) -> str:
        if self._admit([NewCandidate(self.seed)]):
            raise ConfigError("the budget ran out while scoring the seed prompt")
        return self.loop.run(self._iterate, made=lambda: len(self.ctx.book))

    def _iterate(self) -> str | None:
        """One iteration: maybe a merge, then the reflective proposals. A stop reason or None."""
        if self.s.merge and self.merges_due > 0 and self.merge_blocked_at != len(self.pop.prompts):
            outcome = merge_step(self)
            if outcome:
                return outcome
        return self._reflect()

    # ------------------------------------------------------------------ reflective step
    def _reflect(self) -> str | None:
        pop, s, engine = self.pop, self.s, self.engine
        agg = pop.aggregate()
        slots = []
        wide = widen(self)
        for _ in range(self.k):
            parent = self.selector.select(pop.front, agg, self.rng_parent)
            batch = self.sampler.next()
            for _ in range(2 * wide - 2):  # a minibatch may overlap the last (a new epoch)
                if len(batch) >= wide * s.minibatch_size:
                    break
                batch += [i for i in self.sampler.next() if i not in batch]
            slots.append((parent, batch))
        # never start what the budget cannot finish: parents (uncached) plus every child; fewer
        # slots first, then (a tiny budget) fewer samples for the last slot, but only as many as
        # leave room to score a winner on the valset: a child that cannot be admitted is waste
        self.samples = s.proposals_per_reflection
        while slots:
            requests = [(pop.shaped(pop.prompts[p]), i) for p, batch in slots for i in batch]
            n_children = sum(len(batch) for _, batch in slots) * self.samples
            reserve = len(self.val_ids) if self.samples < s.proposals_per_reflection else 0
            if self.ctx.affordable(requests, self.train_split, extra=n_children + reserve):
                break
            if len(slots) == 1 and self.samples > 1:
                self.samples -= 1
                continue
            slots.pop()
        if not slots:
            return "budget"
        result = engine.run(requests, split=self.train_split, label="parents")
        rollouts = iter(result.rollouts)
        parent_runs = [[next(rollouts) for _ in batch] for _, batch in slots]

        jobs = []
        for slot, ((parent, batch), runs) in enumerate(zip(slots, parent_runs, strict=True)):
            if s.skip_perfect and all(r is not None and r.value >= s.perfect() for r in runs):
                self.counts["skipped_perfect"] += 1
                continue
            names = self.components.select(pop.pointers[parent], list(pop.components))
            pop.pointers[parent] += 1
            rows = [  # the reflection sees one minibatch; a widened gate judges on them all
                (engine.example(self.train_split, i), r.score.output, r.value, r.score.feedback)
                for i, r in list(zip(batch, runs, strict=True))[: s.minibatch_size]
                if r is not None
            ]
            records = make_records(rows, max_chars=s.max_record_chars)
            jobs.append((slot, parent, batch, runs, names, records))
        children = self._propose(jobs)
        return self._evaluate_children(children)

    def _propose(self, jobs: list[Any]) -> list[Any]:
        """Ask the reflection LM for every job in parallel; keep new, valid children."""

        # a user's proposer may not take ``sample``: it tells samples apart by their keys
        takes_sample = "sample" in inspect.signature(self.proposer.propose).parameters

        def one(job: Any, sample: int) -> dict[str, str] | None:
            slot, parent, _, _, names, records = job
            prompt = dict(self.pop.prompts[parent])
            # with several samples, every call of the run draws on its own seed (two slots or two
            # iterations with the same reflection prompt would otherwise repeat each other), and
            # the run's seed moves them all: another seed, other samples
            draw = sample_seed(self, slot, sample)
            for name in names:
                key = f"{self.iteration}/{slot}/{name}" + (f"/s{sample}" if sample else "")
                extra = {"sample": draw} if draw and takes_sample else {}
                text = self.proposer.propose(key, name, prompt[name], records, **extra)
                if text is None:
                    return None
                prompt[name] = text
            return prompt

        lm = getattr(self.proposer, "lm", None)
        components = max((len(job[4]) for job in jobs), default=1)
        if takes_sample and self.samples > 1 and hasattr(self.proposer, "prefetch"):
            # the first attempt of a reflection's samples in one call (the API's ``n``)
            workers = proposal_workers(lm, len(jobs), components, self.s.n_jobs)
            call_all([partial(prefetch, self, job) for job in jobs], workers)
        tasks = [(job, n) for job in jobs for n in range(self.samples)]
        attempts = components * (self.s.max_proposal_retries + 1)
        workers = proposal_workers(lm, len(tasks), attempts, self.s.n_jobs)
        # LM failures were counted (and skipped) by the proposer; a run-stopping one
        # (LMUnavailable) is raised here once every sibling has finished; Ctrl-C does not wait
        # the loop's re-ask rule changes only between batches (any proposer without one: none)
        with getattr(self.proposer, "batch", nullcontext)():
            outcomes = call_all([partial(one, job, n) for job, n in tasks], workers)
        children, seen = [], set(self.pop.keys)
        for (job, _), prompt in zip(tasks, outcomes, strict=True):
            if prompt is None:
                self.counts["proposal_failed"] += 1
                continue
            key = self.pop.key(prompt)
            if key in seen or (job[1], key) in self.tried:
                # already in the population, proposed twice this iteration, or already lost
                # against this parent: a small model repeats itself, and a retry costs rollouts
                continue
            seen.add(key)
            children.append((*job, prompt))
        return children

    def _evaluate_children(self, children: list[Any]) -> str | None:
        pop, s, engine = self.pop, self.s, self.engine
        if not children:
            return None
        requests = [(pop.shaped(c[-1]), i) for c in children for i in c[2]]
        result = engine.run(requests, split=self.train_split, label="children")
        rollouts = iter(result.rollouts)
        accepted = []
        for slot, parent, batch, runs, _names, _records, prompt in children:
            child_runs = [next(rollouts) for _ in batch]
            self.counts["proposed"] += 1
            if any(r is None for r in child_runs):
                continue
            parent_scores = [r.value for r in runs if r is not None]
            child_scores = [r.value for r in child_runs if r is not None]
            before, after = math.fsum(parent_scores), math.fsum(child_scores)
            ok = bool(self.acceptance.accept(parent_scores, child_scores))
            self.counts["accepted" if ok else "rejected"] += 1
            if not ok:
                self.tried.add((parent, pop.key(prompt)))
            self.events.emit(
                CandidateEvaluated(
                    candidate=-1,
                    split="minibatch",
                    score=after / len(batch),
                    n_examples=len(batch),
                    accepted=ok,
                )
            )
            if ok:
                accepted.append((after - before, slot, parent, prompt))
        # siblings race on their minibatches: only the best gains pay a valset evaluation
        accepted.sort(key=lambda a: (-a[0], a[1]))
        self.counts["raced_out"] += max(0, len(accepted) - s.max_accepted_per_iteration)
        return self._admit(
            [
                NewCandidate(prompt, [parent], "mutation")
                for _, _, parent, prompt in accepted[: s.max_accepted_per_iteration]
            ]
        )

    def _admit(self, new: list[NewCandidate]) -> str | None:
        """Score new candidates (prompts as components) on the valset in the candidate book, as
        many as the budget allows, and keep them in the population; ``"budget"`` when not all
        of them could be scored."""
        pop = self.pop
        shaped = [replace(entry, prompt=pop.shaped(entry.prompt)) for entry in new]
        kept = self.ctx.book.add_all(shaped, label="valset")
        if kept is None:
            return "budget"
        for entry, scored in zip(new[: len(kept)], kept, strict=True):
            pop.add(entry.prompt, scored, self.val_ids)
            if self.s.merge and entry.origin == "mutation":
                self.merges_due += 1
        return "budget" if len(kept) < len(new) else None
