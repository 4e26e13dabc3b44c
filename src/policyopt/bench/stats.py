"""Paired statistics for ablations: each variant against a baseline on the same cells.

A pair is the variant's and the baseline's held-out test score on the same (task, seed, budget)
cell, so task difficulty and seed luck cancel. Per variant: the mean difference with a seeded
95% bootstrap confidence interval, win/tie/loss counts, and a Wilcoxon signed-rank test (an exact
sign test when scipy is missing); p-values are Holm-corrected across the variants compared with
one baseline. A difference counts as *resolved* only when the Holm p is below 0.05 and the
interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from policyopt.bench.records import CellRecord

__all__ = [
    "TIE",
    "Comparison",
    "bootstrap_ci",
    "compare",
    "holm",
    "paired_differences",
    "paired_test",
    "win_tie_loss",
]

#: differences this small are ties
TIE = 1e-9
#: fewer non-zero pairs than this and a two-sided signed-rank test cannot reach p < 0.05
MIN_PAIRS_FOR_POWER = 6
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """One variant against its baseline over their paired cells."""

    variant: str
    baseline: str
    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    test: Literal["wilcoxon", "sign", "none"]
    p: float
    p_holm: float
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready row."""
        return asdict(self)


def paired_differences(
    records: Sequence[CellRecord], variant: str, baseline: str
) -> list[tuple[tuple[str, int, int], float]]:
    """``variant`` minus ``baseline`` optimized test score on every (task, seed, budget) cell
    both finished, in cell order."""
    scores: dict[tuple[str, str, int, int], float] = {}
    for r in records:
        if r.status == "ok" and r.optimized_test is not None:
            scores[(r.key.optimizer, r.key.task, r.key.seed, r.key.budget)] = r.optimized_test.score
    out = []
    for (name, task, seed, budget), score in sorted(scores.items()):
        other = scores.get((baseline, task, seed, budget))
        if name == variant and other is not None:
            out.append(((task, seed, budget), score - other))
    return out


def bootstrap_ci(
    diffs: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference (seeded: the same numbers give the
    same interval). One difference gives a zero-width interval; none gives NaNs."""
    values = np.asarray(diffs, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1 or np.all(values == values[0]):
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def win_tie_loss(diffs: Sequence[float], tie: float = TIE) -> tuple[int, int, int]:
    """How many differences are above ``tie``, within it, and below ``-tie``."""
    wins = sum(d > tie for d in diffs)
    losses = sum(d < -tie for d in diffs)
    return wins, len(diffs) - wins - losses, losses


def paired_test(diffs: Sequence[float], tie: float = TIE) -> tuple[str, float]:
    """Two-sided p-value that the differences are centred on 0, and the test's name.

    Wilcoxon signed-rank (scipy, ``zero_method="zsplit"``: ties stay in and count half each
    way, which is conservative); without scipy, the exact sign test on the non-tied pairs.
    All ties: p = 1. No pairs: NaN.
    """
    values = [0.0 if abs(d) <= tie else float(d) for d in diffs]
    if not values:
        return "none", math.nan
    if all(v == 0.0 for v in values):
        return "wilcoxon", 1.0
    try:
        from scipy import stats
    except ImportError:
        return "sign", _sign_test(values)
    has_zeros = any(v == 0.0 for v in values)
    # the exact distribution assumes no zeros; with zeros scipy would warn and switch itself
    method = "approx" if has_zeros or len(values) > 50 else "exact"
    result = stats.wilcoxon(values, zero_method="zsplit", method=method)
    p = float(result.pvalue)
    return "wilcoxon", 1.0 if math.isnan(p) else min(1.0, p)


def _sign_test(values: Sequence[float]) -> float:
    """Exact two-sided binomial sign test on the non-zero values."""
    plus = sum(v > 0 for v in values)
    n = sum(v != 0 for v in values)
    if n == 0:
        return 1.0
    k = min(plus, n - plus)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error), in the input order; NaNs stay NaN and
    do not count towards the family size."""
    indexed = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def _verdict(n: int, nonzero: int, low: float, high: float, p_holm: float) -> str:
    if n == 0:
        return "no paired cells"
    if not math.isnan(p_holm) and p_holm < ALPHA and (low > 0 or high < 0):
        return "resolved: better" if low > 0 else "resolved: worse"
    if nonzero < MIN_PAIRS_FOR_POWER:
        return f"not resolved ({nonzero} non-tied pairs: too few for p < {ALPHA})"
    return "not resolved"


def compare(
    records: Sequence[CellRecord],
    variants: Sequence[str],
    baseline: str,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[Comparison]:
    """Each of ``variants`` against ``baseline`` on their paired cells, Holm across them."""
    rows = []
    for variant in variants:
        diffs = [d for _, d in paired_differences(records, variant, baseline)]
        low, high = bootstrap_ci(diffs, resamples=resamples, seed=seed)
        test, p = paired_test(diffs)
        rows.append((variant, diffs, low, high, test, p))
    adjusted = holm([p for *_, p in rows])
    out = []
    for (variant, diffs, low, high, test, p), p_holm in zip(rows, adjusted, strict=True):
        wins, ties, losses = win_tie_loss(diffs)
        out.append(
            Comparison(
                variant=variant,
                baseline=baseline,
                n=len(diffs),
                mean_diff=float(np.mean(diffs)) if diffs else math.nan,
                ci_low=low,
                ci_high=high,
                wins=wins,
                ties=ties,
                losses=losses,
                test=test,  # type: ignore[arg-type]
                p=p,
                p_holm=p_holm,
                verdict=_verdict(len(diffs), wins + losses, low, high, p_holm),
            )
        )
    return out
