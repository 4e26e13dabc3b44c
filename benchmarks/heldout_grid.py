"""The held-out grid: `policyopt bench` on the data no default or preset was tuned on, summarized.

The protocol is :mod:`policyopt.bench.heldout`: the defaults were tuned on the four original tasks
on split seed 0; this grid runs the ``plural`` task (never used while tuning) and fresh split seeds
of every task, hint and bare feedback, for the five optimizers at budget 200. Each data seed is one
`policyopt bench` invocation with ``--split-seed S --seeds S`` (the optimizer's seed is the data
seed, so a (task, seed) row is one split), all into one --out folder; a rerun resumes. Then it
prints `benchmarks/grid_summary.py`'s table and statistics (exact per-cell tests, t intervals
clustered by task), which refuses any folder mixing development and held-out cells.

    python benchmarks/heldout_grid.py                      # the full grid (hours)
    python benchmarks/heldout_grid.py --quick              # 1 seed, budget 16, 4 examples a split
    python benchmarks/heldout_grid.py --tasks 'plural[feedback=bare]' --optimizers gepa \\
        --seeds 101                                         # one cell
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from policyopt.bench import load_records
from policyopt.bench.heldout import HELDOUT, side_of

OPTIMIZERS = ("gepa", "mipro", "gepa-lib", "dspy-gepa", "dspy-mipro")
SUMMARY = Path(__file__).with_name("grid_summary.py")
QUICK = {"tasks": ["plural", "plural[feedback=bare]"], "optimizers": ["gepa", "mipro"],
         "seeds": [HELDOUT.split_seeds[0]], "budget": 16, "limit": 4}  # fmt: skip


def commands(
    out: Path,
    *,
    tasks: list[str] | None = None,
    optimizers: list[str] | None = None,
    seeds: list[int] | None = None,
    budget: int = 200,
    limit: int | None = None,
    n_jobs: int = 4,
) -> list[list[str]]:
    """One `policyopt bench` command line per data seed; a ValueError when a cell is not
    held-out (a development task on a development split seed)."""
    tasks = tasks or HELDOUT.names()
    seeds = seeds or list(HELDOUT.split_seeds)
    inside = [(t, s) for t in tasks for s in seeds if side_of(t, s) != "heldout"]
    if inside:
        raise ValueError(f"not held-out (policyopt.bench.heldout): {inside}")
    lines = []
    for seed in seeds:
        line = ["policyopt", "bench", "--tasks", ",".join(tasks),
                "--optimizers", ",".join(optimizers or OPTIMIZERS), "--seeds", str(seed),
                "--split-seed", str(seed), "--budget", str(budget), "--n-jobs", str(n_jobs),
                "--out", str(out)]  # fmt: skip
        if limit is not None:
            line += ["--limit", str(limit)]
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default: results/heldout[_quick]")
    parser.add_argument("--quick", action="store_true", help="1 seed, budget 16, 4 examples")
    parser.add_argument("--tasks", help="comma-separated (default: every held-out task)")
    parser.add_argument("--optimizers", help="comma-separated (default: the five)")
    parser.add_argument("--seeds", help="comma-separated data seeds (default: 101-105)")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=4)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    results = Path(__file__).with_name("results")
    out = args.out or results / ("heldout_quick" if args.quick else "heldout")
    plan: dict = dict(QUICK) if args.quick else {"budget": args.budget}
    if args.tasks:
        plan["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.optimizers:
        plan["optimizers"] = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    if args.seeds:
        plan["seeds"] = [int(s) for s in args.seeds.split(",")]
    try:
        lines = commands(out, n_jobs=args.n_jobs, **plan)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(shlex.join(line), flush=True)
        if not args.dry_run:
            done = subprocess.run([sys.executable, "-m", "policyopt.cli", *line[1:]], check=False)
            if done.returncode != 0:
                return done.returncode
    if args.dry_run:
        return 0
    failed = [r.key.slug for r in load_records(out) if r.status != "ok"]
    if failed:  # `policyopt bench` records a failed cell and goes on; the grid is not done
        print(f"error: {len(failed)} failed cells (a rerun retries them): {failed}",
              file=sys.stderr)  # fmt: skip
        return 1
    return subprocess.run([sys.executable, str(SUMMARY), str(out)], check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
