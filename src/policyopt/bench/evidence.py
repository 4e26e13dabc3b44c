"""The report's evidence sections: a paired test per cell, and grid means clustered by task.

Per cell, the optimized prompt against the seed prompt on the same stored test examples
(:func:`policyopt.bench.stats.cell_test`); per optimizer, the mean gain over its cells with an
interval that treats a task's seeds as one cluster (they share its data and test set), so a grid
of a few tasks cannot claim the precision of many independent cells.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from policyopt.bench.records import CellRecord
from policyopt.bench.stats import ALPHA, cell_test, clustered_mean_ci

__all__ = ["clustered_gains", "grid_means_section", "per_cell_section"]


def _ok(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.status == "ok" and r.gain is not None]


def _num(value: float, fmt: str = "+.3f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def clustered_gains(
    records: Sequence[CellRecord], optimizer: str
) -> tuple[int, int, float, float, float]:
    """(cells, tasks, mean gain, low, high) of ``optimizer``'s finished cells, the 95% interval
    cluster-robust over tasks."""
    cells = [r for r in _ok(records) if r.key.optimizer == optimizer]
    gains = [r.gain or 0.0 for r in cells]
    tasks = [r.key.task for r in cells]
    mean, low, high = clustered_mean_ci(gains, tasks)
    return len(cells), len(set(tasks)), mean, low, high


def grid_means_section(records: Sequence[CellRecord], optimizers: Sequence[str]) -> str:
    """The *Grid means* table: each optimizer's mean gain with its task-clustered interval."""
    names = [o for o in optimizers if any(r.key.optimizer == o for r in _ok(records))]
    if not names:
        return ""
    out = io.StringIO()
    out.write("\n## Grid means\n\n")
    out.write(
        "Mean gain (optimized minus seed prompt test score) over each optimizer's cells with a "
        "95% cluster-robust t interval over tasks (CR1, tasks - 1 degrees of freedom): a "
        "task's seeds share its data and test set, so they are not independent cells. One "
        "task: no interval.\n\n"
    )
    out.write("| optimizer | cells | tasks | mean gain [95% CI, clustered by task] |\n")
    out.write("|---|---|---|---|\n")
    for name in names:
        n, tasks, mean, low, high = clustered_gains(records, name)
        out.write(f"| {name} | {n} | {tasks} | {_num(mean)} [{_num(low)}, {_num(high)}] |\n")
    return out.getvalue()


def per_cell_section(records: Sequence[CellRecord]) -> str:
    """The *Per-cell tests* table (cells whose records hold per-example test scores)."""
    rows = [(r, t) for r in _ok(records) if (t := cell_test(r)) is not None]
    if not rows:
        return ""
    out = io.StringIO()
    out.write("\n## Per-cell tests\n\n")
    out.write(
        "Each cell's optimized prompt against the seed prompt on the same test examples. "
        "*diff*: mean per-example difference with a 95% t interval; *+/-*: examples improved / "
        "worsened; *p*: two-sided exact McNemar test for 0/1 scores (exact signed-rank test "
        f"otherwise); *verdict*: better or worse at p < {ALPHA} (per cell, not corrected for "
        "the number of cells).\n\n"
    )
    out.write("| task | optimizer | seed | n | diff [95% CI] | +/- | test | p | verdict |\n")
    out.write("|---|---|---|---|---|---|---|---|---|\n")
    tally: dict[str, list[int]] = {}
    for record, test in rows:
        key = record.key
        p = "<0.001" if test.p < 0.001 else f"{test.p:.3f}"
        out.write(
            f"| {key.task} | {key.optimizer} | {key.seed} | {test.n} | "
            f"{_num(test.mean_diff)} [{_num(test.ci_low)}, {_num(test.ci_high)}] | "
            f"{test.improved}/{test.worsened} | {test.test} | {p} | {test.verdict} |\n"
        )
        counts = tally.setdefault(key.optimizer, [0, 0, 0])
        counts[0] += 1
        counts[1] += test.verdict == "better"
        counts[2] += test.verdict == "worse"
    out.write("\n")
    for name, (n, better, worse) in tally.items():
        out.write(f"- {name}: its own test says better in {better}/{n} cells, worse in {worse}\n")
    return out.getvalue()
