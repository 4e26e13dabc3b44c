"""Tables, files and plots from cell records: what ``policyopt bench`` prints and writes.

Everything here reads :class:`~policyopt.bench.records.CellRecord` lists only, so a report can be
rebuilt from a results directory at any time (``policyopt bench --report-only``). When the
records hold variants (``gepa[merge=false]``), an *Ablations* section compares each with its
baseline on paired cells (:mod:`policyopt.bench.stats`), also written as ``ablations.csv`` /
``ablations.json`` with one forest plot per baseline.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policyopt.bench.evidence import grid_means_section, per_cell_section
from policyopt.bench.records import CellRecord, check_one_run, safe_name, write_atomic
from policyopt.bench.stats import Comparison, compare
from policyopt.bench.variants import parse_variant
from policyopt.errors import ConfigError

__all__ = [
    "ablation_plan",
    "ablations",
    "cell_rows",
    "cost_per_point",
    "machine_summary",
    "markdown_report",
    "plot_all",
    "rollouts_to_reach",
    "side_by_side",
    "win_rate",
    "write_report",
]


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ok(records: Sequence[CellRecord]) -> list[CellRecord]:
    return [r for r in records if r.status == "ok"]


def win_rate(records: Sequence[CellRecord], a: str, b: str) -> tuple[float, int] | None:
    """How often ``a``'s optimized test score beats ``b``'s on the same (task, seed, budget);
    a tie counts half. ``None`` when no cell pair matches."""
    by_cell = {
        (r.key.task, r.key.seed, r.key.budget, r.key.run, r.key.optimizer): r for r in _ok(records)
    }
    wins = 0.0
    n = 0
    for (task, seed, budget, run, name), rec in by_cell.items():
        other = by_cell.get((task, seed, budget, run, b))
        if name != a or other is None or rec.optimized_test is None:
            continue
        assert other.optimized_test is not None
        delta = rec.optimized_test.score - other.optimized_test.score
        wins += 1.0 if delta > 1e-12 else 0.5 if abs(delta) <= 1e-12 else 0.0
        n += 1
    return None if n == 0 else (wins / n, n)


def _group(records: Sequence[CellRecord]) -> dict[tuple[str, str], list[CellRecord]]:
    groups: dict[tuple[str, str], list[CellRecord]] = defaultdict(list)
    for record in records:
        groups[(record.key.task, record.key.optimizer)].append(record)
    return groups


def _optimizer_order(records: Sequence[CellRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        seen.setdefault(record.key.optimizer, None)
    return list(seen)


def machine_summary() -> str:
    """One line on where a run happened: CPU, cores, memory, OS and Python."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def markdown_report(
    records: Sequence[CellRecord],
    title: str = "Benchmark results",
    header: str = "",
    *,
    baselines: Sequence[str] | None = None,
) -> str:
    """A markdown table per task, then one over all tasks (mean ± std over seeds), then the
    ablations when there are variants (``baselines``: see :func:`ablation_plan`).

    ``header`` (e.g. the command that made the run and the machine) goes under the title.
    Records of several runs (other code or model files) or one cell under two fingerprints
    are refused (:func:`~policyopt.bench.records.check_one_run`)."""
    check_one_run(records)
    out = io.StringIO()
    out.write(f"# {title}\n\n")
    if header:
        out.write(header.rstrip() + "\n\n")
    if not records:
        out.write("No finished cells.\n")
        return out.getvalue()
    optimizers = _optimizer_order(records)
    tasks = sorted({r.key.task for r in records})
    groups = _group(records)
    out.write(
        "Scores are accuracy on each task's held-out test split. *seed prompt*: the task's naive "
        "prompt; *optimized*: the optimizer's best prompt; *gain*: optimized minus seed prompt, "
        "per seed. Rollouts, LM calls and tokens are the search's (task model / optimizer "
        "model); *search s*: wall time of the search alone. *val-test gap*: the chosen "
        "prompt's validation score minus its test score (how much the choice overfit the "
        "valset; mean over seeds).\n\n"
    )
    for task in tasks:
        out.write(f"## {task}\n\n")
        out.write(
            "| optimizer | seeds | seed prompt | optimized | gain | median gain | best val | "
            "val-test gap | rollouts | LM calls task / opt | tokens | cost $ | search s |\n"
        )
        out.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for name in optimizers:
            cells = groups.get((task, name), [])
            if not cells:
                continue
            ok = _ok(cells)
            failed = len(cells) - len(ok)
            seeds = f"{len(ok)}" + (f" (+{failed} failed)" if failed else "")
            base = [r.baseline_test.score for r in ok if r.baseline_test]
            opt = [r.optimized_test.score for r in ok if r.optimized_test]
            gains = [g for r in ok if (g := r.gain) is not None]
            vals = [r.best_val_score for r in ok if r.best_val_score is not None]
            gaps = [g for r in ok if (g := r.val_test_gap) is not None]
            costs = [c for r in ok if (c := r.cost_usd) is not None]
            out.write(
                f"| {name} | {seeds} | {_mean_std(base)} | {_mean_std(opt)} | "
                f"{_fmt(statistics.fmean(gains) if gains else None, 3)} | "
                f"{_fmt(statistics.median(gains) if gains else None, 3)} | "
                f"{_fmt(statistics.fmean(vals) if vals else None)} | "
                f"{_signed_or_dash(gaps)} | "
                f"{_avg([r.rollouts for r in ok], 0)} | "
                f"{_avg([r.task_usage.calls for r in ok], 0)} / "
                f"{_avg([r.optimizer_usage.calls for r in ok], 0)} | "
                f"{_avg([r.tokens for r in ok], 0)} | "
                f"{_fmt(statistics.fmean(costs) if costs else None, 4)} | "
                f"{_avg([r.search_wall_s for r in ok], 1)} |\n"
            )
        out.write("\n")
        for name in optimizers:
            failures = [r for r in groups.get((task, name), []) if r.status == "failed"]
            for record in failures:
                out.write(f"- {name} seed {record.key.seed} failed: {record.error}\n")
        out.write(_best_prompts(task, optimizers, groups))
    out.write("## Overall\n\n")
    others = [o for o in optimizers if _ok([r for r in records if r.key.optimizer == o])]
    header = (
        "| optimizer | cells | optimized (mean) | gain (mean) | median gain | beats seed prompt | "
        + " | ".join(f"win rate vs {o}" for o in others)
        + " | val-test gap (mean) | opt LM calls / point | opt tokens / point | opt $ / point"
        + " | rollouts (mean) | search s (mean) |\n"
    )
    out.write(header)
    out.write("|" + "---|" * (12 + len(others)) + "\n")
    for name in optimizers:
        ok = _ok([r for r in records if r.key.optimizer == name])
        if not ok:
            continue
        opt = [r.optimized_test.score for r in ok if r.optimized_test]
        gains = [g for r in ok if (g := r.gain) is not None]
        beats = sum(g > 1e-12 for g in gains)
        gaps = [g for r in ok if (g := r.val_test_gap) is not None]
        per_point = cost_per_point(ok)
        cols = []
        for other in others:
            rate = None if other == name else win_rate(records, name, other)
            cols.append("-" if rate is None else f"{rate[0]:.2f} ({rate[1]})")
        out.write(
            f"| {name} | {len(ok)} | {_fmt(statistics.fmean(opt))} | "
            f"{_fmt(statistics.fmean(gains))} | {_fmt(statistics.median(gains))} | "
            f"{beats}/{len(gains)} | " + " | ".join(cols) + " | "
            f"{_signed_or_dash(gaps)} | {_per_point(per_point['calls'], 1)} | "
            f"{_per_point(per_point['tokens'], 0)} | {_per_point(per_point['usd'], 4)} | "
            f"{_avg([r.rollouts for r in ok], 0)} | {_avg([r.search_wall_s for r in ok], 1)} |\n"
        )
    out.write(
        "\n*win rate vs X*: share of (task, seed) cells where this optimizer's test score beats "
        "X's (ties count half; cells in brackets). *opt ... / point*: the optimizer model's "
        "mean LM calls, tokens and dollars per cell divided by the mean test gain in points "
        "(gain x 100): what one point of gain cost; n/a when the mean gain is not above 0, "
        "- when the provider gives no price.\n"
    )
    out.write(grid_means_section(records, optimizers) + per_cell_section(records))
    out.write(_reach_section(records, optimizers))
    out.write(ablation_section(records, baselines))
    return out.getvalue()


