"""Paired statistics for ablations and per-cell comparisons: exact tests, stated coverage.

A pair is the variant's and the baseline's held-out test score on the same (task, seed, budget)
cell, so task difficulty and seed luck cancel. Per variant: the mean difference with a 95%
Student-t interval (exact coverage for normal differences; near nominal at n = 9 in the seeded
simulation of ``tests/unit/bench/test_stats.py``, where the percentile bootstrap falls short),
win/tie/loss counts and an exact two-sided test: the Wilcoxon signed-rank test conditional on the
ties (zero differences dropped, tied magnitudes share mid-ranks), its null distribution counted
exactly for up to :data:`MAX_EXACT` non-zero pairs (a tie-corrected normal approximation above).
p-values are Holm-corrected across the variants compared with one baseline. A difference counts
as *resolved* only when the Holm p is below 0.05, the interval excludes 0 and there are enough
non-tied pairs for the exact test to reach 0.05 at all.

Per cell (:func:`cell_test`): the optimized prompt against the seed prompt on the same test
examples (exact McNemar for 0/1 scores, the exact signed-rank test otherwise). Grid means
(:func:`clustered_mean_ci`): a task's seeds share its data and test set, so they are not
independent; the interval treats tasks as clusters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from policyopt.bench.records import CellRecord

__all__ = [
    "MAX_EXACT",
    "TIE",
    "CellTest",
    "Comparison",
    "bootstrap_ci",
    "cell_test",
    "clustered_mean_ci",
    "clustered_ratio_ci",
    "compare",
    "holm",
    "mean_ci",
    "paired_differences",
    "paired_test",
    "sign_test",
    "signed_rank_test",
    "win_tie_loss",
]

#: differences this small are ties
TIE = 1e-9
#: fewer non-zero pairs than this and a two-sided signed-rank test cannot reach p < 0.05
#: (its smallest p is 2 / 2**pairs, ties or not)
MIN_PAIRS_FOR_POWER = 6
ALPHA = 0.05
#: up to this many non-zero pairs the signed-rank null distribution is counted exactly
MAX_EXACT = 50
TestName = Literal[
    "signed-rank exact", "signed-rank normal", "mcnemar exact", "sign", "none", "wilcoxon"
]


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
    test: TestName
    p: float
    p_holm: float
    verdict: str
    ci_method: str = "t"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready row."""
        return asdict(self)


def paired_differences(
    records: Sequence[CellRecord], variant: str, baseline: str
) -> list[tuple[tuple[str, int, int], float]]:
    """``variant`` minus ``baseline`` optimized test score on every (task, seed, budget) cell
    both finished in the same run (code and model files, ``CellKey.run``), in cell order."""
    scores: dict[tuple[str, str, int, int, str], float] = {}
    for r in records:
        if r.status == "ok" and r.optimized_test is not None:
            k = r.key
            scores[(k.optimizer, k.task, k.seed, k.budget, k.run)] = r.optimized_test.score
    out = []
    for (name, task, seed, budget, run), score in sorted(scores.items()):
        other = scores.get((baseline, task, seed, budget, run))
        if name == variant and other is not None:
            out.append(((task, seed, budget), score - other))
    return out


