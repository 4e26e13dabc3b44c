"""Rollout engine throughput and overhead, measured side by side in one run.

1. Throughput: an ``evaluate`` that sleeps 50 ms (an LM's latency); rollouts per second at
   n_jobs 1, 8 and 32, and the ratio to the ideal n_jobs / 0.05 s. Target: >= 0.8 at 32 threads.
2. Overhead: an ``evaluate`` that returns at once; the engine's time per rollout minus a bare
   Python loop calling the same function. Target: < 0.2 ms per rollout.

Run: ``.venv/bin/python benchmarks/rollout_throughput.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from policyopt import RolloutEngine, Score

LATENCY_S = 0.05


def sleepy(prompt: str, example: dict[str, int]) -> Score:
    time.sleep(LATENCY_S)
    return Score(1.0, feedback="ok")


def instant(prompt: str, example: dict[str, int]) -> float:
    return 1.0


def throughput(n_jobs: int, seconds: float) -> tuple[float, float]:
    """Rollouts per second at ``n_jobs`` threads, and the ratio to the ideal."""
    n = max(n_jobs, int(seconds * n_jobs / LATENCY_S))
    engine = RolloutEngine(sleepy, n_jobs=n_jobs)
    ids = engine.add_split("val", [{"x": i} for i in range(n)])
    start = time.perf_counter()
    result = engine.run([("prompt", i) for i in ids], split="val")
    elapsed = time.perf_counter() - start
    assert result.complete and engine.rollouts_used == n
    rate = n / elapsed
    return rate, rate / (n_jobs / LATENCY_S)


def overhead(n: int, batch: int, n_jobs: int, repeats: int) -> tuple[float, float]:
    """(engine seconds per rollout, bare-loop seconds per call), best of ``repeats``."""
    examples: list[dict[str, Any]] = [{"x": i} for i in range(batch)]
    engine_times, bare_times = [], []
    for _ in range(repeats):
        engine = RolloutEngine(instant, n_jobs=n_jobs)
        ids = engine.add_split("val", examples)
        prompts = [f"prompt {k}" for k in range(n // batch)]
        start = time.perf_counter()
        for prompt in prompts:
            engine.run([(prompt, i) for i in ids], split="val")
        engine_times.append((time.perf_counter() - start) / n)
        assert engine.rollouts_used == len(prompts) * batch

        start = time.perf_counter()
        for prompt in prompts:
            for example in examples:
                instant(prompt, example)
        bare_times.append((time.perf_counter() - start) / n)
    return min(engine_times), min(bare_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter run (CI smoke)")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0

    print(f"evaluate sleeps {LATENCY_S * 1000:.0f} ms; ideal = n_jobs / {LATENCY_S} s")
    print(f"{'n_jobs':>6} {'rollouts/s':>11} {'ideal':>7} {'ratio':>6}")
    for n_jobs in (1, 8, 32):
        rates = [throughput(n_jobs, seconds) for _ in range(1 if args.quick else 3)]
        rate, ratio = max(rates, key=lambda r: r[1])
        print(f"{n_jobs:>6} {rate:>11.1f} {n_jobs / LATENCY_S:>7.0f} {ratio:>6.2f}")

    n = 5_000 if args.quick else 50_000
    print(f"\noverhead: {n} rollouts of an instant evaluate, batches of 100 (best of 3)")
    print(f"{'n_jobs':>6} {'engine ms/rollout':>18} {'bare ms/call':>13} {'overhead ms':>12}")
    for n_jobs in (1, 8):
        per_engine, per_bare = overhead(n if n_jobs == 1 else n // 5, 100, n_jobs, 3)
        print(
            f"{n_jobs:>6} {per_engine * 1000:>18.4f} {per_bare * 1000:>13.5f} "
            f"{(per_engine - per_bare) * 1000:>12.4f}"
        )


if __name__ == "__main__":
    main()
