"""GEPA's wall-time speed-up from parallel rollouts and several proposals per iteration.

GEPA is sequential by nature (propose, test on a minibatch, keep or drop). policyopt keeps
``n_jobs`` busy by running each stage's rollouts in parallel and by proposing several children
per iteration and evaluating them together. This measures, side by side in one run, on the
synthetic keyword task with an ``evaluate`` that sleeps like an LM call (50 ms) and a reflection
LM that sleeps 300 ms and fixes something in only ~30% of its proposals: wall time, rollouts
spent and best validation score for

- ``sequential``: n_jobs=1, one proposal per iteration (the reference implementation's default);
- ``parallel rollouts``: n_jobs=8, one proposal per iteration;
- ``parallel + 3 proposals``: n_jobs=8, three proposals per iteration (the default for n_jobs=8).

Run: ``.venv/bin/python benchmarks/gepa_parallel_speedup.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import time
from typing import Any

from policyopt import GEPA, Program, Score
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task

LATENCY_S = 0.05
REFLECTION_S = 0.3


def slow_evaluate(prompt: str, example: dict[str, str]) -> Score:
    time.sleep(LATENCY_S)
    ok = example["need"] in prompt
    return Score(
        float(ok), feedback=None if ok else f"The prompt lacks the word {example['need']}."
    )


def run(n_jobs: int, proposals: int, budget: int, seed: int, n: int) -> dict[str, Any]:
    lm = keyword_reflection_lm()
    inner = lm.script

    def slow_reflection(text: str) -> str:
        time.sleep(REFLECTION_S)
        answer = inner(text)  # type: ignore[operator]
        # a realistic reflector: only ~30% of proposals fix something (deterministic per prompt)
        if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10 >= 3:
            current = re.search(r"```\n(.*?)\n```", text, re.S)
            return f"```\n{current.group(1) if current else ''} Be careful.\n```"
        return answer

    lm.script = slow_reflection
    _, train, val = keyword_task(n_train=n, n_val=n)
    optimizer = GEPA(
        reflection_lm=lm,
        max_rollouts=budget,
        n_jobs=n_jobs,
        seed=seed,
        proposals_per_iteration=proposals,
        progress=False,
    )
    start = time.perf_counter()
    result = optimizer.optimize(Program("Solve the task.", slow_evaluate), train, val)
    return {
        "wall": time.perf_counter() - start,
        "rollouts": result.n_rollouts,
        "best": result.best_score,
        "reflections": result.lm_usage["reflection"].calls,
        "stop": result.stop_reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, smaller task")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    n, budget = (12, 200) if args.quick else (24, 400)
    configs = [("sequential", 1, 1), ("parallel rollouts", 8, 1), ("parallel + 3 proposals", 8, 3)]
    print(
        f"keyword task, {n} train / {n} val, budget {budget}, evaluate {LATENCY_S * 1000:.0f} ms,"
        f" reflection {REFLECTION_S * 1000:.0f} ms, seeds {seeds}"
    )
    print(
        f"{'config':<24} {'wall s':>7} {'speed-up':>8} {'rollouts':>8} {'best':>5} "
        f"{'reflections':>11} {'stop':>14}"
    )
    base: float | None = None
    for name, n_jobs, proposals in configs:
        runs = [run(n_jobs, proposals, budget, seed, n) for seed in seeds]
        wall = statistics.mean(r["wall"] for r in runs)
        base = base or wall
        print(
            f"{name:<24} {wall:>7.1f} {base / wall:>7.1f}x "
            f"{statistics.mean(r['rollouts'] for r in runs):>8.0f} "
            f"{statistics.mean(r['best'] for r in runs):>5.2f} "
            f"{statistics.mean(r['reflections'] for r in runs):>11.0f} "
            f"{','.join(sorted({r['stop'] for r in runs})):>14}"
        )


if __name__ == "__main__":
    main()
