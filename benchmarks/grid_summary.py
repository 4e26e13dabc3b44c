"""The grid's headline: per-cell test scores and the targets of issue 15, from the records.

Reads the finished cells of a `policyopt bench --out` directory (no model runs) and prints what
RESULTS.md quotes: the test score of every (task, seed) for every optimizer, then for policyopt's
GEPA the share of cells above the seed prompt and its mean gain against the best peer's, policyopt's
MIPRO against DSPy MIPROv2, and how many rollouts GEPA's mean best-validation curve needs to reach
the best peer's final mean validation score. Means, ratios and differences carry 95% intervals
clustered by task (a task's seeds share its data); cells of several runs are refused (--run), and
so are development and held-out cells together (policyopt.bench.heldout). A folder of one task
(the held-out grids) also gets the seeds as units: each optimizer's gain with a t interval over
the seeds and an exact signed-rank p, and each of ours against each peer paired on the seeds.

    python benchmarks/grid_summary.py benchmarks/results/grid200
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from policyopt.bench.evidence import clustered_gains
from policyopt.bench.heldout import check_one_side
from policyopt.bench.records import CellRecord, check_one_run, runs_of
from policyopt.bench.report import rollouts_to_reach
from policyopt.bench.runner import load_records
from policyopt.bench.stats import (
    cell_test,
    clustered_mean_ci,
    clustered_ratio_ci,
    compare,
    holm,
    mean_ci,
    paired_test,
)
from policyopt.errors import ConfigError

OURS = ("gepa", "mipro")
PEERS = ("gepa-lib", "dspy-gepa", "dspy-mipro")


def _ratio(
    by_cell: dict[tuple[str, int], dict[str, CellRecord]], ours: str, theirs: str
) -> tuple[float, float, float, float, float, float]:
    """``ours``' mean gain over ``theirs``' on the (task, seed) cells both ran, with Fieller's
    95% interval clustered by task (unbounded when their mean gain may be 0), then the mean
    difference of the gains with its task-clustered interval."""
    rows = [(t, row) for (t, _), row in sorted(by_cell.items()) if ours in row and theirs in row]
    mine = [row[ours].gain or 0.0 for _, row in rows]
    other = [row[theirs].gain or 0.0 for _, row in rows]
    tasks = [t for t, _ in rows]
    diff = [a - b for a, b in zip(mine, other, strict=True)]
    return (*clustered_ratio_ci(mine, other, tasks), *clustered_mean_ci(diff, tasks))


def _one_task(records: list[CellRecord], names: list[str]) -> None:
    """One task (the clustered intervals above are undefined): its seeds as the units. Each
    optimizer's gain with a t interval over the seeds, the exact signed-rank p of the gains and
    its optimizer-LM calls a cell; then each of ours against each peer on the seeds both ran.
    Several tasks: nothing."""
    if len({r.key.task for r in records}) != 1:
        return
    print("One task: the seeds are the units (mean gain with a t 95% interval over the seeds, "
          "exact signed-rank p of the gains, ties dropped).\n")  # fmt: skip
    print("| optimizer | cells | mean gain [95% CI over seeds] | beats seed prompt | "
          "signed-rank p | optimizer-LM calls a cell |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for o in names:
        mine = [r for r in records if r.key.optimizer == o]
        gains = [r.gain or 0.0 for r in mine]
        low, high, _ = mean_ci(gains)
        _, p = paired_test(gains)
        calls = sorted(r.optimizer_usage.calls for r in mine)
        span = f"{calls[0]}" if calls[0] == calls[-1] else f"{calls[0]}-{calls[-1]}"
        print(f"| {o} | {len(gains)} | {statistics.fmean(gains):+.3f} [{low:+.3f}, {high:+.3f}] "
              f"| {sum(g > 0 for g in gains)}/{len(gains)} | {p:.3f} | {span} |")  # fmt: skip
    pairs = [(ours, peer) for ours in OURS if ours in names for peer in PEERS if peer in names]
    if not pairs:
        print()
        return
    rows = [compare(records, [ours], peer)[0] for ours, peer in pairs]
    adjusted = holm([c.p for c in rows])
    print()
    print("Ours against each peer, paired on the seeds both ran (test score difference, t 95% "
          "interval over the seeds; exact signed-rank p, and Holm-adjusted over these "
          "rows).\n")  # fmt: skip
    print("| ours - peer | seeds | mean difference [95% CI] | wins / ties / losses | p | "
          "p (Holm) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for c, p_holm in zip(rows, adjusted, strict=True):
        print(f"| {c.variant} - {c.baseline} | {c.n} | {c.mean_diff:+.3f} [{c.ci_low:+.3f}, "
              f"{c.ci_high:+.3f}] | {c.wins} / {c.ties} / {c.losses} | {c.p:.3f} | "
              f"{p_holm:.3f} |")  # fmt: skip
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a policyopt bench --out directory")
    parser.add_argument("--run", help="the run digest to summarize when the folder holds several")
    args = parser.parse_args()
    loaded = load_records(args.out)
    if args.run is not None:
        loaded = runs_of(loaded).get(args.run, [])
    try:  # cells of other code, model files or settings are never summarized together,
        check_one_run(loaded, str(args.out))  # nor tuning data with data held out from it
        side = check_one_side(loaded, str(args.out))
    except ConfigError as exc:
        print(f"error: {exc} Pick one run with --run.", file=sys.stderr)
        return 2
    records = [r for r in loaded if r.status == "ok" and r.gain is not None]
    if not records:
        print(f"no finished cells under {args.out}", file=sys.stderr)
        return 1
    names = [o for o in (*OURS, *PEERS) if any(r.key.optimizer == o for r in records)]
    by_cell: dict[tuple[str, int], dict[str, CellRecord]] = {}
    for r in records:
        by_cell.setdefault((r.key.task, r.key.seed), {})[r.key.optimizer] = r

    print(f"Cells on the {side} side of the held-out protocol (policyopt.bench.heldout).\n")
    print("| task | seed | seed prompt | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for task in sorted({t for t, _ in by_cell}):
        for seed in sorted(s for t, s in by_cell if t == task):
            row = by_cell[(task, seed)]
            base = next(iter(row.values())).baseline_test
            assert base is not None
            scores = {o: row[o].optimized_test.score for o in names if o in row}  # type: ignore[union-attr]
            top = max(scores.values())  # bold: the best, where it beats the seed prompt
            cells = [
                "-" if o not in scores else
                (f"**{scores[o]:.3f}**" if scores[o] == top > base.score else f"{scores[o]:.3f}")
                for o in names
            ]  # fmt: skip
            print(f"| {task} | {seed} | {base.score:.3f} | " + " | ".join(cells) + " |")

    print()
    print("| optimizer | cells | mean gain [95% CI, clustered by task] | beats seed prompt | "
          "below it | per-cell test: better / worse |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    gains_of = {o: [r.gain or 0.0 for r in records if r.key.optimizer == o] for o in names}
    means = {o: statistics.fmean(gains) for o, gains in gains_of.items()}
    for o, gains in gains_of.items():
        beats = sum(g > 0 for g in gains)
        below = sum(g < 0 for g in gains)
        _, _, _, low, high = clustered_gains(records, o)
        tests = [t for r in records if r.key.optimizer == o and (t := cell_test(r)) is not None]
        better = sum(t.verdict == "better" for t in tests)
        worse = sum(t.verdict == "worse" for t in tests)
        print(f"| {o} | {len(gains)} | {means[o]:+.3f} [{low:+.3f}, {high:+.3f}] | "
              f"{beats}/{len(gains)} | {below} | {better} / {worse} of {len(tests)} |")  # fmt: skip

    print()
    _one_task(records, names)
    peers = [o for o in PEERS if o in means]
    if "gepa" in means and peers:
        best = max(peers, key=lambda o: means[o])
        gains = gains_of["gepa"]
        share = sum(g > 0 for g in gains) / len(gains)
        ratio, low, high, diff, dlow, dhigh = _ratio(by_cell, "gepa", best)
        print(f"GEPA beats the seed prompt in {share:.0%} of cells (target >= 90%)")
        print(f"GEPA mean gain {means['gepa']:+.3f} = {ratio:.2f}x [{low:.2f}, {high:.2f}] "
              f"the best peer's ({best}, {means[best]:+.3f}; target >= 1.5x, 95% interval "
              f"above 1.0x); difference {diff:+.3f} [{dlow:+.3f}, {dhigh:+.3f}]")  # fmt: skip
        reach = rollouts_to_reach(records, "gepa", best)
        if reach is not None:
            spent, theirs, target = reach
            when = "never" if spent is None else f"{spent} rollouts = {spent / theirs:.2f}"
            print(f"GEPA reaches {best}'s final mean val {target:.3f} after {when} of its "
                  f"{theirs:.0f} (target <= 0.50)")  # fmt: skip
    if "mipro" in means and "dspy-mipro" in means:
        verdict = "beats" if means["mipro"] > means["dspy-mipro"] else "does not beat"
        ratio, low, high, diff, dlow, dhigh = _ratio(by_cell, "mipro", "dspy-mipro")
        print(f"MIPRO mean gain {means['mipro']:+.3f} {verdict} DSPy MIPROv2's "
              f"{means['dspy-mipro']:+.3f} ({ratio:.2f}x [{low:.2f}, {high:.2f}]; difference "
              f"{diff:+.3f} [{dlow:+.3f}, {dhigh:+.3f}])")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
