"""policyopt.bench.stats against exact answers computed by hand or by brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.bench.stats import (
    bootstrap_ci,
    cell_test,
    clustered_mean_ci,
    clustered_ratio_ci,
    compare,
    mean_ci,
    paired_test,
    sign_test,
    signed_rank_test,
)


def _brute_force_signed_rank(values: list[float]) -> float:
    """Two-sided p of the positive mid-rank sum over every sign flip of the non-zero values."""
    nonzero = [v for v in values if v != 0]
    magnitudes = [abs(v) for v in nonzero]
    ranks = [
        sum(m < x for m in magnitudes) + (sum(m == x for m in magnitudes) + 1) / 2
        for x in magnitudes
    ]
    total = sum(ranks)
    observed = sum(r for r, v in zip(ranks, nonzero, strict=True) if v > 0)
    hits = 0
    for signs in itertools.product((0, 1), repeat=len(ranks)):
        t = sum(r for r, s in zip(ranks, signs, strict=True) if s)
        hits += abs(t - total / 2) >= abs(observed - total / 2) - 1e-9
    return hits / 2 ** len(ranks)


def test_tied_samples_get_exact_p_values() -> None:
    # 4 same-sign pairs + 5 ties: P(all 4 signs agree) = 2 / 2**4; scipy's approximation: 0.070
    assert paired_test([0.1] * 4 + [0.0] * 5) == ("signed-rank exact", pytest.approx(0.125))
    # 5 + 4: 2 / 2**5 (the approximation said 0.0365, below 0.05)
    assert paired_test([0.1] * 5 + [0.0] * 4) == ("signed-rank exact", pytest.approx(0.0625))
    # the same with losses, and with float noise in the ties and magnitudes
    assert paired_test([-0.25] * 5 + [1e-12] * 4)[1] == pytest.approx(0.0625)
    assert paired_test([0.7 - 0.6, 0.3 - 0.2, 0.1, 0.1, 0.0])[1] == pytest.approx(0.125)


@pytest.mark.parametrize("seed", range(6))
def test_signed_rank_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = [float(v) for v in rng.choice([-0.2, -0.1, 0.0, 0.1, 0.2, 0.3], size=11)]
    method, p = signed_rank_test(values)
    assert method == "exact" and p == pytest.approx(_brute_force_signed_rank(values))


def test_signed_rank_agrees_with_scipy_where_scipy_is_exact_or_large() -> None:
    rng = np.random.default_rng(3)
    distinct = rng.normal(0.1, 0.3, 14)  # no ties: scipy's exact distribution applies
    assert signed_rank_test(distinct)[1] == pytest.approx(
        sp.wilcoxon(distinct, method="exact").pvalue
    )
    many = np.round(rng.normal(0.1, 0.3, 80) * 10) / 10  # above MAX_EXACT: the normal approx
    method, p = signed_rank_test(many)
    expected = sp.wilcoxon(many, zero_method="wilcox", correction=False, method="approx").pvalue
    assert method == "normal" and p == pytest.approx(expected)


def test_sign_test_is_exact_mcnemar() -> None:
    # 7 discordant pairs improved, 1 worsened
    diffs = [1.0] * 7 + [-1.0] + [0.0] * 30
    assert sign_test(diffs) == pytest.approx(sp.binomtest(7, 8, 0.5).pvalue)
    assert sign_test(diffs) == pytest.approx(2 * 9 / 256)


def _cell(seed: int, opt: float, *, task: str = "t", name: str = "v") -> CellRecord:
    return CellRecord(
        key=CellKey(task=task, optimizer=name, seed=seed, budget=10, fingerprint="x"),
        status="ok",
        baseline_test=SplitScore(score=0.5, n_examples=10),
        optimized_test=SplitScore(score=opt, n_examples=10),
    )


def test_verdict_never_resolves_what_the_exact_test_cannot() -> None:
    # 5 wins + 4 ties against the baseline: the interval excludes 0, but exact p = 0.0625
    records = [_cell(s, 0.5, name="base") for s in range(9)]
    records += [_cell(s, 0.6 if s < 5 else 0.5) for s in range(9)]
    (row,) = compare(records, ["v"], "base")
    assert row.ci_low > 0 and row.p == pytest.approx(0.0625)
    assert row.verdict.startswith("not resolved")
    # 7 wins + 2 ties: p = 2/128, resolved
    records = [_cell(s, 0.5, name="base") for s in range(9)]
    records += [_cell(s, 0.6 if s < 7 else 0.5) for s in range(9)]
    (row,) = compare(records, ["v"], "base")
    assert row.p == pytest.approx(1 / 64) and row.verdict == "resolved: better"


def test_t_interval_by_hand() -> None:
    low, high, method = mean_ci([0.1, 0.2, 0.3])
    half = sp.t.ppf(0.975, 2) * 0.1 / math.sqrt(3)
    assert method == "t" and (low, high) == pytest.approx((0.2 - half, 0.2 + half))
    assert mean_ci([0.2, 0.2])[:2] == (0.2, 0.2)
    assert all(math.isnan(v) for v in mean_ci([0.3])[:2])  # one cell: no spread to go on


def test_t_interval_covers_near_nominal_at_n9_where_the_percentile_bootstrap_does_not() -> None:
    # per-cell differences of test scores on 40 items: a normal difference on the 1/40 grid,
    # mean 0.1 (on the grid, so rounding keeps it); 1,500 seeded samples of n = 9
    rng = np.random.default_rng(20261207)
    samples = np.round(rng.normal(0.1, 0.2, size=(1500, 9)) * 40) / 40
    t_hits = pct_hits = 0
    for i, sample in enumerate(samples):
        low, high, _ = mean_ci(sample.tolist())
        t_hits += low <= 0.1 <= high
        low, high = bootstrap_ci(sample.tolist(), resamples=1000, seed=i)
        pct_hits += low <= 0.1 <= high
    t_cover, pct_cover = t_hits / len(samples), pct_hits / len(samples)
    # binomial sd of a coverage estimate at 0.95 over 1,500 samples: 0.0056
    assert 0.935 <= t_cover <= 0.965, t_cover
    assert pct_cover < 0.925, pct_cover


def test_clustered_interval_by_hand() -> None:
    # two tasks x three seeds; equal clusters: se = sd(task means) / sqrt(tasks), t with 1 df
    values = [0.1, 0.2, 0.3, 0.5, 0.6, 0.7]
    tasks = ["a", "a", "a", "b", "b", "b"]
    mean, low, high = clustered_mean_ci(values, tasks)
    half = sp.t.ppf(0.975, 1) * (np.std([0.2, 0.6], ddof=1) / math.sqrt(2))
    assert mean == pytest.approx(0.4) and (low, high) == pytest.approx((0.4 - half, 0.4 + half))
    # wider than treating the six cells as independent
    assert high - low > 2 * (mean_ci(values)[1] - mean)
    assert math.isnan(clustered_mean_ci([0.1, 0.2], ["a", "a"])[1])  # one task: no interval


def _scored(before: list[float], after: list[float]) -> CellRecord:
    ids = [f"e{i}" for i in range(len(before))]
    return CellRecord(
        key=CellKey(task="t", optimizer="v", seed=0, budget=10, fingerprint="x"),
        status="ok",
        baseline_test=SplitScore(
            score=float(np.mean(before)),
            n_examples=len(before),
            per_example=dict(zip(ids, before, strict=True)),
        ),
        optimized_test=SplitScore(
            score=float(np.mean(after)),
            n_examples=len(after),
            per_example=dict(zip(ids, after, strict=True)),
        ),
    )


def test_cell_test_mcnemar_on_binary_scores() -> None:
    # 40 items: 8 fixed, 1 broken, 31 unchanged
    before = [0.0] * 8 + [1.0] + [1.0] * 10 + [0.0] * 21
    after = [1.0] * 8 + [0.0] + [1.0] * 10 + [0.0] * 21
    result = cell_test(_scored(before, after))
    assert result is not None and result.test == "mcnemar exact"
    assert (result.n, result.improved, result.worsened) == (40, 8, 1)
    assert result.p == pytest.approx(sp.binomtest(8, 9, 0.5).pvalue)
    assert result.verdict == "better" and result.ci_low > 0
    # 4 fixed, 1 broken: McNemar p = 0.375, not resolved although the mean rose
    before = [0.0] * 4 + [1.0] + [0.0] * 35
    after = [1.0] * 4 + [0.0] + [0.0] * 35
    result = cell_test(_scored(before, after))
    assert result is not None and result.p == pytest.approx(0.375)
    assert result.verdict == "not resolved"


def test_cell_test_signed_rank_on_graded_scores_and_none_without_examples() -> None:
    result = cell_test(_scored([0.0, 0.5, 0.2, 0.0], [0.5, 0.5, 0.7, 0.25]))
    assert result is not None and result.test == "signed-rank exact"
    assert result.p == pytest.approx(_brute_force_signed_rank([0.5, 0.0, 0.5, 0.25]))
    assert cell_test(_cell(0, 0.6)) is None  # an old record without per-example scores


def test_fieller_ratio_by_hand() -> None:
    # two tasks x two seeds; at each bound the clustered t statistic of a - r b is +-q
    a, b, tasks = [0.5, 0.7, 0.2, 0.4], [0.2, 0.3, 0.1, 0.2], ["x", "x", "y", "y"]
    ratio, low, high = clustered_ratio_ci(a, b, tasks, level=0.5)
    assert ratio == pytest.approx(0.45 / 0.2)
    for r in (low, high):  # 0 sits on an end of the clustered interval of a - r b
        diffs = [x - r * y for x, y in zip(a, b, strict=True)]
        mean, dlow, _ = clustered_mean_ci(diffs, tasks, level=0.5)
        assert abs(mean) == pytest.approx(mean - dlow)
    assert low < ratio < high
    # a denominator whose interval holds 0: the ratio is unbounded
    _, low, high = clustered_ratio_ci(a, [0.2, -0.1, 0.1, -0.15], tasks)
    assert (low, high) == (-math.inf, math.inf)


def test_clustered_intervals_cover_near_nominal_with_four_tasks() -> None:
    # 4 tasks x 5 seeds; seeds of a task share a task effect, and the two optimizers' task
    # effects correlate; true means 0.45 and 0.2, ratio 2.25; 800 seeded grids
    rng = np.random.default_rng(7)
    tasks = np.repeat(np.arange(4), 5).tolist()
    mean_hits = ratio_hits = 0
    for _ in range(800):
        ua, ub = rng.normal(0, 0.1, 4), rng.normal(0, 0.05, 4)
        a = (0.45 + ua[:, None] + rng.normal(0, 0.1, (4, 5))).ravel().tolist()
        b = (0.2 + ub[:, None] + 0.3 * ua[:, None] + rng.normal(0, 0.1, (4, 5))).ravel().tolist()
        _, low, high = clustered_mean_ci(a, tasks)
        mean_hits += low <= 0.45 <= high
        _, low, high = clustered_ratio_ci(a, b, tasks)
        ratio_hits += low <= 2.25 <= high
    # binomial sd of a coverage estimate at 0.95 over 800 grids: 0.0077
    assert 0.925 <= mean_hits / 800 <= 0.975, mean_hits / 800
    assert 0.925 <= ratio_hits / 800 <= 0.975, ratio_hits / 800
