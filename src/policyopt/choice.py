"""Which candidate an optimizer returns: the best validation mean, or a lower confidence bound.

Returning the max of many noisy validation means overrates the winner on a small valset (the
winner's curse: measured on the local model, MIPRO on ``extract_phone`` chose a prompt that won
on validation by one example of 30, 0.133 -> 0.167, and lost on test, 0.125 -> 0.075). The
``lower_bound`` rule asks a candidate to beat the seed prompt by more than noise on the paired
per-example scores. GEPA and MIPRO share it (``final_choice``, ``final_z``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

__all__ = [
    "FINAL_CHOICES",
    "FinalChoice",
    "best_mean",
    "final_candidate",
    "final_choice_field",
    "final_z_field",
    "gain_lower_bound",
]

#: the rules ``final_choice`` accepts
FINAL_CHOICES = ("mean", "lower_bound")
FinalChoice = Literal["mean", "lower_bound"]


def final_choice_field() -> Any:
    """The ``final_choice`` setting of an optimizer's settings model."""
    return Field(
        "mean",
        description="which candidate is returned: 'mean' (the best validation mean) or "
        "'lower_bound' (the best lower confidence bound of the paired gain over the seed: a "
        "candidate must beat the seed by more than final_z standard errors to replace it, which "
        "guards a small valset against the winner's curse; see policyopt.choice)",
    )


def final_z_field() -> Any:
    """The ``final_z`` setting of an optimizer's settings model."""
    return Field(
        1.0, ge=0.0, description="standard errors subtracted by final_choice='lower_bound'"
    )


def best_mean(aggregate: Mapping[int, float]) -> int:
    """Highest mean validation score; ties go to the earliest candidate."""
    return min(aggregate, key=lambda c: (-aggregate[c], c))


def gain_lower_bound(
    scores: Mapping[str, float], seed_scores: Mapping[str, float], z: float
) -> float:
    """Mean gain over the seed on the examples both were scored on, minus ``z`` standard
    errors of that paired gain (0 for the seed itself or when nothing is shared)."""
    shared = [k for k in scores if k in seed_scores]
    if not shared:
        return 0.0
    diffs = [scores[k] - seed_scores[k] for k in shared]
    mean = math.fsum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean
    var = math.fsum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return mean - z * math.sqrt(var / len(diffs))


def final_candidate(
    rule: str, val_scores: Sequence[Mapping[str, float]], aggregate: Mapping[int, float], z: float
) -> int:
    """The candidate a run returns. ``"mean"``: the highest mean validation score.
    ``"lower_bound"``: the highest lower confidence bound of the paired gain over the seed
    (candidate 0), so a candidate must beat the seed by more than noise to replace it; the
    winner's curse of picking the max of many noisy means on a small valset is what it guards
    against; a candidate that wins on one example only never replaces the seed. Ties go to the
    higher mean, then the earliest candidate."""
    if rule == "mean":
        return best_mean(aggregate)
    if rule != "lower_bound":
        raise ValueError(f"unknown final_choice {rule!r}: use 'mean' or 'lower_bound'")
    seed = val_scores[0]

    def wins(c: int) -> int:
        return sum(1 for k, v in val_scores[c].items() if k in seed and v > seed[k] + 1e-12)

    bounds = {c: gain_lower_bound(val_scores[c], seed, z) if c else 0.0 for c in aggregate}
    # a candidate replaces the seed only with a bound above 0 and at least two examples won:
    # one win among ties has a bound of exactly 0 at z=1 (and no spread on one shared example)
    eligible = [c for c in aggregate if c == 0 or (bounds[c] > 1e-9 and wins(c) >= 2)]
    return min(eligible or aggregate, key=lambda c: (-round(bounds[c], 12), -aggregate[c], c))