def _best_at(curve: Sequence[tuple[int, float]], rollouts: int) -> float | None:
    """The best validation score a curve knew after ``rollouts`` (None before its first point)."""
    known = [score for spent, score in curve if spent <= rollouts]
    return max(known) if known else None


def rollouts_to_reach(
    records: Sequence[CellRecord], name: str, other: str
) -> tuple[int | None, float, float] | None:
    """When ``name``'s mean best-validation-vs-rollouts curve first reaches ``other``'s final
    mean validation score, over the (task, seed) cells both finished with curves.

    Returns (rollouts or None if never, ``other``'s mean rollouts, the target score); None when
    they share no such cell. A mean over cells is taken at each rollout count where every cell
    of ``name`` has a point, so a curve's start (the seed's validation pass) counts too."""
    ours = {(r.key.task, r.key.seed, r.key.run): r for r in _ok(records) if r.key.optimizer == name}
    theirs = {
        (r.key.task, r.key.seed, r.key.run): r for r in _ok(records) if r.key.optimizer == other
    }
    shared = sorted(k for k in ours.keys() & theirs.keys() if ours[k].curve and theirs[k].curve)
    if not shared:
        return None
    target = statistics.fmean(max(s for _, s in theirs[k].curve) for k in shared)
    their_rollouts = statistics.fmean(theirs[k].rollouts for k in shared)
    steps = sorted({spent for k in shared for spent, _ in ours[k].curve})
    for spent in steps:
        values = [v for k in shared if (v := _best_at(ours[k].curve, spent)) is not None]
        if len(values) == len(shared) and statistics.fmean(values) >= target - 1e-9:
            return spent, their_rollouts, target
    return None, their_rollouts, target


