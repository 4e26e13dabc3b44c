"""The benchmark's charts, drawn with matplotlib (``pip install 'policyopt[bench]'``).

- bars: per task, the seed prompt's and each optimizer's optimized test score (the LangProBe chart);
- curves: best validation score known against rollouts spent, per optimizer and seed;
- cost: test score against what the search spent (USD when priced, else LM tokens);
- forest: per baseline, each variant's mean test-score difference with its 95% interval.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policyopt.bench.records import CellRecord
from policyopt.bench.stats import Comparison
from policyopt.errors import MissingDependencyError

__all__ = ["bars", "cost", "curves", "forest"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(
            "Plots need matplotlib: pip install 'policyopt[bench]' (or run with plots off)."
        ) from exc
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _ok(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.status == "ok" and r.optimized_test and r.baseline_test]


def _base(record: CellRecord) -> float:
    return record.baseline_test.score if record.baseline_test else float("nan")


def _opt(record: CellRecord) -> float:
    return record.optimized_test.score if record.optimized_test else float("nan")


def _names(records: Sequence[CellRecord]) -> tuple[list[str], list[str]]:
    tasks = sorted({r.key.task for r in records})
    optimizers: dict[str, None] = {}
    for r in records:
        optimizers.setdefault(r.key.optimizer, None)
    return tasks, list(optimizers)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def bars(records: Sequence[CellRecord], path: Path) -> Path:
    """Grouped bars per task: seed prompt, then each optimizer (mean over seeds, std whiskers)."""
    plt = _pyplot()
    ok = _ok(records)
    tasks, optimizers = _names(ok)
    series = ["seed prompt", *optimizers]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(tasks) * len(series) / 3), 4.0))
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        means, stds = [], []
        for task in tasks:
            if name == "seed prompt":
                # one baseline per task: every cell of the task carries the same one
                values = [_base(r) for r in ok if r.key.task == task][:1]
            else:
                values = [_opt(r) for r in ok if r.key.task == task and r.key.optimizer == name]
            means.append(statistics.fmean(values) if values else 0.0)
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(tasks))]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("test score")
    ax.set_ylim(0, 1.05)
    ax.set_title("Seed vs optimized prompt: test score, mean ± std over seeds", fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(series), 3))
    return _save(fig, path)


def curves(records: Sequence[CellRecord], path: Path) -> Path:
    """Per task, the best validation score known after each rollout count (one line per seed)."""
    plt = _pyplot()
    ok = _ok(records)
    tasks, optimizers = _names(ok)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.6))
    axes = axes if hasattr(axes, "__len__") else [axes]
    colors = {name: f"C{i}" for i, name in enumerate(optimizers)}
    for ax, task in zip(axes, tasks, strict=False):
        labelled: set[str] = set()
        for r in ok:
            if r.key.task != task or not r.curve:
                continue
            xs = [x for x, _ in r.curve] + [r.rollouts]
            ys = [y for _, y in r.curve] + [r.curve[-1][1]]
            label = None if r.key.optimizer in labelled else r.key.optimizer
            labelled.add(r.key.optimizer)
            ax.step(xs, ys, where="post", color=colors[r.key.optimizer], alpha=0.7, label=label)
        ax.set_title(task)
        ax.set_xlabel("rollouts spent")
        ax.set_ylabel("best validation score")
        if labelled:
            ax.legend(fontsize=8)
    return _save(fig, path)


def cost(records: Sequence[CellRecord], path: Path) -> Path:
    """Test score against the search's spend: USD when every cell is priced, else LM tokens."""
    plt = _pyplot()
    ok = _ok(records)
    tasks, optimizers = _names(ok)
    priced = ok and all((r.cost_usd or 0.0) > 0 for r in ok)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    markers = "os^Dv<>"
    points: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in ok:
        spend = float(r.cost_usd or 0.0) if priced else float(r.tokens)
        points[(r.key.optimizer, r.key.task)].append((spend, _opt(r)))
    for (name, task), xy in sorted(points.items()):
        i, k = optimizers.index(name), tasks.index(task)
        ax.scatter(
            [x for x, _ in xy],
            [y for _, y in xy],
            color=f"C{i}",
            marker=markers[k % len(markers)],
            label=f"{name} / {task}",
            alpha=0.8,
        )
    ax.set_xlabel("search cost (USD)" if priced else "search LM tokens (task + optimizer model)")
    ax.set_ylabel("optimized test score")
    ax.set_title("Score against cost, one point per cell")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def forest(comparisons: Sequence[Comparison], path: Path) -> Path:
    """A forest plot: one row per variant, its mean difference from the baseline as a dot and
    the 95% t interval as a bar, a line at 0; resolved rows drawn in colour."""
    plt = _pyplot()
    rows = [c for c in comparisons if c.n > 0]
    baseline = comparisons[0].baseline if comparisons else ""
    fig, ax = plt.subplots(figsize=(10.0, 1.4 + 0.45 * max(1, len(rows))))
    for y, c in enumerate(reversed(rows)):
        color = (
            "C2" if c.verdict.endswith("better") else "C3" if c.verdict.endswith("worse") else "C0"
        )
        ax.errorbar(
            [c.mean_diff],
            [y],
            xerr=[[c.mean_diff - c.ci_low], [c.ci_high - c.mean_diff]],
            fmt="o",
            color=color,
            capsize=4,
        )
        ax.annotate(
            f"n={c.n}  W/T/L {c.wins}/{c.ties}/{c.losses}  p(Holm)={c.p_holm:.3g}",
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            fontsize=7,
        )
    ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    reach = max([abs(v) for c in rows for v in (c.ci_low, c.ci_high)] + [0.01])
    ax.set_xlim(-1.15 * reach, 1.15 * reach)  # 0 in the middle: the side tells better/worse
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([c.variant for c in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.6, max(1, len(rows)) - 0.4)
    ax.set_xlabel(f"test score minus {baseline}'s (mean, 95% t CI)")
    ax.set_title(f"Ablations against {baseline}, paired on (task, seed)", fontsize=10)
    return _save(fig, path)
