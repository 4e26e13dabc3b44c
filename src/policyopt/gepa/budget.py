"""GEPA's up-front estimate: how many iterations and reflection calls a rollout budget buys.

GEPA runs until its budget is spent (or a perfect score, a stall, a time or cost limit), so its
rollouts are ``max_rollouts`` or fewer. What the budget buys in reflection calls depends on how
many proposals pass the minibatch gate and how many answers are unusable (each re-asked), which
nobody knows up front, so the estimate is a range with the point forecast inside it:

* an iteration pays ``k * samples * minibatch`` rollouts for its children, the parents'
  minibatch runs unless cached (a parent's training rollouts are paid once, so over a run
  parents cost at most ``n_train`` per distinct parent), and a valset evaluation (``n_val``) per
  accepted child (at most ``max_accepted_per_iteration``), plus a few merges;
* a reflection is one call for all its samples where the LM serves ``n`` (any
  :class:`policyopt.LM`; a plain callable is asked once per sample), plus one call per re-ask
  of an unusable sample;
* ``min_rollouts_per_call`` (default ``2 * minibatch``, as the gepa library's loop pays) widens
  the gate while the calls run ahead of the rollouts, so the forecast is at most
  ``budget / min_rollouts_per_call``; a trainset too small to widen into, or a model that
  repeats itself (a duplicate costs a call, no rollout), can still go past it;
* ``reflection_calls`` assumes :data:`ASSUMED_ACCEPT_RATE` with caching and
  :data:`ASSUMED_UNUSABLE` of the answers re-asked (both measured on the embedded SmolLM2-135M:
  the demo's 5 seeds); ``reflection_calls_min`` assumes half the proposals pass the gate, no
  re-ask and no parent run cached; ``reflection_calls_max`` assumes none passes and every
  sample is re-asked ``max_proposal_retries`` times, and is at most 3x the point (the run's
  default cap, :func:`policyopt.ledger.with_lm_cap`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "ASSUMED_ACCEPT_RATE",
    "ASSUMED_UNUSABLE",
    "expected_accepted",
    "gepa_estimate",
    "iterations_for_budget",
]

#: share of proposals that pass the minibatch gate, for the point forecast only
ASSUMED_ACCEPT_RATE = 0.1
#: share of answers that are unusable and re-asked, for the point forecast only
ASSUMED_UNUSABLE = 0.25
_MAX_OVER_POINT = 3  # the stated maximum's ceiling, as a multiple of the point
_RANGE_ACCEPT_RATE = 0.5  # the pessimistic end of the range (a strong reflection model)


def expected_accepted(children: int, rate: float, most: int) -> float:
    """Children an iteration scores on the valset: ``E[min(X, most)]``, X the children of
    ``children`` that pass the gate, each with probability ``rate``."""
    return sum(
        min(j, most) * math.comb(children, j) * rate**j * (1 - rate) ** (children - j)
        for j in range(children + 1)
    )


def iterations_for_budget(
    budget: int,
    *,
    n_train: int,
    n_val: int,
    proposals: int,
    minibatch: int,
    accept_rate: float,
    max_accepted: int,
    parents_cached: bool,
    merge_rollouts: float = 0.0,
    samples: int = 1,
) -> float:
    """Iterations whose expected spend fits ``budget`` after the seed's valset evaluation.

    ``proposals`` parents per iteration, ``samples`` children from each one's reflection.
    """
    left = budget - n_val - merge_rollouts
    if left <= 0:
        return 0.0
    accepted = expected_accepted(proposals * samples, accept_rate, max_accepted)
    per_iteration = proposals * samples * minibatch + accepted * n_val

    def spent(iterations: float) -> float:
        parents = proposals * minibatch * iterations
        if parents_cached:  # each distinct parent pays its training rollouts once
            parents = min(parents, n_train * (1 + accepted * iterations))
        return per_iteration * iterations + parents

    lo, hi = 0.0, float(left)  # at least one rollout per iteration
    for _ in range(60):
        mid = (lo + hi) / 2
        if spent(mid) <= left:
            lo = mid
        else:
            hi = mid
    return lo


def gepa_estimate(
    settings: Any, *, n_train: int | None, n_val: int, n_components: int, batched: bool = True
) -> dict[str, Any]:
    """The forecast for GEPA ``settings`` (a :class:`~policyopt.gepa.config.GEPASettings`);
    ``batched``: a reflection's samples share one call (the LM serves ``n``)."""
    budget = settings.max_rollouts
    k, b = settings.proposals(), settings.minibatch_size
    n_train = n_val if n_train is None else n_train
    per_child = n_components if settings.component_selection == "all" else 1  # custom: one
    samples, retries = settings.proposals_per_reflection, settings.max_proposal_retries
    merge = 0.0
    if settings.merge:  # each accepted merge: a subsample, then maybe a valset evaluation
        merge = settings.max_merges * (min(settings.merge_subsample_size, n_val) + n_val / 2)
    common = {
        "n_train": n_train,
        "n_val": n_val,
        "proposals": k,
        "minibatch": b,
        "max_accepted": settings.max_accepted_per_iteration,
        "samples": samples,
    }
    point = iterations_for_budget(
        budget, **common, accept_rate=ASSUMED_ACCEPT_RATE, parents_cached=True
    )
    low = iterations_for_budget(
        budget,
        **common,
        accept_rate=_RANGE_ACCEPT_RATE,
        parents_cached=False,
        merge_rollouts=min(merge, max(0.0, (budget - n_val) / 4)),
    )
    high = iterations_for_budget(budget, **common, accept_rate=0.0, parents_cached=True)
    first = 1 if batched and samples > 1 else samples  # first attempts of one reflection
    u = ASSUMED_UNUSABLE
    reasks = samples * sum(u**attempt for attempt in range(1, retries + 1))
    per_iteration = k * per_child * (first + reasks)
    calls = point * per_iteration
    floor = settings.min_rollouts_per_call
    floor = 2 * b if floor is None else floor
    if floor > 0:  # the gate widens while the calls run ahead of the rollouts
        calls = min(calls, budget / floor)
    fewest = low * k * per_child * first
    most = min(
        high * k * per_child * (first + samples * retries), _MAX_OVER_POINT * max(1, round(calls))
    )
    return {
        "max_rollouts": budget,
        "rollouts_max": budget,
        "seed_evaluation": n_val,
        "proposals_per_iteration": k,
        # under one: a fraction (0.5), not "~0" beside the reflection calls it forecasts
        "iterations": round(point) if point >= 1 else round(point, 1),
        "reflection_calls": round(calls),
        "reflection_calls_min": round(min(fewest, calls)),
        "reflection_calls_max": round(most),
        "assumed_accept_rate": ASSUMED_ACCEPT_RATE,
        "assumed_unusable": round(u, 3),
        # the keys every spec's estimate shares (see policyopt.registry.Estimator)
        "rollouts": budget,
        "lm_calls": round(calls),
        "lm_calls_min": round(min(fewest, calls)),
        "lm_calls_max": round(most),
        "why_a_range": (
            "reflection calls depend on how many proposals pass the minibatch gate (each one "
            "accepted pays a valset evaluation) and how many answers are unusable (each is "
            "re-asked); duplicate proposals cost no rollout, so a model that repeats itself "
            "makes more calls; a run ends sooner at a perfect score or a stall"
        ),
    }