def _reach_section(records: Sequence[CellRecord], optimizers: Sequence[str]) -> str:
    """The *Rollouts to reach* table: each row optimizer against each column's final val."""
    names = [o for o in optimizers if any(r.curve for r in _ok(records) if r.key.optimizer == o)]
    if len(names) < 2:
        return ""
    out = io.StringIO()
    out.write("\n## Rollouts to reach\n\n")
    out.write(
        "Row optimizer's mean best validation score (over the (task, seed) cells both ran) "
        "against rollouts spent: the first rollout count where it reaches the column "
        "optimizer's final mean validation score, as a share of the column optimizer's mean "
        "rollouts (rollouts / theirs in brackets); *never*: it did not within its run. "
        "Validation scores are each optimizer's own passes over the same valset.\n\n"
    )
    out.write("| optimizer | " + " | ".join(f"reaches {o}" for o in names) + " |\n")
    out.write("|---|" + "---|" * len(names) + "\n")
    for name in names:
        cols = []
        for other in names:
            reach = None if other == name else rollouts_to_reach(records, name, other)
            if reach is None:
                cols.append("-")
            elif reach[0] is None:
                cols.append(f"never ({reach[2]:.3f})")
            else:
                cols.append(f"{reach[0] / reach[1]:.2f} ({reach[0]} / {reach[1]:.0f})")
        out.write(f"| {name} | " + " | ".join(cols) + " |\n")
    return out.getvalue()


