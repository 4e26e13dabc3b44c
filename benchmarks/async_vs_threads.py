"""Async evaluate against threads, side by side in one run.

2,000 rollouts of an ``evaluate`` that waits 100 ms (an LM's latency): ``async def`` awaiting
``asyncio.sleep`` at 500 coroutines in flight, against a sync one calling ``time.sleep`` on the
thread path at ``n_jobs=500``. Per mode: rollouts/s, the ratio to the ideal (500 / 0.1 s =
5,000/s, so 2,000 rollouts in 0.4 s), and peak memory: traced Python allocations
(``tracemalloc``, which sees coroutine frames but not thread stacks) and the process's resident
memory growth during the timed run (RSS, which sees both; tracemalloc slows allocations ~10x, so
it traces a second, untimed run). Each mode runs in a fresh process so that
one's memory does not pollute the other's. Targets: async >= 0.7 of ideal, less memory than
threads. A third row, ``bare``, runs the same waits under plain ``asyncio.gather`` with no engine
(memory not measured): the ceiling this machine allows at that moment, since a loaded 2-core box
cannot even schedule 5,000 timer wake-ups a second on time.

Run: ``.venv/bin/python benchmarks/async_vs_threads.py`` (``--rollouts``, ``--concurrency``,
``--repeats``, ``--json PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from policyopt import RolloutEngine, Score

LATENCY_S = 0.1


async def async_evaluate(prompt: str, example: dict[str, int]) -> Score:
    await asyncio.sleep(LATENCY_S)
    return Score(1.0, feedback="ok")


def sync_evaluate(prompt: str, example: dict[str, int]) -> Score:
    time.sleep(LATENCY_S)
    return Score(1.0, feedback="ok")


def _rss_kib() -> int:
    """Resident memory of this process now (KiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _PeakRSS:
    """Samples this process's RSS every 5 ms on a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.peak = _rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_kib())

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib())


async def _bare(n: int, concurrency: int) -> None:
    """The same waits with no engine: asyncio.gather under a semaphore (the machine's ceiling)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Score:
        async with gate:
            return await async_evaluate("prompt", {"x": i})

    await asyncio.gather(*(one(i) for i in range(n)))


def measure_bare(n: int, concurrency: int) -> dict[str, Any]:
    """Bare asyncio, no engine: what this machine allows at the moment (for the engine's rows)."""
    asyncio.run(_bare(2, 2))
    start = time.perf_counter()
    asyncio.run(_bare(n, concurrency))
    elapsed = time.perf_counter() - start
    return {
        "mode": "bare",
        "rollouts": n,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "rollouts_per_s": round(n / elapsed, 1),
        "ratio_to_ideal": round(n / concurrency * LATENCY_S / elapsed, 3),
        "traced_peak_mib": 0.0,
        "rss_growth_mib": 0.0,
    }


def measure(mode: str, n: int, concurrency: int) -> dict[str, Any]:
    """One mode in this process: time, rate, ratio to ideal, peak memory."""
    if mode == "bare":
        return measure_bare(n, concurrency)
    evaluate = async_evaluate if mode == "async" else sync_evaluate
    engine = RolloutEngine(evaluate, n_jobs=concurrency)
    ids = engine.add_split("val", [{"x": i} for i in range(n)])
    requests = [("prompt", i) for i in ids]
    # warm up what every run has once (the pool or the loop thread, imports), off the clock
    warm = RolloutEngine(evaluate, n_jobs=2)
    warm.run([("w", i) for i in warm.add_split("w", [{"x": 0}, {"x": 1}])], split="w")
    warm.close()
    base_rss = _rss_kib()
    with _PeakRSS() as rss:
        start = time.perf_counter()
        result = engine.run(requests, split="val")
        elapsed = time.perf_counter() - start
    engine.close()
    assert result.complete and engine.rollouts_used == n and not engine.failures
    # tracemalloc slows every allocation ~10x: a second, untimed run measures the traced peak
    again = RolloutEngine(evaluate, n_jobs=concurrency)
    ids = again.add_split("val", [{"x": i} for i in range(n)])
    tracemalloc.start()
    again.run([("prompt", i) for i in ids], split="val")
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    again.close()
    ideal_s = n / concurrency * LATENCY_S
    return {
        "mode": mode,
        "rollouts": n,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "rollouts_per_s": round(n / elapsed, 1),
        "ratio_to_ideal": round(ideal_s / elapsed, 3),
        "traced_peak_mib": round(traced_peak / 2**20, 2),
        "rss_growth_mib": round((rss.peak - base_rss) / 1024, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=["async", "threads", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rollouts, args.concurrency)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"async": [], "threads": [], "bare": []}
    for _ in range(args.repeats):
        for mode in ("async", "threads", "bare"):  # interleaved: a load spike hits all
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--rollouts",
                    str(args.rollouts),
                    "--concurrency",
                    str(args.concurrency),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ideal = args.concurrency / LATENCY_S
    print(
        f"{args.rollouts} rollouts of a {LATENCY_S * 1000:.0f} ms wait at concurrency "
        f"{args.concurrency} (ideal {ideal:.0f}/s = {args.rollouts / ideal:.2f} s); median of "
        f"{args.repeats} fresh processes each"
    )
    print(
        f"{'mode':8} {'s':>6} {'rollouts/s':>11} {'of ideal':>9} {'traced MiB':>11} {'RSS +MiB':>9}"
    )
    summary: dict[str, dict[str, float]] = {}
    for mode, rows in runs.items():
        med = {
            key: statistics.median(r[key] for r in rows)
            for key in (
                "seconds",
                "rollouts_per_s",
                "ratio_to_ideal",
                "traced_peak_mib",
                "rss_growth_mib",
            )
        }
        summary[mode] = med
        print(
            f"{mode:8} {med['seconds']:6.3f} {med['rollouts_per_s']:11.0f} "
            f"{med['ratio_to_ideal']:9.2f} {med['traced_peak_mib']:11.1f} "
            f"{med['rss_growth_mib']:9.1f}"
        )
        spread = ", ".join(f"{r['ratio_to_ideal']:.2f}" for r in rows)
        print(f"         ratio to ideal per run: {spread}")
    a, t = summary["async"], summary["threads"]
    print(
        f"async/threads: {a['rollouts_per_s'] / t['rollouts_per_s']:.2f}x the rate, "
        f"{a['rss_growth_mib'] / max(t['rss_growth_mib'], 1e-9):.2f}x the RSS growth, "
        f"{a['traced_peak_mib'] / max(t['traced_peak_mib'], 1e-9):.2f}x the traced peak; "
        f"target async >= 0.7 of ideal: {'met' if a['ratio_to_ideal'] >= 0.7 else 'NOT met'}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "median": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
