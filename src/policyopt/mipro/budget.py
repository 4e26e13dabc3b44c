"""MIPRO's plan: candidates, trials, minibatch and full-evaluation schedule, fitted to a budget.

One rule, in one place: :class:`~policyopt.mipro.MIPRO` applies it when it starts, and the
registry (CLI, harness, job config) calls it to fill in or check settings up front.

* Budget alone (no ``auto``, no counts): 4 candidates, minibatches of 10 and a full evaluation
  every 5 trials, with as many trials as the budget pays for. A tight budget first shrinks the
  minibatch, then the candidates (to 2, which halves the bootstrap). The plan assumes no cache
  hits; the search then runs on past ``num_trials`` while the budget pays for another trial and
  a full evaluation (up to 10x the plan, and until batches stop paying anything new).
* ``auto=``: the preset's candidates; its trials capped to what the budget pays for (and the
  minibatch shrunk, unless given, when not even one trial fits).
* Explicit ``num_candidates``/``num_trials``: kept as given; a plan the budget cannot finish is
  logged as a warning (the hard budget ends the search early).

Every mode raises :class:`~policyopt.errors.ConfigError` naming the smallest budget that runs one
trial when the budget cannot: a run that could only score the seed is an error, not a no-op.

The rollouts a plan spends at most (cache hits make it less): the seed's full evaluation
(``n_val``), the bootstrap, ``num_trials * minibatch`` and one full evaluation per promotion
(after every ``full_eval_every`` trials, in batches of ``trials_per_batch``, and one at the end).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from policyopt.errors import ConfigError
from policyopt.mipro.presets import PRESETS, preset

__all__ = [
    "BUDGET_DEFAULTS",
    "MIPROPlan",
    "bootstrap_size",
    "log_plan",
    "plan_for_budget",
    "smallest_budget",
    "spend",
]

logger = logging.getLogger("policyopt")

#: what MIPRO chooses when only a budget is given: 4 candidates, minibatches of 10, a full
#: evaluation every 5 trials (tight budgets shrink the minibatch, then the candidates to 2)
BUDGET_DEFAULTS: dict[str, int] = {"num_candidates": 4, "minibatch_size": 10, "full_eval_every": 5}
#: the minibatch with ``auto=`` or explicit counts and no ``minibatch_size`` (DSPy's 35)
PRESET_MINIBATCH = 35
_MAX_TRIALS = 1000  # a plan never asks for more trials than this

Source = Literal["budget", "auto", "explicit"]


def bootstrap_size(
    n_train: int, n_candidates: int, max_bootstrapped_demos: int, bootstrapper: Any = "bootstrap"
) -> int:
    """How many training examples the seed program runs on to find demos."""
    if max_bootstrapped_demos == 0 or bootstrapper == "none":
        return 0
    return min(n_train, max(8, n_candidates * max_bootstrapped_demos))


def spend(
    *,
    num_trials: int,
    minibatch: int,
    full_eval_every: int,
    trials_per_batch: int,
    bootstrap: int,
    n_val: int,
) -> dict[str, int]:
    """The most rollouts a plan spends, by stage, following the search loop's schedule.

    In closed form (O(1) whatever ``num_trials``: a job server checks plans on submit). The
    loop runs batches of ``trials_per_batch`` trials (the last one what is left) and promotes
    once the trials since the last promotion reach ``full_eval_every``."""
    if trials_per_batch < 1:
        raise ConfigError(f"MIPRO: trials_per_batch must be >= 1; got {trials_per_batch}.")
    num_trials = max(0, num_trials)
    full, rest = divmod(num_trials, trials_per_batch)
    per_promotion = max(1, -(-full_eval_every // trials_per_batch))  # full batches per promotion
    promotions, left = divmod(full, per_promotion)
    if rest and left * trials_per_batch + rest >= full_eval_every:
        promotions += 1
    promotions += 1  # the end of the search promotes the best configuration not yet scored
    trials = num_trials * minibatch
    return {
        "baseline": n_val,
        "bootstrap": bootstrap,
        "trials": trials,
        "full_evaluations": promotions * n_val,
        "total": n_val + bootstrap + trials + promotions * n_val,
    }


@dataclass(frozen=True)
class MIPROPlan:
    """What a MIPRO run will do, and the most rollouts it spends doing it."""

    source: Source
    num_candidates: int
    num_trials: int
    minibatch_size: int
    full_eval_every: int
    bootstrap: int
    rollouts: dict[str, int]
    proposer_calls: int
    budget: int
    proposer_calls_max: int = 0  # with every re-ask after an unusable proposal
    rollouts_min: int = 0  # forecast's low end: nothing to search (no usable proposal, no demos)
    rollouts_max: int = 0  # a budget-only search runs on while cache hits leave budget
    requested_trials: int | None = None  # auto/explicit trials before the budget's cap
    notes: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, int]:
        """The plan as MIPRO settings (what the registry fills in)."""
        return {
            "num_candidates": self.num_candidates,
            "num_trials": self.num_trials,
            "minibatch_size": self.minibatch_size,
            "full_eval_every": self.full_eval_every,
        }

    def estimate(self) -> dict[str, Any]:
        """The up-front estimate a run announces (``RunStarted.estimate``)."""
        return {
            **self.rollouts,
            "max_rollouts": self.budget,
            "plan": self.source,
            "num_candidates": self.num_candidates,
            "num_trials": self.num_trials,
            "minibatch_size": self.minibatch_size,
            "full_eval_every": self.full_eval_every,
            "proposer_calls": self.proposer_calls,
            "proposer_calls_max": self.proposer_calls_max,
            # the keys every spec's estimate shares (see policyopt.registry.Estimator)
            "rollouts": self.rollouts["total"],
            "rollouts_min": self.rollouts_min,
            "rollouts_max": self.rollouts_max,
            "lm_calls": self.proposer_calls,
            "lm_calls_min": self.proposer_calls,
            "lm_calls_max": self.proposer_calls_max,
            **({"requested_trials": self.requested_trials} if self.requested_trials else {}),
        }

    def describe(self) -> str:
        """One line: the plan and its most rollouts."""
        r = self.rollouts
        text = (
            f"MIPRO plan ({self.source}): {self.num_candidates} candidates, {self.num_trials} "
            f"trial{'s' if self.num_trials != 1 else ''} on minibatches of "
            f"{self.minibatch_size}, a full evaluation every {self.full_eval_every} trials; "
            f"at most {r['total']} of {self.budget} rollouts (seed {r['baseline']}, "
            f"bootstrap {r['bootstrap']}, trials {r['trials']}, full evaluations "
            f"{r['full_evaluations']}), {self.proposer_calls} proposer LM calls "
            f"({self.proposer_calls_max} at most, with re-asks)"
        )
        if self.source == "budget":
            text += "; more trials while cache hits leave budget"
        if self.rollouts_min < r["total"]:
            text += (
                f"; as few as {self.rollouts_min} rollouts if no proposal is usable and "
                "bootstrapping finds no demos (nothing to search)"
            )
        return "; ".join([text, *self.notes])

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return asdict(self)


def _max_trials(budget: int, cap: int, **shape: int) -> int:
    """The most trials (0 if none, at most ``cap``) whose spend fits in ``budget``."""
    lo, hi = 0, cap
    while lo < hi:  # the spend grows with the trials: binary search
        mid = (lo + hi + 1) // 2
        if spend(num_trials=mid, **shape)["total"] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _proposer_calls(n_candidates: int, n_components: int, grounded: bool) -> int:
    return (1 if grounded else 0) + (n_candidates - 1) * n_components


def plan_for_budget(  # noqa: PLR0915 - the budget fit is one formula, written out step by step
    settings: Mapping[str, Any],
    *,
    budget: int,
    n_train: int,
    n_val: int,
    n_components: int = 1,
) -> MIPROPlan:
    """The plan for ``settings`` (a dict of MIPRO settings) within ``budget`` rollouts.

    Raises :class:`ConfigError` naming the smallest budget that runs one trial when ``budget``
    cannot.
    """
    get = settings.get
    auto, n_cand_given, trials_given = get("auto"), get("num_candidates"), get("num_trials")
    if auto is not None and (n_cand_given is not None or trials_given is not None):
        raise ConfigError(
            "MIPRO: give either auto='light'|'medium'|'heavy' or num_candidates/num_trials, "
            "not both."
        )
    if auto is not None and auto not in PRESETS:
        raise ConfigError(f"MIPRO: auto must be one of {', '.join(PRESETS)}; got {auto!r}.")
    if n_val < 1:
        raise ConfigError("MIPRO needs at least one validation example.")
    max_boot = int(get("max_bootstrapped_demos", 4))
    max_labeled = int(get("max_labeled_demos", 4))
    bootstrapper = get("demo_bootstrapper", "bootstrap")
    zero_shot = bootstrapper == "none" or (max_boot == 0 and max_labeled == 0)
    grounded = get("instruction_proposer", "grounded") == "grounded"
    retries = int(get("max_proposal_retries", 2))
    shape_fixed = {"trials_per_batch": int(get("trials_per_batch", 2)), "n_val": n_val}
    given_batch = get("minibatch_size")
    full_every = int(get("full_eval_every") or BUDGET_DEFAULTS["full_eval_every"])

    source: Source
    requested: int | None
    if auto is not None:
        source = "auto"
        n_cand, requested = preset(auto, n_components, zero_shot)
        ladder = [n_cand]
        default_batch = PRESET_MINIBATCH
    elif n_cand_given is not None or trials_given is not None:
        source = "explicit"
        n_cand = int(n_cand_given or BUDGET_DEFAULTS["num_candidates"])
        requested = None if trials_given is None else int(trials_given)
        ladder = [n_cand]
        default_batch = (
            PRESET_MINIBATCH if requested is not None else BUDGET_DEFAULTS["minibatch_size"]
        )
    else:
        source, requested = "budget", None
        ladder = [BUDGET_DEFAULTS["num_candidates"], 3, 2]
        default_batch = BUDGET_DEFAULTS["minibatch_size"]
    first_batch = min(int(given_batch or default_batch), n_val)
    batches = [first_batch] if given_batch is not None else range(first_batch, 0, -1)

    def fit(n_cand: int, batch: int) -> tuple[int, dict[str, int]]:
        shape = {
            **shape_fixed,
            "minibatch": batch,
            "full_eval_every": full_every,
            "bootstrap": bootstrap_size(n_train, n_cand, max_boot, bootstrapper),
        }
        return _max_trials(budget, requested or _MAX_TRIALS, **shape), shape

    for n_cand_try in ladder:
        for batch in batches:
            trials, shape = fit(n_cand_try, batch)
            if trials >= 1:
                break
        if trials >= 1:
            n_cand = n_cand_try
            break
    else:  # not one trial fits: say what would
        smallest = min(spend(num_trials=1, **fit(c, batches[-1])[1])["total"] for c in ladder)
        what = {"auto": f"auto={auto!r}", "explicit": "these counts", "budget": "a budget alone"}
        raise ConfigError(
            f"MIPRO with {what[source]} cannot run a single trial within max_rollouts={budget}: "
            f"scoring the seed on {n_val} validation examples, bootstrapping demos, one trial "
            f"on a minibatch and one full evaluation need at least {smallest} rollouts. Raise "
            f"max_rollouts to {smallest} or more, or pass a smaller valset."
        )
    notes: list[str] = []
    if source == "explicit" and requested is not None:
        fitting = trials
        trials = requested
        if fitting < requested:
            notes.append(
                f"num_trials={requested} needs about "
                f"{spend(num_trials=requested, **shape)['total']} rollouts; the budget pays "
                f"for about {fitting} trials and ends the search there"
            )
    elif source == "auto" and requested is not None and trials < requested:
        notes.append(f"auto={auto!r} asks for {requested} trials; the budget pays for {trials}")
    if shape["minibatch"] < first_batch:
        notes.append(f"minibatch shrunk from {first_batch} to {shape['minibatch']} to fit")
    if source == "budget" and n_cand < BUDGET_DEFAULTS["num_candidates"]:
        notes.append(f"candidates cut to {n_cand} to fit")
    planned = spend(num_trials=trials, **shape)
    demo_sets = 1 if zero_shot else n_cand

    def space_cap(configs: int) -> int:  # every configuration on every val example, once
        return shape["bootstrap"] + configs * n_val

    cap = space_cap((n_cand * demo_sets) ** n_components)
    planned["total"] = min(planned["total"], cap, budget)  # explicit counts may ask for more
    most = min(budget, cap) if source == "budget" else min(budget, planned["total"])
    return MIPROPlan(
        source=source,
        num_candidates=n_cand,
        num_trials=trials,
        minibatch_size=shape["minibatch"],
        full_eval_every=full_every,
        bootstrap=shape["bootstrap"],
        rollouts=planned,
        # no usable proposal and no demo set leave nothing to search (a tiny proposer's case)
        rollouts_min=min(planned["total"], n_val + shape["bootstrap"]),
        rollouts_max=max(most, planned["total"]),
        proposer_calls=_proposer_calls(n_cand, n_components, grounded),
        proposer_calls_max=_proposer_calls(n_cand, n_components * (retries + 1), grounded),
        budget=budget,
        requested_trials=requested,
        notes=notes,
    )


def smallest_budget(n_train: int, n_val: int, **settings: Any) -> int:
    """The smallest ``max_rollouts`` that runs one trial with these settings."""
    lo, hi = 1, 2 * n_val + n_train + n_val + 2
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            plan_for_budget(settings, budget=mid, n_train=n_train, n_val=n_val)
            hi = mid
        except ConfigError:
            lo = mid + 1
    return lo


def log_plan(plan: MIPROPlan) -> None:
    """The plan as a log line (a warning when the budget cuts or shrinks what was asked)."""
    level = logging.WARNING if plan.notes and plan.source != "budget" else logging.INFO
    logger.log(level, "%s", plan.describe())