def cost_per_point(records: Sequence[CellRecord]) -> dict[str, float | None]:
    """The optimizer model's mean calls, tokens and dollars per cell over finished ``records``,
    each divided by their mean test gain in points (gain x 100).

    A value is NaN when the mean gain is not above 0 (no gain to pay for) and None when it
    cannot be known (no finished cell, or, for dollars, a cell without a price)."""
    ok = [r for r in _ok(records) if r.gain is not None]
    if not ok:
        return {"calls": None, "tokens": None, "usd": None}
    points = statistics.fmean(r.gain or 0.0 for r in ok) * 100.0
    usd = [r.optimizer_usage.cost_usd for r in ok]
    means: dict[str, float | None] = {
        "calls": statistics.fmean(r.optimizer_usage.calls for r in ok),
        "tokens": statistics.fmean(
            r.optimizer_usage.prompt_tokens + r.optimizer_usage.completion_tokens for r in ok
        ),
        "usd": None if any(c is None for c in usd) else statistics.fmean(c or 0.0 for c in usd),
    }
    return {
        name: None if mean is None else (mean / points if points > 1e-9 else math.nan)
        for name, mean in means.items()
    }


def _per_point(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _signed_or_dash(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):+.3f}" if values else "-"


def ablation_plan(
    records: Sequence[CellRecord], baselines: Sequence[str] | None = None
) -> tuple[dict[str, list[str]], list[str]]:
    """Which names are compared with which baseline, and the variants left without one.

    With ``baselines``, every other optimizer or variant in the records is compared with each
    of them. Without, each variant (``gepa[merge=false]``) is compared with its plain optimizer
    (``gepa``) when that ran too; the variants whose plain optimizer did not run come back
    second."""
    names = _optimizer_order(_ok(records))
    if baselines:
        chosen = [parse_variant(b).name for b in baselines]
        missing = [b for b in chosen if b not in names]
        if missing:
            raise ConfigError(
                f"Baseline {', '.join(map(repr, missing))} has no finished cells; "
                f"finished: {', '.join(names) or 'none'}."
            )
        return {b: [n for n in names if n not in chosen] for b in chosen}, []
    plan: dict[str, list[str]] = {}
    orphans: list[str] = []
    for name in names:
        try:
            variant = parse_variant(name)
        except ConfigError:  # an odd name from an older run: not a variant
            continue
        if variant.is_plain:
            continue
        if variant.optimizer in names:
            plan.setdefault(variant.optimizer, []).append(name)
        else:
            orphans.append(name)
    return plan, orphans


def ablations(
    records: Sequence[CellRecord], baselines: Sequence[str] | None = None
) -> list[Comparison]:
    """Every planned comparison (:func:`ablation_plan`), Holm-corrected per baseline."""
    plan, _ = ablation_plan(records, baselines)
    rows: list[Comparison] = []
    for baseline, variants in plan.items():
        rows.extend(compare(records, variants, baseline))
    return rows


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.3f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def ablation_section(records: Sequence[CellRecord], baselines: Sequence[str] | None) -> str:
    """The markdown *Ablations* section (empty when nothing is to be compared)."""
    plan, orphans = ablation_plan(records, baselines)
    if not plan and not orphans:
        return ""
    out = io.StringIO()
    out.write("\n## Ablations\n\n")
    if plan:
        out.write(
            "Each variant against its baseline on the same (task, seed) cells. *mean diff*: "
            "the variant's test score minus the baseline's, with a 95% Student-t interval; "
            "*W/T/L*: cells it wins / ties (within 1e-9) / loses; *p*: two-sided Wilcoxon "
            "signed-rank test conditional on the ties, exact up to 50 non-tied pairs; *p (Holm)*: "
            "corrected across the variants compared with the same baseline. *resolved* needs "
            "p (Holm) < 0.05 and an interval that excludes 0; with fewer than 6 non-tied pairs "
            "the exact test cannot get there.\n\n"
        )
        out.write(
            "| variant | baseline | n | mean diff [95% CI] | W/T/L | p | p (Holm) | verdict |\n"
        )
        out.write("|---|---|---|---|---|---|---|---|\n")
        for row in ablations(records, baselines):
            out.write(
                f"| {row.variant} | {row.baseline} | {row.n} | {_signed(row.mean_diff)} "
                f"[{_signed(row.ci_low)}, {_signed(row.ci_high)}] | "
                f"{row.wins}/{row.ties}/{row.losses} | {_p(row.p)} | {_p(row.p_holm)} | "
                f"{row.verdict} |\n"
            )
    if orphans:
        out.write(
            f"\nNo baseline for {', '.join(orphans)}: run the plain optimizer too "
            "(e.g. --optimizers gepa) or name one with --baseline.\n"
        )
    return out.getvalue()


