"""The report's per-cell tests and task-clustered grid means."""

from __future__ import annotations

import pytest
from scipy import stats as sp

from policyopt.bench.evidence import clustered_gains
from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.bench.report import markdown_report


def _cell(task: str, seed: int, fixed: int, broken: int, n: int = 20) -> CellRecord:
    """A cell whose optimized prompt fixes ``fixed`` and breaks ``broken`` of ``n`` items."""
    before = {f"e{i}": 1.0 if fixed <= i < fixed + broken else 0.0 for i in range(n)}
    after = {f"e{i}": 1.0 if i < fixed else 0.0 for i in range(n)}
    return CellRecord(
        key=CellKey(task=task, optimizer="gepa", seed=seed, budget=10, fingerprint="x"),
        status="ok",
        baseline_test=SplitScore(score=sum(before.values()) / n, n_examples=n, per_example=before),
        optimized_test=SplitScore(score=sum(after.values()) / n, n_examples=n, per_example=after),
    )


def test_report_shows_per_cell_tests_and_clustered_means() -> None:
    records = [_cell("a", 0, 8, 0), _cell("a", 1, 6, 1), _cell("b", 0, 2, 1), _cell("b", 1, 3, 0)]
    text = markdown_report(records)
    assert "## Per-cell tests" in text and "## Grid means" in text
    p = sp.binomtest(6, 7, 0.5).pvalue  # seed 1 of task a: 6 fixed, 1 broken
    assert "| a | gepa | 1 | 20 | +0.250 " in text and f"| 6/1 | mcnemar exact | {p:.3f} |" in text
    assert "its own test says better in 1/4 cells" in text  # only 8/0 reaches p < 0.05
    n, tasks, mean, low, high = clustered_gains(records, "gepa")
    gains = [0.4, 0.25, 0.05, 0.15]
    assert (n, tasks) == (4, 2) and mean == pytest.approx(sum(gains) / 4)
    half = sp.t.ppf(0.975, 1) * abs(0.325 - 0.1) / 2  # sd of the two task means / sqrt(2)
    assert (low, high) == pytest.approx((mean - half, mean + half))
    assert f"[{low:+.3f}, {high:+.3f}]" in text
