"""The final choice on a benchmark grid: the best validation mean vs the best lower bound.

Replays the choice over the candidates every finished GEPA and MIPRO cell of a `policyopt
bench` output kept (runs/<cell>/<optimizer>/state.json: each candidate's per-example validation
scores), so the
search is not re-run: where ``final_choice="lower_bound"`` picks another candidate than the one
the cell returned, that prompt is scored on the task's test split with the same local task
model. Prints, per cell and in total, the test gain over the seed prompt and the val-test gap
of each rule.

    python benchmarks/final_choice.py benchmarks/results/grid200 [--z 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from policyopt.bench.records import CellRecord
from policyopt.bench.runner import load_records, resolve_task, score_on_test
from policyopt.choice import final_candidate
from policyopt.lm.metered import MeteredLM


def _candidates(out: Path, record: CellRecord) -> list[dict]:
    state = out / "runs" / record.key.slug / record.key.base_optimizer / "state.json"
    return json.loads(state.read_text(encoding="utf-8"))["candidates"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a policyopt bench --out directory")
    parser.add_argument("--z", type=float, default=1.0, help="standard errors subtracted")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here too")
    args = parser.parse_args()

    cells = [
        r
        for r in load_records(args.out)
        if r.status == "ok" and r.key.base_optimizer in ("gepa", "mipro")
    ]
    if not cells:
        print(f"no finished gepa or mipro cells under {args.out}", file=sys.stderr)
        return 1
    settings = json.loads((args.out / "bench.json").read_text(encoding="utf-8"))
    rows = []
    lm = None

    def test_score(record: CellRecord, prompt: str) -> float:
        """``prompt``'s test score: the cell's own when it chose it, else scored now."""
        nonlocal lm
        assert record.optimized_test and record.baseline_test
        if prompt == record.best_prompt:
            return record.optimized_test.score
        if prompt == record.seed_prompt:
            return record.baseline_test.score
        if lm is None:
            from policyopt.lm.local import LocalLM

            lm = LocalLM(n_parallel=settings.get("n_jobs", 4)).__enter__()
        task = resolve_task(record.key.task, settings.get("split_seed", 0))
        view = MeteredLM(lm)
        return score_on_test(task.program(view).evaluate, task, prompt, view).score

    try:
        for record in sorted(cells, key=lambda r: (r.key.optimizer, r.key.task, r.key.seed)):
            cands = _candidates(args.out, record)
            val = [c["val_scores"] for c in cands]
            agg = {i: math.fsum(s.values()) / len(s) for i, s in enumerate(val) if s}
            assert record.baseline_test is not None
            row: dict = {
                "cell": record.key.slug,
                "optimizer": record.key.optimizer,
                "seed_test": record.baseline_test.score,
                # the rule the cell itself ran with (older records: the mean)
                "ran_with": (record.details.get("settings") or {}).get("final_choice", "mean"),
            }
            for name, rule in (("mean_rule", "mean"), ("lower_bound", "lower_bound")):
                chosen = final_candidate(rule, val, agg, args.z)
                prompt = cands[chosen]["prompt"]
                row[name] = {
                    "candidate": chosen,
                    "val": agg[chosen],
                    "test": test_score(record, prompt),
                }
            row["changed"] = row["mean_rule"]["candidate"] != row["lower_bound"]["candidate"]
            rows.append(row)
    finally:
        if lm is not None:
            lm.__exit__(None, None, None)

    print(f"| cell | seed test | mean rule val / test | lower bound (z={args.z}) val / test |")
    print("|---|---|---|---|")
    for row in rows:
        m, b = row["mean_rule"], row["lower_bound"]
        print(
            f"| {row['cell'].rsplit('__', 1)[0]} | {row['seed_test']:.3f} | "
            f"{m['val']:.3f} / {m['test']:.3f} | {b['val']:.3f} / {b['test']:.3f} |"
        )
    for optimizer in sorted({r["optimizer"] for r in rows}):
        mine = [r for r in rows if r["optimizer"] == optimizer]
        n = len(mine)
        for name in ("mean_rule", "lower_bound"):
            gain = sum(r[name]["test"] - r["seed_test"] for r in mine) / n
            gap = sum(r[name]["val"] - r[name]["test"] for r in mine) / n
            beats = sum(r[name]["test"] > r["seed_test"] for r in mine)
            worse = sum(r[name]["test"] < r["seed_test"] for r in mine)
            print(
                f"{optimizer} {name}: mean test gain {gain:+.3f}, mean val-test gap {gap:+.3f}, "
                f"beats the seed prompt in {beats}/{n} cells, below it in {worse}"
            )
        changed = sum(r["changed"] for r in mine)
        print(f"{optimizer}: the rules chose another prompt in {changed}/{n} cells")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