def _best_prompts(
    task: str, optimizers: list[str], groups: dict[tuple[str, str], list[CellRecord]]
) -> str:
    lines = []
    for name in optimizers:
        ok = _ok(groups.get((task, name), []))
        if not ok:
            continue
        best = max(ok, key=lambda r: r.optimized_test.score if r.optimized_test else -1.0)
        score = best.optimized_test.score if best.optimized_test else float("nan")
        prompt = " ".join(best.best_prompt.split())
        prompt = prompt if len(prompt) <= 160 else prompt[:157] + "..."
        lines.append(f"- {name}, best seed ({best.key.seed}, test {score:.3f}): `{prompt}`\n")
    return ("Best prompt found:\n\n" + "".join(lines) + "\n") if lines else ""


def _avg(values: Sequence[float], digits: int) -> str:
    if not values:
        return "-"
    return f"{statistics.fmean(values):.{digits}f}"


def cell_rows(records: Sequence[CellRecord]) -> list[dict[str, Any]]:
    """One flat row per cell (the CSV's columns)."""
    rows = []
    for r in records:
        rows.append(
            {
                "task": r.key.task,
                "optimizer": r.key.optimizer,
                "seed": r.key.seed,
                "budget": r.key.budget,
                "status": r.status,
                "baseline_test": r.baseline_test.score if r.baseline_test else None,
                "optimized_test": r.optimized_test.score if r.optimized_test else None,
                "gain": r.gain,
                "best_val": r.best_val_score,
                "val_test_gap": r.val_test_gap,
                "rollouts": r.rollouts,
                "task_calls": r.task_usage.calls,
                "task_tokens": r.task_usage.prompt_tokens + r.task_usage.completion_tokens,
                "optimizer_calls": r.optimizer_usage.calls,
                "optimizer_tokens": r.optimizer_usage.prompt_tokens
                + r.optimizer_usage.completion_tokens,
                "cost_usd": r.cost_usd,
                "search_wall_s": round(r.search_wall_s, 3),
                "wall_s": round(r.wall_s, 3),
                "error": r.error,
                "best_prompt": r.best_prompt,
            }
        )
    return rows