def bootstrap_ci(
    diffs: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean difference (seeded: the same numbers give the
    same interval). It covers less than ``level`` at small n (see :func:`mean_ci`); kept as the
    fallback without scipy and for comparison. One value or all equal: zero width; none: NaNs."""
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


def _t_quantile(level: float, df: int) -> float | None:
    """The two-sided Student-t quantile, or None without scipy."""
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(stats.t.ppf(0.5 + level / 2, df))


def mean_ci(diffs: Sequence[float], *, level: float = 0.95) -> tuple[float, float, str]:
    """Student-t interval of the mean (low, high, method).

    Coverage is exact for normal values and near ``level`` for the bounded, discrete test-score
    differences of a grid at n = 9 (the seeded simulation in the tests). Fewer than two values:
    NaNs (one cell says nothing about its spread); all equal: zero width. Without scipy, the
    percentile bootstrap, named ``bootstrap`` in the method."""
    values = np.asarray(diffs, dtype=float)
    if values.size < 2:
        return math.nan, math.nan, "t"
    mean = float(values.mean())
    if np.all(values == values[0]):
        return mean, mean, "t"
    q = _t_quantile(level, values.size - 1)
    if q is None:
        low, high = bootstrap_ci(values.tolist(), level=level)
        return low, high, "bootstrap"
    half = q * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean - half, mean + half, "t"


def clustered_mean_ci(
    values: Sequence[float], clusters: Sequence[object], *, level: float = 0.95
) -> tuple[float, float, float]:
    """The mean of ``values`` with a cluster-robust t interval (mean, low, high).

    Values of one cluster (a task's cells: its seeds share one task and one test set) are not
    independent: the standard error sums residuals per cluster (CR1) and the quantile has
    clusters - 1 degrees of freedom, so few tasks give a wide interval, as they should. Fewer
    than two clusters: the mean with NaN bounds."""
    if len(values) != len(clusters):
        raise ValueError("values and clusters differ in length")
    if not values:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    sums: dict[object, float] = {}
    for value, cluster in zip(values, clusters, strict=True):
        sums[cluster] = sums.get(cluster, 0.0) + (float(value) - mean)
    g = len(sums)
    if g < 2:
        return mean, math.nan, math.nan
    variance = g / (g - 1) * sum(s * s for s in sums.values()) / len(values) ** 2
    q = _t_quantile(level, g - 1)
    if q is None:
        q = 1.959963984540054  # no scipy: the normal quantile (narrower than t)
    half = q * math.sqrt(variance)
    return mean, mean - half, mean + half


def clustered_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    clusters: Sequence[object],
    *,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The ratio of two means over the same cells (e.g. one optimizer's mean gain over a peer's,
    paired by (task, seed)) with Fieller's interval (ratio, low, high).

    The means' variances and covariance are cluster-robust over ``clusters`` (CR1, as in
    :func:`clustered_mean_ci`), the quantile Student-t with clusters - 1 degrees of freedom.
    When the denominator's mean is not distinguishable from 0 at ``level`` the interval is
    unbounded: (ratio, -inf, inf)."""
    if not (len(numerator) == len(denominator) == len(clusters)):
        raise ValueError("numerator, denominator and clusters differ in length")
    if not numerator:
        return math.nan, math.nan, math.nan
    a, b = float(np.mean(numerator)), float(np.mean(denominator))
    ratio = a / b if b != 0 else math.nan
    sums: dict[object, list[float]] = {}
    for x, y, cluster in zip(numerator, denominator, clusters, strict=True):
        pair = sums.setdefault(cluster, [0.0, 0.0])
        pair[0] += float(x) - a
        pair[1] += float(y) - b
    g, n = len(sums), len(numerator)
    if g < 2:
        return ratio, math.nan, math.nan
    scale = g / (g - 1) / n**2
    vaa = scale * sum(x * x for x, _ in sums.values())
    vbb = scale * sum(y * y for _, y in sums.values())
    vab = scale * sum(x * y for x, y in sums.values())
    q = _t_quantile(level, g - 1) or 1.959963984540054
    q2 = q * q
    # (a - r b)^2 <= q^2 (vaa - 2 r vab + r^2 vbb), a quadratic in r
    qa, qb, qc = b * b - q2 * vbb, -2 * (a * b - q2 * vab), a * a - q2 * vaa
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return ratio, -math.inf, math.inf
    root = math.sqrt(disc)
    return ratio, (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


def win_tie_loss(diffs: Sequence[float], tie: float = TIE) -> tuple[int, int, int]:
    """How many differences are above ``tie``, within it, and below ``-tie``."""
    wins = sum(d > tie for d in diffs)
    losses = sum(d < -tie for d in diffs)
    return wins, len(diffs) - wins - losses, losses


def _midranks(magnitudes: Sequence[float], tie: float = TIE) -> list[float]:
    """Ranks 1..n of ``magnitudes``, values within ``tie`` of each other (float noise: 0.7 - 0.6
    against 0.3 - 0.2) sharing the mean of their ranks."""
    order = sorted(range(len(magnitudes)), key=lambda i: magnitudes[i])
    ranks = [0.0] * len(magnitudes)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and magnitudes[order[end + 1]] - magnitudes[order[start]] <= tie:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def signed_rank_test(values: Sequence[float], *, max_exact: int = MAX_EXACT) -> tuple[str, float]:
    """Two-sided Wilcoxon signed-rank p of non-tied ``values`` (zeros are dropped), conditional
    on their ties, and the method: ``exact`` (the null distribution of the positive rank sum
    over all 2**n sign flips, counted on doubled mid-ranks) up to ``max_exact`` values, else
    ``normal`` (tie-corrected variance). No non-zero value: p = 1."""
    nonzero = [float(v) for v in values if v != 0.0]
    if not nonzero:
        return "exact", 1.0
    doubled = [round(2 * r) for r in _midranks([abs(v) for v in nonzero])]
    total = sum(doubled)
    observed = sum(d for d, v in zip(doubled, nonzero, strict=True) if v > 0)
    deviation = abs(observed - total / 2)
    if len(nonzero) > max_exact:
        sd = math.sqrt(sum(d * d for d in doubled) / 4)
        return "normal", min(1.0, math.erfc(deviation / sd / math.sqrt(2)))
    dist = np.zeros(total + 1)
    dist[0] = 1.0
    for d in doubled:  # each rank is positive or not with probability 1/2 under the null
        shifted = np.zeros_like(dist)
        shifted[d:] = dist[:-d]
        dist = 0.5 * (dist + shifted)
    sums = np.arange(total + 1)
    p = float(dist[np.abs(sums - total / 2) >= deviation - 1e-9].sum())
    return "exact", min(1.0, p)


def sign_test(values: Sequence[float]) -> float:
    """Exact two-sided binomial sign test on the non-zero values (on 0/1 paired scores: the
    exact McNemar test on the discordant pairs)."""
    plus = sum(v > 0 for v in values)
    n = sum(v != 0 for v in values)
    if n == 0:
        return 1.0
    k = min(plus, n - plus)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_test(diffs: Sequence[float], tie: float = TIE) -> tuple[TestName, float]:
    """Two-sided p-value that the differences are centred on 0, and the test's name.

    Differences within ``tie`` of 0 are ties. The signed-rank test conditional on the ties
    (:func:`signed_rank_test`): exact up to :data:`MAX_EXACT` non-tied pairs, so 4 wins and
    5 ties give p = 2/16, not a normal approximation's 0.07. All ties: p = 1. No pairs: NaN.
    """
    values = [0.0 if abs(d) <= tie else float(d) for d in diffs]
    if not values:
        return "none", math.nan
    method, p = signed_rank_test(values)
    return ("signed-rank exact" if method == "exact" else "signed-rank normal"), p


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
    """``resolved: better/worse`` only when the exact test can and does resolve (Holm p below
    :data:`ALPHA`) and the interval agrees; else why not."""
    if n == 0:
        return "no paired cells"
    if nonzero < MIN_PAIRS_FOR_POWER:
        return f"not resolved ({nonzero} non-tied pairs: too few for p < {ALPHA})"
    if not math.isnan(p_holm) and p_holm < ALPHA and (low > 0 or high < 0):
        return "resolved: better" if low > 0 else "resolved: worse"
    return "not resolved"


def compare(
    records: Sequence[CellRecord], variants: Sequence[str], baseline: str
) -> list[Comparison]:
    """Each of ``variants`` against ``baseline`` on their paired cells, Holm across them."""
    rows = []
    for variant in variants:
        diffs = [d for _, d in paired_differences(records, variant, baseline)]
        low, high, method = mean_ci(diffs)
        test, p = paired_test(diffs)
        rows.append((variant, diffs, low, high, method, test, p))
    adjusted = holm([p for *_, p in rows])
    out = []
    for (variant, diffs, low, high, method, test, p), p_holm in zip(rows, adjusted, strict=True):
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
                test=test,
                p=p,
                p_holm=p_holm,
                verdict=_verdict(len(diffs), wins + losses, low, high, p_holm),
                ci_method=method,
            )
        )
    return out


@dataclass(frozen=True)
class CellTest:
    """One cell's optimized prompt against its seed prompt on the same test examples."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    improved: int  # examples the optimized prompt scores higher on
    worsened: int  # and lower on
    test: TestName
    p: float

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` at two-sided p < :data:`ALPHA`, else ``not resolved``."""
        if math.isnan(self.p) or self.p >= ALPHA:
            return "not resolved"
        return "better" if self.mean_diff > 0 else "worse"


def cell_test(record: CellRecord) -> CellTest | None:
    """The paired test of one cell over its stored per-example test scores: exact McNemar
    (the sign test on the discordant examples) when every score is 0 or 1, else the exact
    signed-rank test; with the t interval of the mean per-example difference. None when the
    record holds no per-example scores both prompts share."""
    if record.baseline_test is None or record.optimized_test is None:
        return None
    before = record.baseline_test.per_example
    after = record.optimized_test.per_example
    shared = sorted(before.keys() & after.keys())
    if not shared:
        return None
    diffs = [after[k] - before[k] for k in shared]
    binary = all(before[k] in (0.0, 1.0) and after[k] in (0.0, 1.0) for k in shared)
    if binary:
        test: TestName = "mcnemar exact"
        p = sign_test(diffs)
    else:
        test, p = paired_test(diffs)
    low, high, _ = mean_ci(diffs)
    wins, _, losses = win_tie_loss(diffs)
    return CellTest(
        n=len(diffs),
        mean_diff=float(np.mean(diffs)),
        ci_low=low,
        ci_high=high,
        improved=wins,
        worsened=losses,
        test=test,
        p=p,
    )
