"""MIPRO's trials: batches of Optuna trials scored on valset minibatches, and promotions.

Each step of the search asks Optuna for a batch of configurations, scores them together on one
seeded valset minibatch and tells Optuna the means; every ``full_eval_every`` trials (and when
the search ends by its plan) the configuration with the best mean minibatch score not yet fully
evaluated is scored on the whole valset and becomes a candidate. A configuration asked again on
examples it was already scored on is told that score instead of spending a trial, up to
``_MAX_REPEATS`` in a row. The kit's step loop (:class:`~policyopt.steps.StepLoop`) runs the
steps and checks the shared stop rules; :meth:`Trials.end` is MIPRO's own end.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from policyopt.events import CandidateEvaluated
from policyopt.mipro import strategies
from policyopt.mipro.search import Search
from policyopt.types import PromptValue

if TYPE_CHECKING:
    from policyopt.mipro.budget import MIPROPlan
    from policyopt.mipro.config import MIPROSettings
    from policyopt.runtime import RunContext

__all__ = ["Trials", "config_key"]

logger = logging.getLogger("policyopt")

_EXTRA_TRIALS_FACTOR = 10  # a budget-only search runs at most this many times its planned trials
_IDLE_BATCHES = 3  # ... and stops past its plan after this many batches that paid nothing
_MAX_REPEATS = 20  # known configurations re-asked in a row before they count as trials

#: the search's own end: its planned trials are done (the best pending one is then promoted)
TRIALS_DONE = "trials_done"


def config_key(params: dict[str, int]) -> str:
    """A configuration's key: its parameters, sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(params.items()))