def write_report(
    records: Sequence[CellRecord],
    out_dir: str | Path,
    *,
    plots: bool = True,
    title: str = "",
    header: str = "",
    baselines: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write report.md, cells.csv, cells.json and (with matplotlib) the plots; return paths.

    With variants to compare (:func:`ablation_plan`) also ablations.csv, ablations.json and a
    forest plot per baseline (``forest:<baseline>`` in the returned paths)."""
    out = Path(out_dir)
    check_one_run(records, str(out))  # first: mixed runs overwrite nothing
    comparisons = ablations(records, baselines)  # and a bad baseline neither
    paths = {
        "markdown": out / "report.md",
        "csv": out / "cells.csv",
        "json": out / "cells.json",
    }
    text = markdown_report(records, title or "Benchmark results", header, baselines=baselines)
    write_atomic(paths["markdown"], text)
    rows = cell_rows(records)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(paths["csv"], buffer.getvalue())
    write_atomic(
        paths["json"], json.dumps([json.loads(r.model_dump_json()) for r in records], indent=1)
    )
    if plots and records:
        paths.update(plot_all(records, out))
    if comparisons:
        paths.update(_write_ablations(comparisons, out, plots=plots))
    return paths


def _write_ablations(
    comparisons: Sequence[Comparison], out: Path, *, plots: bool
) -> dict[str, Path]:
    """ablations.csv / ablations.json and, with plots, one forest plot per baseline."""
    rows = [c.as_dict() for c in comparisons]
    paths = {"ablations_csv": out / "ablations.csv", "ablations_json": out / "ablations.json"}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(paths["ablations_csv"], buffer.getvalue())
    as_json = [{k: None if _nan(v) else v for k, v in row.items()} for row in rows]
    write_atomic(paths["ablations_json"], json.dumps(as_json, indent=1))
    if plots:
        from policyopt.bench import plots as charts

        by_baseline: dict[str, list[Comparison]] = defaultdict(list)
        for c in comparisons:
            by_baseline[c.baseline].append(c)
        for baseline, group in by_baseline.items():
            path = out / f"ablation_forest__{safe_name(baseline)}.png"
            paths[f"forest:{baseline}"] = charts.forest(group, path)
    return paths


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def plot_all(records: Sequence[CellRecord], out_dir: str | Path) -> dict[str, Path]:
    """The three charts: baseline vs optimized bars, best score vs rollouts, score vs cost."""
    from policyopt.bench import plots

    out = Path(out_dir)
    return {
        "bars": plots.bars(records, out / "baseline_vs_optimized.png"),
        "curves": plots.curves(records, out / "score_vs_rollouts.png"),
        "cost": plots.cost(records, out / "score_vs_cost.png"),
    }


def side_by_side(records: Sequence[CellRecord], reference: str) -> str:
    """Each other optimizer against ``reference`` on the cells both finished: test score, wall
    time of the search (as a ratio), rollouts and LM calls."""
    ok = _ok(records)
    mine = {
        (r.key.task, r.key.seed, r.key.budget, r.key.run): r
        for r in ok
        if r.key.optimizer == reference
    }
    lines = []
    for name in _optimizer_order(ok):
        if name == reference:
            continue
        pairs = [
            (mine[k], r)
            for r in ok
            if r.key.optimizer == name
            and (k := (r.key.task, r.key.seed, r.key.budget, r.key.run)) in mine
        ]
        if not pairs:
            continue
        ref_test = statistics.fmean(_score(a) for a, _ in pairs)
        test = statistics.fmean(_score(b) for _, b in pairs)
        ref_s = sum(a.search_wall_s for a, _ in pairs)
        other_s = sum(b.search_wall_s for _, b in pairs)
        ratio = other_s / ref_s if ref_s > 0 else float("nan")
        lines.append(
            f"- {name} vs {reference} ({len(pairs)} cells): test {test:.3f} vs {ref_test:.3f}; "
            f"search wall time {other_s:.0f}s vs {ref_s:.0f}s ({ratio:.2f}x); rollouts "
            f"{statistics.fmean(b.rollouts for _, b in pairs):.0f} vs "
            f"{statistics.fmean(a.rollouts for a, _ in pairs):.0f}; LM calls "
            f"{statistics.fmean(_calls(b) for _, b in pairs):.0f} vs "
            f"{statistics.fmean(_calls(a) for a, _ in pairs):.0f}"
        )
    return "\n".join(lines)


def _calls(record: CellRecord) -> int:
    return record.task_usage.calls + record.optimizer_usage.calls


def _score(record: CellRecord) -> float:
    return record.optimized_test.score if record.optimized_test else float("nan")
