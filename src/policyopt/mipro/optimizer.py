"""MIPRO: bootstrapped demos, grounded instruction proposal, Bayesian search (arXiv 2406.11695).

1. Bootstrap: the seed program runs on a seeded sample of training examples (through the engine:
   parallel, cached, budgeted); outputs that score at least ``metric_threshold`` become demos.
   With labels (``label_key``), labeled demos too. ``num_candidates`` demo sets per component.
2. Propose: a one-time dataset summary, then ``num_candidates`` distinct instructions per
   component (the seed text kept first), each grounded on a demo set, the history and a tip.
3. Search: Optuna TPE over (instruction, demo set) per component, trials asked in batches and
   scored together on one shared valset minibatch; every ``full_eval_every`` trials and at the
   end, the configuration with the best mean minibatch score not yet fully evaluated is scored
   on the whole valset. The result is the best full-valset configuration.

The rollout budget is hard; every rollout and proposer answer is journaled, so a resumed run
replays to the same point (the Optuna study is rebuilt by the replay).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from policyopt.errors import ConfigError, StopRequested
from policyopt.events import Listener
from policyopt.feedback import make_records
from policyopt.lm.base import resolve_lm
from policyopt.mipro import strategies
from policyopt.mipro.budget import MIPROPlan, log_plan, plan_for_budget
from policyopt.mipro.budget import bootstrap_size as _bootstrap_size
from policyopt.mipro.config import RESUMABLE_CHANGES, MIPROSettings
from policyopt.mipro.demos import (
    Demo,
    DemoFormatter,
    demo_input,
    demo_turns,
    detect_label_key,
    format_prompt,
    labeled_demo,
)
from policyopt.mipro.proposer import AdviceProposer, InstructionProposer
from policyopt.mipro.strategies import DemoSetBuilder, InstructionSource
from policyopt.mipro.trials import TRIALS_DONE, Trials, config_key
from policyopt.prompts import PromptShape
from policyopt.registry import with_settings_args
from policyopt.rollout.aio import call_blocking
from policyopt.rollout.engine import DEFAULT_TIMEOUT_S
from policyopt.runtime import LMUnavailable, RunContext, _one_lm, settings_or_error
from policyopt.steps import StepLoop
from policyopt.types import Candidate, OptimizationResult, Program, PromptValue, validate_prompt

__all__ = ["MIPRO", "estimate_rollouts", "trials_for_budget"]

logger = logging.getLogger("policyopt")


def estimate_rollouts(
    settings: MIPROSettings, n_train: int, n_val: int, n_components: int
) -> dict[str, Any]:
    """Upper bound of what the settings spend, with the plan: see :mod:`policyopt.mipro.budget`.

    ``bootstrap + baseline + trials + full_evaluations = total``; cache hits (repeated
    configurations or examples) make the real spend lower.
    """
    return settings.plan(n_train, n_val, n_components).estimate()  # type: ignore[no-any-return]


def trials_for_budget(
    budget: int, n_train: int, n_val: int, n_components: int = 1, **settings: Any
) -> int:
    """The most trials whose planned spend fits in ``budget`` (:class:`ConfigError` naming the
    smallest budget when not one does).

    ``settings`` are the other MIPRO settings (``num_candidates``, ``minibatch_size`` ...).
    """
    settings = {k: v for k, v in settings.items() if k not in ("num_trials", "auto")}
    plan = plan_for_budget(
        settings, budget=budget, n_train=n_train, n_val=n_val, n_components=n_components
    )
    return plan.num_trials


def bootstrap_size(settings: MIPROSettings, n_train: int, n_candidates: int) -> int:
    """How many training examples the seed program runs on to find demos."""
    return _bootstrap_size(
        n_train, n_candidates, settings.max_bootstrapped_demos, settings.demo_bootstrapper
    )


@with_settings_args(MIPROSettings)
class MIPRO:
    """``MIPRO(proposer_lm=..., max_rollouts=...).optimize(program, train, val)``.

    The budget alone is enough: the run's candidates, trials, minibatch and full-evaluation
    schedule are fitted to ``max_rollouts`` (:mod:`policyopt.mipro.budget`; the plan is logged
    and announced in ``RunStarted.estimate``). ``auto="light"|"medium"|"heavy"`` or explicit
    ``num_candidates``/``num_trials`` win when given, capped by (auto) or checked against
    (explicit) the budget; a budget that cannot run one trial is a ConfigError naming the
    smallest one that can.

    ``proposer_lm`` (alias ``lm``) is a litellm model string, a :class:`policyopt.LM` or a
    callable ``str -> str``. ``demo_formatter(instruction, demos) -> str`` decides how demos
    enter the prompt (default :func:`~policyopt.mipro.demos.format_prompt`). Every other
    parameter is a setting, validated by :class:`~policyopt.mipro.config.MIPROSettings` (their
    docs below are its fields').
    """

    name = "mipro"

    def __init__(
        self,
        *,
        proposer_lm: Any = None,
        lm: Any = None,
        max_rollouts: int,
        demo_formatter: DemoFormatter = format_prompt,
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
        auto: Literal["light", "medium", "heavy"] | None = None,
        num_candidates: int | None = None,
        num_trials: int | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 4,
        metric_threshold: float | None = None,
        label_key: str | None = None,
        minibatch_size: int | None = None,
        full_eval_every: int = 5,
        trials_per_batch: int = 2,
        n_startup_trials: int | None = None,
        program_description: str | None = None,
        tips: bool = True,
        max_prompt_chars: int = 4000,
        max_proposal_retries: int = 2,
        sampler: Literal["tpe", "random"] | Any = "tpe",
        instruction_proposer: Literal["grounded", "advice"] | InstructionSource = "grounded",
        demo_bootstrapper: Literal["bootstrap", "none"] | DemoSetBuilder = "bootstrap",
        final_choice: Literal["mean", "lower_bound"] = "mean",
        final_z: float = 1.0,
        demo_placement: Literal["turns", "inline"] | None = None,
        perfect_score: float | None = None,
        stop_at_perfect: bool = True,
    ) -> None:
        values = {k: v for k, v in locals().items() if k in MIPROSettings.model_fields}
        self.proposer_lm = resolve_lm(
            _one_lm(proposer_lm, lm, "proposer_lm"), name="proposer_lm (lm)"
        )
        if not callable(demo_formatter):
            raise ConfigError("'demo_formatter' must be a callable (instruction, demos) -> str.")
        self.demo_formatter = demo_formatter
        self.listeners = list(listeners)
        self.settings = settings_or_error(MIPROSettings, values, "MIPRO")

    def optimize(
        self, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None = None
    ) -> OptimizationResult:
        """Run MIPRO and return the best configuration found on the full valset."""
        if not isinstance(program, Program):
            raise ConfigError(
                f"MIPRO.optimize expects a policyopt.Program; got {type(program).__name__}."
            )
        return _Run(self, program, trainset, valset).run()


class _Run:
    """One optimize() call."""

    def __init__(
        self, mipro: MIPRO, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None
    ) -> None:
        s = self.s = mipro.settings
        self.program = program
        self.format: Callable[[str, Sequence[Demo]], str] = mipro.demo_formatter
        # components (name -> text); a chat prompt searches only its instruction-bearing message
        self.shape = PromptShape.of(program.prompt)
        self.fixed = self.shape.components(program.prompt)
        chat = self.shape.kind == "chat"
        self.seed_prompt = (
            {self.shape.instruction: self.fixed[self.shape.instruction]} if chat else self.fixed
        )
        self.components = list(self.seed_prompt)
        self.placement = s.demo_placement or ("turns" if chat else "inline")
        if self.placement == "turns" and not chat:
            raise ConfigError(
                "MIPRO's demo_placement='turns' needs a chat-message prompt (a list of "
                "{'role': ..., 'content': ...} dicts); use demo_placement='inline' for a "
                f"{self.shape.kind} prompt."
            )
        # the plan (and a budget too small for one trial) is settled before any model call
        n_val = len(trainset if valset is None else valset)
        self.plan: MIPROPlan = s.plan(len(trainset), n_val, len(self.components))
        self.n_candidates = self.plan.num_candidates
        self.ctx = RunContext(
            optimizer="mipro",
            settings=s,
            resumable=RESUMABLE_CHANGES,
            identity={
                "seed_prompt": program.prompt,
                "num_candidates": self.n_candidates,
                "num_trials": self.plan.num_trials,
            },
            program=program,
            trainset=trainset,
            valset=valset,
            listeners=mipro.listeners,
        )
        seeds = np.random.SeedSequence(s.seed).spawn(4)
        self.rng_boot, self.rng_propose, self.rng_batch, rng_search = (
            random.Random(int(q.generate_state(1)[0])) for q in seeds
        )
        self.search_seed = rng_search.randrange(2**31)
        self.lm = self.ctx.journaled_lm(mipro.proposer_lm, kind="proposer", rollouts_per_call=1)
        self.label_key = s.label_key or detect_label_key(list(trainset))
        self.instructions: dict[str, list[str]] = {}
        self.demo_sets: list[list[Demo]] = [[]]
        self.full: dict[str, int] = {}  # config key -> candidate index
        self.trials: Trials | None = None  # the search, once it starts
        # the kit's step loop: MIPRO's own end is its trial plan; an idle batch is no stall
        self.loop = StepLoop(
            self.ctx,
            usage=lambda: self.lm.usage,
            state=self._state,
            end=lambda: self.trials.end(self.loop.stalled) if self.trials else None,
            stall_limit=None,
        )
        self.n_bootstrapped = 0
        self.grounding: list[Demo] = []
        self.feedback: list[tuple[Any, Any, float, str | None]] = []  # bootstrap rows
        self.params: list[dict[str, int]] = []  # of each candidate
        self.rejected_proposals = 0
        self.rejections: dict[str, int] = {}  # rejected proposals by reason
        self.reasks_skipped: dict[str, int] = {}  # re-asks not made by reason (given up)
        self.failed_proposals = 0

    # ------------------------------------------------------------------ prompts
    def prompt(self, params: dict[str, int]) -> PromptValue:
        """The prompt of a configuration, in the seed's shape (demos inline or as turns)."""
        parts = dict(self.fixed)
        turns: list[dict[str, str]] = []
        for c in self.components:
            instruction = self.instructions[c][params[f"{c}:instruction"]]
            demos = self.demo_sets[params.get(f"{c}:demos", 0)]
            if self.placement == "turns":
                parts[c], turns = instruction, [*turns, *demo_turns(demos)]
            else:
                parts[c] = self.format(instruction, demos)
        return validate_prompt(self.shape.shaped(parts, turns=turns))

    # ------------------------------------------------------------------ stages
    def bootstrap(self) -> None:
        s, ctx = self.s, self.ctx
        engine = ctx.engine
        labeled: list[Demo] = []
        if self.label_key is not None and s.max_labeled_demos > 0:
            labeled = [
                labeled_demo(engine.example(ctx.train_split, i), self.label_key)
                for i in ctx.train_ids
            ]
        found: list[Demo] = []
        size = self.plan.bootstrap
        if size:
            ids = list(ctx.train_ids)
            self.rng_boot.shuffle(ids)
            ids = ids[:size]
            seed = validate_prompt(self.program.prompt)
            budget = engine.budget_left
            if budget is not None:  # leave the budget for the seed's valset score
                ids = ids[: max(0, budget - len(ctx.val_ids))]
            result = engine.run([(seed, i) for i in ids], split=ctx.train_split, label="bootstrap")
            threshold = s.demo_threshold()
            for i, rollout in zip(ids, result.rollouts, strict=True):
                if rollout is not None and not rollout.failed:
                    self.feedback.append(
                        (
                            engine.example(ctx.train_split, i),
                            rollout.score.output,
                            rollout.value,
                            rollout.score.feedback,
                        )
                    )
                if rollout is None or rollout.failed or rollout.value < threshold:
                    continue
                example = engine.example(ctx.train_split, i)
                output = rollout.score.output
                if output is None and self.program.run is not None:
                    output = call_blocking(self.program.run, seed, example)  # async too
                if output is not None:
                    found.append(Demo(demo_input(example, self.label_key), str(output)))
        self.n_bootstrapped = len(found)
        if s.zero_shot:
            self.demo_sets = [[]]
        else:
            builder = strategies.demo_builder(s.demo_bootstrapper)
            self.demo_sets = [
                list(demos)
                for demos in builder.build(
                    self.n_candidates,
                    found,
                    labeled,
                    max_bootstrapped=s.max_bootstrapped_demos,
                    max_labeled=s.max_labeled_demos,
                    rng=self.rng_boot,
                )
            ] or [[]]
        self.grounding = found or labeled

    def propose(self, seed_score: float | None) -> None:
        s, ctx = self.s, self.ctx
        proposer = InstructionProposer(
            self.lm,
            rng=self.rng_propose,
            program_description=s.program_description,
            use_tips=s.tips,
            max_chars=s.max_prompt_chars,
            max_retries=s.max_proposal_retries,
        )
        grounded = s.instruction_proposer == "grounded"
        if grounded:  # the dataset summary grounds the built-in proposer only
            examples = [ctx.engine.example(ctx.train_split, i) for i in ctx.train_ids[:8]]
            proposer.summarize(examples)
        grounding = [g for g in self.demo_sets if g] or [self.grounding[:4]]
        source: Any = proposer if grounded else s.instruction_proposer
        if s.instruction_proposer == "advice":
            threshold = s.demo_threshold()
            source = proposer = AdviceProposer(  # type: ignore[assignment]
                self.lm,
                make_records(self.feedback, max_chars=500),
                failed=[value < threshold for _, _, value, _ in self.feedback],
                rng=self.rng_propose,
                max_chars=s.max_prompt_chars,
                max_retries=s.max_proposal_retries,
            )
            if not self.feedback:
                logger.warning(
                    "MIPRO instruction_proposer='advice' has no bootstrap runs to read feedback "
                    "from (demo_bootstrapper='none' or max_bootstrapped_demos=0): only demos "
                    "are searched"
                )
        for c in self.components:
            proposed = source.propose(
                c, self.seed_prompt[c], self.n_candidates, grounding, seed_score
            )
            # the seed text first, then distinct texts (a custom source may not ensure it)
            texts = [
                self.seed_prompt[c],
                *(t for t in proposed if isinstance(t, str) and t.strip()),
            ]
            self.instructions[c] = list(dict.fromkeys(texts))[: self.n_candidates]
        self.rejected_proposals = proposer.rejected
        loop = getattr(proposer, "loop", None)
        self.rejections = dict(loop.rejections) if loop is not None else {}
        self.reasks_skipped = dict(loop.reasks_skipped) if loop is not None else {}
        self.failed_proposals = proposer.failed
        if proposer.failed and all(len(v) == 1 for v in self.instructions.values()):
            if self.lm.refused:  # not a failure: max_lm_calls / max_lm_tokens held them back
                raise StopRequested(self.loop.limits() or "lm_call_limit")
            raise LMUnavailable(
                f"the proposer LM failed on all {proposer.failed} instruction proposals; "
                "nothing new to search"
            )

    def space(self) -> dict[str, int]:
        space = {f"{c}:instruction": len(self.instructions[c]) for c in self.components}
        if len(self.demo_sets) > 1:
            space.update({f"{c}:demos": len(self.demo_sets) for c in self.components})
        return space

    def full_eval(self, params: dict[str, int], origin: str) -> bool:
        """Score a configuration on the whole valset and keep it as a candidate."""
        index = len(self.candidates)
        candidate = self.ctx.book.add(
            self.prompt(params), parents=[] if index == 0 else [0], origin=origin, label="full"
        )
        if candidate is None:
            return False
        self.full[config_key(params)] = index
        self.params.append(params)
        return True

    @property
    def candidates(self) -> list[Candidate]:
        """The run's candidates (the kit's candidate book)."""
        return self.ctx.book.candidates

    def search(self) -> str:
        """Run the trials (:mod:`policyopt.mipro.trials`) on the kit's step loop; a search that
        ends by its plan promotes its best pending configuration."""
        self.trials = trials = Trials(
            self.ctx,
            self.s,
            self.plan,
            space=self.space(),
            seed=self.search_seed,
            rng=self.rng_batch,
            prompt=self.prompt,
            full_eval=self.full_eval,
            full=self.full,
        )
        reason = self.loop.run(trials.step)
        if reason == TRIALS_DONE and trials.promote() is not None:
            return "budget"
        return reason

    def _state(self) -> dict[str, Any]:
        """MIPRO's part of ``state.json``: demos, instructions, trials and RNGs so far."""
        return {
            "instructions": self.instructions,
            "demo_sets": [[d.__dict__ for d in demos] for demos in self.demo_sets],
            "trials": self.trials.records if self.trials else [],
            "candidate_params": self.params,
            "rng": {
                "bootstrap": self.rng_boot.getstate(),
                "proposals": self.rng_propose.getstate(),
                "minibatches": self.rng_batch.getstate(),
            },
        }

    # ------------------------------------------------------------------ run
    def run(self) -> OptimizationResult:
        s, ctx = self.s, self.ctx
        estimate = self.plan.estimate()
        log_plan(self.plan)
        return ctx.execute(
            optimizer="mipro",
            seed_prompt=validate_prompt(self.program.prompt),
            settings={**s.model_dump(), **self.plan.settings()},
            estimate=estimate,
            body=self._body,
            has_result=lambda: bool(self.candidates),
            finish=self.finish,
            budget_hint=f" These settings would use about {estimate['total']}.",
        )

    def _body(self) -> str:
        # The seed is scored first and becomes candidate 0 before any other step: whatever
        # fails or stops the run later (evaluate, the proposer LM, a STOP file), there is a
        # result. Its score grounds the proposals; a seed that already solves the valset (or a
        # limit already reached) ends the run before any demo or proposal is paid for.
        self.instructions = {c: [self.seed_prompt[c]] for c in self.components}
        if not self.full_eval({name: 0 for name in self.space()}, "seed"):
            raise ConfigError("the budget ran out while scoring the seed prompt")
        reason = self.loop.reason()
        if reason:
            return reason
        self.bootstrap()
        baseline = {name: 0 for name in self.space()}  # demo keys may exist now: all zeros
        self.params[0] = baseline
        self.full = {config_key(baseline): 0}
        self.propose(self.candidates[0].val_score)
        return self.search()

    def finish(self, reason: str) -> OptimizationResult:
        s = self.s
        choice = self.ctx.book.final_choice(s.final_choice, s.final_z)
        return self.loop.finish(
            reason,
            best=self.candidates[choice["chosen"]],
            role="proposer",
            details={
                "instructions": self.instructions,
                "demo_set_sizes": [len(d) for d in self.demo_sets],
                "bootstrapped_demos": self.n_bootstrapped,
                "label_key": self.label_key,
                "trials": self.trials.records if self.trials else [],
                "candidate_params": self.params,
                "final_choice": choice,
                "plan": self.plan.as_dict(),
                "rejected_proposals": self.rejected_proposals,
                "rejections": self.rejections,
                "reasks_skipped": self.reasks_skipped,
                "failed_proposals": self.failed_proposals,
            },
        )
