"""policyopt's optimizers against DSPy's own on a two-predictor DSPy program, through the harness.

The program is ``policyopt.integrations.dspy.examples.CityCountry`` (find the city a sentence
names, then its country) on the embedded SmolLM2-135M, made a benchmark task by
``policyopt.integrations.dspy.dspy_task``: policyopt's GEPA and MIPRO search its two instructions
as named components, ``dspy.GEPA`` and ``dspy.MIPROv2`` compile the module itself, all with the
same data, metric (dspy.GEPA's signature, with per-predictor feedback), adapter, task and
reflection models and rollout budget; every optimized program is scored on the same held-out
test examples by the same DSPy program. Prints one row per cell, then the harness's report.

DSPy is optional: ``pip install 'policyopt[peers]'``.

Run: ``.venv/bin/python benchmarks/dspy_program.py --budget 30 --seeds 0``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from policyopt.bench import BenchSettings, run_benchmark, write_report
from policyopt.bench.report import machine_summary
from policyopt.integrations.dspy import PlainAdapter, dspy_task
from policyopt.integrations.dspy.examples import CityCountry, city_country_data, country_metric

TASK = "dspy:city_country"
OPTIMIZERS = ["gepa", "mipro", "dspy-gepa", "dspy-mipro"]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--n-train", type=int, default=6)
    parser.add_argument("--n-val", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--optimizers", nargs="+", default=OPTIMIZERS)
    parser.add_argument("--out", type=Path, default=Path("bench-dspy-program"))
    args = parser.parse_args()

    train, val, test = city_country_data(0, args.n_train, args.n_val, args.n_test)
    task = dspy_task(
        TASK,
        CityCountry,
        country_metric,
        train,
        val,
        test,
        adapter=PlainAdapter(),  # the tiny model reads one user message, writes no markers
        lm_kwargs={"max_tokens": 16, "stop": ["\n"]},
    )
    settings = BenchSettings(
        tasks=[TASK],
        optimizers=args.optimizers,
        seeds=args.seeds,
        budget=args.budget,
        n_jobs=args.n_jobs,
        settings={
            "dspy-gepa": {"reflection_max_tokens": 48},
            "dspy-mipro": {"num_candidates": 3, "proposer_max_tokens": 48},
        },
    )
    run = run_benchmark(
        settings, args.out, tasks={TASK: task}, log=lambda m: print(m, file=sys.stderr)
    )
    for name, reason in run.unavailable.items():
        print(f"{name} not run: {reason}")

    print(
        "| optimizer | seed | test before | test after | best val | rollouts | task LM calls "
        "| optimizer LM calls | search s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in run.records:
        if r.status != "ok" or r.baseline_test is None or r.optimized_test is None:
            print(f"| {r.key.optimizer} | {r.key.seed} | failed: {r.error} |||||||")
            continue
        val = "n/a" if r.best_val_score is None else f"{r.best_val_score:.3f}"
        print(
            f"| {r.key.optimizer} | {r.key.seed} | {r.baseline_test.score:.3f} | "
            f"{r.optimized_test.score:.3f} | {val} | {r.rollouts} | {r.task_usage.calls} | "
            f"{r.optimizer_usage.calls} | {r.search_wall_s:.0f} |"
        )
    print()
    for r in run.records:
        if r.status == "ok":
            print(f"{r.key.optimizer} seed {r.key.seed}: {json.dumps(json.loads(r.best_prompt))}")
    header = f"Command: `python {' '.join(sys.argv)}`\n\nMachine: {machine_summary()}"
    paths = write_report(run.records, args.out, header=header)
    print(f"\nreport: {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
