"""Optimize a small Python function against its unit tests with the embedded model (issue 25).

The candidate is the code of ``is_palindrome`` (the seed ignores neither case, spaces nor
punctuation), the score is the share of its 30 unit tests that pass, run in a sandboxed
subprocess with a timeout, and the side information is each failing assertion, sent with
``policyopt.log`` (:mod:`policyopt.tasks.code`). Single-task search: no dataset, the candidate
is the solution; the run stops when every test passes or at the budget.

Prints and writes ``benchmarks/results/optimize_code.json``: for each optimizer and seed, the
pass rate before and after, every proposal's pass rate, the rollouts, the LM calls, why
proposals were rejected, and the wall time.

    python benchmarks/optimize_code.py [--budget 30] [--seeds 0,1,2] [--optimizers gepa,opro]
        [--max-lm-calls 12]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from policyopt import LocalLM, optimize_anything
from policyopt.anything import ARTIFACT_LM
from policyopt.events import CandidateEvaluated
from policyopt.tasks.code import PALINDROME_CASES, PALINDROME_SEED, pass_rate

OBJECTIVE = (
    "Fix the Python function is_palindrome so that every unit test passes. Reply with the "
    "complete function."
)
BACKGROUND = (
    "A palindrome reads the same forwards and backwards when case, spaces and punctuation are "
    "ignored: 'A man, a plan, a canal: Panama' is one."
)
RESULTS = Path(__file__).parent / "results" / "optimize_code.json"


def run(optimizer: str, seed: int, budget: int, lm: LocalLM, max_lm_calls: int) -> dict[str, Any]:
    """One single-task search; the pass rate before and after."""
    evaluate = pass_rate("is_palindrome", [([text], answer) for text, answer in PALINDROME_CASES])
    scored: list[float] = []  # every new proposal's pass rate (its minibatch: all 30 tests)

    def listen(event: Any) -> None:
        if isinstance(event, CandidateEvaluated) and event.split == "minibatch":
            scored.append(round(event.score, 3))

    started = time.perf_counter()
    result = optimize_anything(
        PALINDROME_SEED,
        evaluate,
        objective=OBJECTIVE,
        background=BACKGROUND,
        optimizer=optimizer,
        lm=lm,
        max_rollouts=budget,
        max_lm_calls=max_lm_calls,
        seed=seed,
        n_jobs=2,
        progress=False,
        listeners=[listen],
    )
    return {
        "optimizer": optimizer,
        "seed": seed,
        "budget": budget,
        "max_lm_calls": max_lm_calls,
        "before": result.candidates[0].val_score,
        "after": result.best_score,
        "best_code": result.best_prompt,
        "candidates": len(result.candidates),
        "proposals_scored": scored,
        "rollouts": result.n_rollouts,
        "lm_calls": sum(u.calls for u in result.lm_usage.values()),
        "rejections": result.details.get("rejections"),
        "stop_reason": result.stop_reason,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--optimizers", default="gepa,opro")
    parser.add_argument("--max-lm-calls", type=int, default=12)
    args = parser.parse_args()
    rows = []
    with LocalLM(n_parallel=2, temperature=0.9, **ARTIFACT_LM) as lm:
        for optimizer in args.optimizers.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                row = run(optimizer, seed, args.budget, lm, args.max_lm_calls)
                rows.append(row)
                print(
                    f"{optimizer} seed {seed}: {row['before']:.2f} -> {row['after']:.2f} "
                    f"({row['candidates']} candidates, {row['rollouts']} rollouts, "
                    f"{row['lm_calls']} LM calls, {row['stop_reason']}, {row['wall_s']} s)",
                    flush=True,
                )
    # rows of other settings are kept: one file holds every configuration measured
    key = ("optimizer", "seed", "budget", "max_lm_calls")
    new = {tuple(r[k] for k in key) for r in rows}
    old = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else []
    kept = [r for r in old if tuple(r.get(k) for k in key) not in new]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(kept + rows, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
