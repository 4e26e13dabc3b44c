"""The main job on several seeds: `policyopt demo --seed S` for each seed, every result printed.

The README's demo table comes from this script, not from one lucky run: it prints the seed,
optimized and reference prompts' held-out test accuracy for every seed, the worst case, the
mean, and in how many seeds the optimized prompt beat the seed prompt. Each seed's JSON is kept
under --out, and a seed whose JSON is already there is not run again (delete it to re-run).
With --run-dirs each run is saved under --out (``{algorithm}_seed{S}_run``) and a second table
gives its proposal loop's figures from the journal's verdicts: first attempts rejected by reason,
re-asks made and rescued (accepted), re-asks skipped (``details["reasks_skipped"]``).

    python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 [--algorithm gepa] [--budget 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    """One demo run (a subprocess, as a user would run it); its JSON payload."""
    path = args.out / f"{args.algorithm}_seed{seed}.json"
    if not path.exists():
        command = [
            sys.executable, "-m", "policyopt.cli", "demo", "--seed", str(seed),
            "--algorithm", args.algorithm, "--budget", str(args.budget),
            "--n-jobs", str(args.n_jobs), "--json", str(path), "--no-progress",
        ]  # fmt: skip
        if args.task:
            command += ["--task", args.task]
        if args.run_dirs:
            command += ["--run-dir", str(args.out / f"{args.algorithm}_seed{seed}_run")]
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        print(f"seed {seed}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return json.loads(path.read_text(encoding="utf-8"))


def proposal_figures(run_dir: Path, details: dict) -> dict:
    """The proposal loop's figures from a run's journaled verdicts (see the module docstring)."""
    verdicts = {}  # answer key -> its verdict record (an accepted one wins over a later reject)
    with (run_dir / "journal.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if (
                record.get("type") == "verdict"
                and verdicts.get(record["key"], {}).get("verdict") != "accepted"
            ):
                verdicts[record["key"]] = record
    first: dict[str, int] = {}
    reasks = rescued = 0
    for record in verdicts.values():
        if record["attempt"] == 0:
            reason = record["reason"] or "accepted"
            first[reason] = first.get(reason, 0) + 1
        else:
            reasks += 1
            rescued += record["verdict"] == "accepted"
    return {
        "first": dict(sorted(first.items())),
        "reasks": reasks,
        "rescued": rescued,
        "skipped": details.get("reasks_skipped") or {},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--algorithm", default="gepa")
    parser.add_argument("--task", default="")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--n-jobs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_seeds"))
    parser.add_argument("--run-dirs", action="store_true", help="keep each run (see above)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        payload = run_seed(seed, args)
        acc = {r["prompt"].split(" ")[0]: r["test_accuracy"] for r in payload["rows"]}
        calls = sum(u["calls"] for u in payload["result"]["lm_usage"].values())
        rows.append(
            {
                "seed": seed,
                "seed_acc": acc["seed"],
                "optimized": acc["optimized"],
                "reference": acc["hand-written"],
                "rollouts": payload["result"]["n_rollouts"],
                "calls": calls,
                "wall_s": payload["wall_time_s"],
                "prompt": payload["rows"][1]["text"],
                "val": payload["result"]["best_score"],
                "run_dir": args.out / f"{args.algorithm}_seed{seed}_run",
                "details": payload["result"]["details"],
            }
        )
    print(f"| seed | seed prompt | optimized ({args.algorithm}) | reference | rollouts | "
          "proposal calls | wall s | optimized prompt |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        text = str(r["prompt"]).replace("|", "\\|").replace("\n", " ")
        print(
            f"| {r['seed']} | {r['seed_acc']:.3f} | {r['optimized']:.3f} | {r['reference']:.3f} "
            f"| {r['rollouts']} | {r['calls']} | {r['wall_s']:.0f} | `{text}` |"
        )
    gains = [r["optimized"] - r["seed_acc"] for r in rows]
    wins = sum(g > 0 for g in gains)
    worst = min(rows, key=lambda r: r["optimized"] - r["seed_acc"])
    print(
        f"\nbeats the seed prompt on test in {wins}/{len(rows)} seeds; mean optimized "
        f"{sum(r['optimized'] for r in rows) / len(rows):.3f} (mean gain "
        f"{sum(gains) / len(gains):+.3f}); worst seed {worst['seed']}: "
        f"{worst['seed_acc']:.3f} -> {worst['optimized']:.3f}"
    )
    runs = [r for r in rows if r["run_dir"].is_dir()]
    if runs:
        print("\n| seed | val | calls | first attempts by verdict | re-asks | rescued | skipped |")
        print("|---|---|---|---|---|---|---|")
    for r in runs:
        f = proposal_figures(r["run_dir"], r["details"])
        first = ", ".join(f"{k} {n}" for k, n in f["first"].items())
        skipped = ", ".join(f"{k} {n}" for k, n in f["skipped"].items()) or "0"
        print(
            f"| {r['seed']} | {r['val']:.3f} | {r['calls']} | {first} | {f['reasks']} "
            f"| {f['rescued']} | {skipped} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