class Trials:
    """One run's search: Optuna's study, the trials scored so far and their minibatch scores.

    ``prompt(params)`` is a configuration's prompt; ``full_eval(params, origin)`` scores one on
    the whole valset (False when the budget cannot); ``full`` maps the keys of the fully
    evaluated configurations to their candidate index.
    """

    def __init__(
        self,
        ctx: RunContext,
        settings: MIPROSettings,
        plan: MIPROPlan,
        *,
        space: dict[str, int],
        seed: int,
        rng: random.Random,
        prompt: Callable[[dict[str, int]], PromptValue],
        full_eval: Callable[[dict[str, int], str], bool],
        full: dict[str, int],
    ) -> None:
        s = self.s = settings
        self.ctx, self.plan, self.space, self.rng = ctx, plan, space, rng
        self.prompt, self.full_eval, self.full = prompt, full_eval, full
        n_startup = s.n_startup_trials if s.n_startup_trials is not None else max(4, 2 * len(space))
        self.search = Search(
            space,
            seed=seed,
            n_startup_trials=n_startup,
            storage_path=ctx.rundir.path / "optuna.jsonl" if ctx.rundir else None,
            sampler=strategies.make_sampler(s.sampler, seed, n_startup),
        )
        self.search.add({name: 0 for name in space}, ctx.book.candidates[0].val_score)
        self.records: list[dict[str, Any]] = []  # every trial scored, in order
        self.minibatch_scores: dict[str, dict[str, float]] = {}  # config key -> example -> score
        self.done = 0  # trials scored (or told a known score), as the plan counts them
        self.since_full = 0  # trials since the last promotion
        self.size = min(plan.minibatch_size, len(ctx.val_ids))
        # From a budget alone, the budget (not the planned count) ends the search: the plan
        # assumes no cache hits, so trials go on while another batch and a full evaluation are
        # affordable, until batches stop paying anything new (the space is exhausted).
        self.extend = plan.source == "budget"
        self.limit = plan.num_trials * (_EXTRA_TRIALS_FACTOR if self.extend else 1)

    def end(self, idle: int) -> str | None:
        """``"trials_done"`` when the planned trials are done (past the plan, a budget-only
        search goes on until ``idle`` batches in a row paid nothing), else None."""
        if self.done >= self.limit:
            return TRIALS_DONE
        if self.done >= self.plan.num_trials and idle >= _IDLE_BATCHES:
            return TRIALS_DONE
        return None

    def step(self) -> str | None:
        """One batch of trials; ``"budget"`` when the budget cannot pay for it (a budget-only
        search past its plan promotes its best pending configuration first)."""
        s, ctx = self.s, self.ctx
        planned = self.done < self.plan.num_trials  # past the plan: one trial per batch
        k = min(s.trials_per_batch, self.plan.num_trials - self.done) if planned else 1
        batch_ids, trials, configs = self._ask(k)
        requests = [(self.prompt(p), i) for p in configs for i in batch_ids]
        # a trial batch is started only if a full evaluation can follow it
        if not ctx.affordable(requests, ctx.val_split, extra=len(ctx.val_ids)):
            self.search.fail(trials)  # asked but never run: the budget cannot pay for them
            if not planned:
                self.promote()  # the budget ends a budget-only search: promote, then stop
            return "budget"
        result = ctx.engine.run(requests, split=ctx.val_split, label="trials")
        rollouts = iter(result.rollouts)
        values = [
            self._record(params, [next(rollouts) for _ in batch_ids], batch_ids)
            for params in configs
        ]
        self.search.tell(trials, values)
        self.done += len(trials)
        self.since_full += len(trials)
        if self.since_full >= self.plan.full_eval_every:
            self.since_full = 0
            if self.promote() == "budget":
                return "budget"
        return None

    def _ask(self, k: int) -> tuple[list[str], list[Any], list[dict[str, int]]]:
        """A minibatch and ``k`` trials to score on it, none already known there: a known one is
        told its score and asked again (up to ``_MAX_REPEATS`` in a row, then it is run)."""
        repeats = 0
        while True:
            batch_ids = sorted(self.rng.sample(list(self.ctx.val_ids), self.size))
            trials = self.search.ask(k)
            configs = [{name: int(t.params[name]) for name in self.space} for t in trials]
            known = [self.known(p, batch_ids) for p in configs]
            if not any(v is not None for v in known) or repeats >= _MAX_REPEATS:
                return batch_ids, trials, configs
            # Optuna asked again for a configuration already scored on these examples: it is
            # told that score, and no trial is spent on what would teach nothing
            repeats += sum(v is not None for v in known)
            self.search.tell(
                [t for t, v in zip(trials, known, strict=True) if v is not None],
                [v for v in known if v is not None],
            )
            fresh = [(t, p) for t, p, v in zip(trials, configs, known, strict=True) if v is None]
            if fresh:
                return batch_ids, [t for t, _ in fresh], [p for _, p in fresh]

    def _record(self, params: dict[str, int], runs: list[Any], batch_ids: list[str]) -> float:
        """Keep one trial's minibatch scores and announce its mean (failures score as such)."""
        scores = self.minibatch_scores.setdefault(config_key(params), {})
        for i, r in zip(batch_ids, runs, strict=True):
            if r is not None:
                scores[i] = r.value
        value = sum(r.value for r in runs if r) / max(1, sum(1 for r in runs if r))
        failed = sum(1 for r in runs if r is not None and r.failed)
        if failed:
            logger.warning(
                "trial %d: %d of %d rollouts failed (scored %g); see the run's failures",
                len(self.records),
                failed,
                len(batch_ids),
                self.s.failure_score,
            )
        self.records.append(
            {
                "number": len(self.records),
                "params": params,
                "minibatch_score": value,
                "n_examples": len(batch_ids),
                "failed": failed,
            }
        )
        self.ctx.events.emit(
            CandidateEvaluated(
                candidate=-1, split="minibatch", score=value, n_examples=len(batch_ids)
            )
        )
        return value

    def known(self, params: dict[str, int], example_ids: Sequence[str]) -> float | None:
        """The mean score of a configuration on these examples if every one is known already
        (from its full evaluation or earlier trials), else None."""
        key = config_key(params)
        scores = (
            self.ctx.book.candidates[self.full[key]].val_scores
            if key in self.full
            else self.minibatch_scores.get(key, {})
        )
        if not example_ids or any(i not in scores for i in example_ids):
            return None
        return sum(scores[i] for i in example_ids) / len(example_ids)

    def promote(self) -> str | None:
        """Fully evaluate the best-mean configuration not yet fully evaluated; ``"budget"`` when
        the budget cannot pay for it, else None."""
        pending = [
            (sum(v.values()) / len(v), key)
            for key, v in self.minibatch_scores.items()
            if key not in self.full and v
        ]
        if not pending:
            return None
        _, key = max(pending, key=lambda p: (p[0], p[1]))
        params = next(t["params"] for t in self.records if config_key(t["params"]) == key)
        ctx = self.ctx
        if not ctx.affordable([(self.prompt(params), i) for i in ctx.val_ids], ctx.val_split):
            return "budget"
        return None if self.full_eval(params, "trial") else "budget"
