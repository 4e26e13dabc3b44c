"""Exact budget and exact resume across SIGKILLs: an optimizer killed at random moments,
resumed each time, against the same run uninterrupted.

Counts the real ``evaluate`` calls (each call appends a line to a log before it works) against
the budget, the finished rollouts paid twice, and the rollouts lost to the kills; then compares
the resumed run's result with an uninterrupted run's (candidates, scores, rollouts, LM calls,
best prompt: everything but clocks and the resume counters, ``conformance.comparable``)::

    python benchmarks/kill_loop.py                       # GEPA, MIPRO, OPRO, 3 kills, budget 300
    python benchmarks/kill_loop.py --flaky 0.1           # a tenth of the rollouts raise
    python benchmarks/kill_loop.py --src /other/checkout # the same against another checkout

Before the fix (journal written when joblib handed a batch back), GEPA at budget 300, n_jobs=8
made 318-322 real calls over 3 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

RUNNER = textwrap.dedent(
    """
    import json, os, sys, time
    import hashlib
    from policyopt import GEPA, MIPRO, OPRO, Score
    from policyopt.testing import ScriptedLM
    from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
    from policyopt.testing.scripted import keyword_meta_lm

    run_dir, calls_path, out_path, algorithm, budget, flaky = sys.argv[1:7]
    log = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def evaluate(prompt, example):
        os.write(log, (json.dumps([prompt, example["id"]]) + "\\n").encode())
        time.sleep(0.02)
        digest = hashlib.sha256((prompt + example["id"]).encode()).digest()
        if digest[0] < 256 * float(flaky):  # the same rollouts fail in every run
            raise RuntimeError("flaky backend")
        ok = example["need"] in prompt
        missing = None if ok else f"The prompt lacks the word {example['need']}."
        return Score(float(ok), feedback=missing)

    program, train, val = keyword_task(n_train=30, n_val=30)
    program.evaluate = evaluate
    common = dict(max_rollouts=int(budget), n_jobs=8, run_dir=run_dir, progress=False, seed=1)
    if algorithm == "gepa":
        optimizer = GEPA(reflection_lm=keyword_reflection_lm(), minibatch_size=4, **common)
    elif algorithm == "opro":
        optimizer = OPRO(meta_lm=keyword_meta_lm(), **common)
    else:
        answer = lambda text: "```\\nSolve it: " + str(len(text) % 97) + " alpha\\n```"
        optimizer = MIPRO(proposer_lm=ScriptedLM(answer), num_candidates=6, num_trials=30,
                          minibatch_size=8, **common)
    result = optimizer.optimize(program, train, val)
    open(out_path, "w").write(result.to_json())
    """
)


def journal_counts(run_dir: Path) -> tuple[int, Counter[tuple[str, str]]]:
    """(finished rollout records, records per (prompt hash, example))."""
    path = run_dir / "journal.jsonl"
    per_key: Counter[tuple[str, str]] = Counter()
    if not path.exists():
        return 0, per_key
    n = 0
    with path.open("rb") as handle:
        for raw in handle:
            if b'"type":"rollout"' not in raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a torn last line
            n += 1
            per_key[(record["prompt"], record["example"])] += 1
    return n, per_key


def _uninterrupted(command: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The same run in its own folder, never killed: its result."""
    import subprocess

    run_dir, calls, out = work / "ref.run", work / "ref.calls", work / "ref.json"
    subprocess.run([*command[:2], str(run_dir), str(calls), str(out), *command[5:]], env=env,
                   check=True)  # fmt: skip
    return json.loads(out.read_text())


def _same(resumed: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Whether two results agree on everything but clocks, paths and resume counters."""
    from policyopt import OptimizationResult
    from policyopt.testing.conformance import comparable

    a, b = (comparable(OptimizationResult.model_validate(r)) for r in (resumed, reference))
    return a == b


def kill_loop(
    algorithm: str,
    *,
    budget: int,
    kills: int,
    seed: int,
    work: Path,
    src: str | None,
    flaky: float = 0.0,
) -> dict[str, Any]:
    """One kill loop; what it cost against the budget, and whether it ended where the same run
    uninterrupted ends."""
    from policyopt.testing.faults import sigkill_loop

    script = work / "runner.py"
    script.write_text(RUNNER)
    run_dir, calls, out = work / f"{algorithm}.run", work / f"{algorithm}.calls", work / "out.json"
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")
    if src:
        env["PYTHONPATH"] = src
    rng = random.Random(seed)
    marks = sorted(rng.sample(range(budget // 10, budget * 6 // 10), kills))
    conditions = [lambda m=m: journal_counts(run_dir)[0] >= m for m in marks]
    command = [sys.executable, str(script), str(run_dir), str(calls), str(out), algorithm]
    command += [str(budget), str(flaky)]
    code, landed = sigkill_loop(command, kill_when=conditions, env=env)
    real = Counter(tuple(json.loads(line)) for line in calls.read_text().splitlines() if line)
    result = json.loads(out.read_text()) if code == 0 and out.exists() else {}
    _, per_key = journal_counts(run_dir)
    reference = _uninterrupted(command, work, env) if result else {}
    details = result.get("details") or {}
    return {
        "algorithm": algorithm,
        "budget": budget,
        "kills": landed,
        "exit": code,
        "real_calls": sum(real.values()),
        "over_budget": max(0, sum(real.values()) - budget),
        "paid_twice": sum(n - 1 for n in real.values() if n > 1),
        "journaled_twice": sum(n - 1 for n in per_key.values() if n > 1),
        "lost": details.get("lost_rollouts"),
        "n_rollouts": result.get("n_rollouts"),
        "failed": details.get("failed_rollouts"),
        "stop_reason": result.get("stop_reason"),
        "resume_exact": details.get("resume_exact"),
        "same_as_uninterrupted": bool(result) and _same(result, reference),
        "reference_rollouts": reference.get("n_rollouts"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--src", help="PYTHONPATH of another checkout's src/ to measure")
    parser.add_argument("--algorithms", default="gepa,mipro,opro")
    parser.add_argument("--flaky", type=float, default=0.0, help="share of rollouts that raise")
    args = parser.parse_args()
    print("| algorithm | seed | kills | real evaluate calls | budget | paid twice | lost | failed "
          "| stop | resume_exact | same as uninterrupted (its rollouts) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for algorithm in args.algorithms.split(","):
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                row = kill_loop(
                    algorithm,
                    budget=args.budget,
                    kills=args.kills,
                    seed=seed,
                    work=Path(tmp),
                    src=args.src,
                    flaky=args.flaky,
                )
            print(
                f"| {algorithm} | {seed} | {row['kills']} | {row['real_calls']} | "
                f"{row['budget']} | {row['paid_twice']} | {row['lost']} | {row['failed']} | "
                f"{row['stop_reason']} | {row['resume_exact']} | "
                f"{row['same_as_uninterrupted']} ({row['reference_rollouts']}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
