"""Task-app rollouts through the sync client on threads against the async client, in one run.

600 rollouts against a loopback task app (uvicorn in its own process, an ``async def`` rollout
that awaits 100 ms, so it is never the bottleneck) at concurrency 200: the rollout engine with
``TaskAppClient`` on ``n_jobs=200`` threads, and with ``AsyncTaskAppClient`` as 200 coroutines on
policyopt's event loop (what the job server runs). Both clients go through the job server's
outbound policy. Per mode, in a fresh process each (so one's memory does not pollute the
other's): rollouts/s, the ratio to the ideal (200 / 0.1 s = 2,000/s), the peak growth of the
process's resident memory during the run and its CPU time per rollout (all threads). The
machine's load average is printed with them.

Run: ``.venv/bin/python benchmarks/taskapp_async_vs_threads.py`` (``--rollouts``,
``--concurrency``, ``--repeats``, ``--json PATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

LATENCY_S = 0.1
MODES = ("threads", "async")


# ------------------------------------------------------------------ the task app (own process)
def serve(port: int) -> None:
    """A minimal task app: ``/health`` and an async ``/rollout`` that awaits ``LATENCY_S``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from policyopt.remote._serving import serve_forever

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"healthy": True})

    async def rollout(request: Request) -> JSONResponse:
        body = await request.json()
        await asyncio.sleep(LATENCY_S)
        return JSONResponse({"example_id": body["example_id"], "score": 1.0, "feedback": "ok"})

    app = Starlette(routes=[Route("/health", health), Route("/rollout", rollout, methods=["POST"])])
    serve_forever(app, port=port, log_level="warning")


# ------------------------------------------------------------------ one mode (own process)
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


def measure(mode: str, url: str, n: int, concurrency: int) -> dict[str, Any]:
    """One mode in this process: time, rate, ratio to ideal, peak RSS growth."""
    from policyopt.remote.taskapp.client import AsyncTaskAppClient, TaskAppClient
    from policyopt.remote.taskapp.outbound import OutboundPolicy
    from policyopt.rollout import RolloutEngine
    from policyopt.rollout.aio import call_blocking

    kind = AsyncTaskAppClient if mode == "async" else TaskAppClient
    client = kind(url, max_concurrency=concurrency, outbound=OutboundPolicy())
    call_blocking(client.health)  # imports and the loop thread, off the clock
    program = client.program("prompt")
    engine = RolloutEngine(program.evaluate, n_jobs=concurrency)
    ids = engine.add_split("val", [{"id": str(i)} for i in range(n)])
    base_rss = _rss_kib()
    with _PeakRSS() as rss:
        start, cpu = time.perf_counter(), time.process_time()
        result = engine.run([("prompt", i) for i in ids], split="val")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.close()
    client.close()
    assert result.complete and engine.rollouts_used == n and not engine.failures, engine.failures
    return {
        "mode": mode,
        "rollouts": n,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "rollouts_per_s": round(n / elapsed, 1),
        "ratio_to_ideal": round(n / concurrency * LATENCY_S / elapsed, 3),
        "rss_growth_mib": round((rss.peak - base_rss) / 1024, 2),
        "cpu_ms_per_rollout": round(cpu / n * 1000, 2),
    }


# ------------------------------------------------------------------ driver
def _start_task_app() -> tuple[subprocess.Popen[bytes], str]:
    """The task app in its own process on a free loopback port; returns once it answers."""
    from policyopt.remote._serving import bind

    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the task app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.child:
        print(json.dumps(measure(args.child, args.url, args.rollouts, args.concurrency)))
        return
    load_before = os.getloadavg()
    proc, url = _start_task_app()
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(args.repeats):
            for mode in MODES:  # interleaved: a load spike hits both
                command = [sys.executable, __file__, "--child", mode, "--url", url]
                command += ["--rollouts", str(args.rollouts)]
                command += ["--concurrency", str(args.concurrency)]
                out = subprocess.run(command, check=True, capture_output=True, text=True)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        proc.terminate()
        proc.wait(10)
    load_after = os.getloadavg()
    ideal = args.concurrency / LATENCY_S
    print(
        f"{args.rollouts} task-app rollouts of a {LATENCY_S * 1000:.0f} ms async wait at "
        f"concurrency {args.concurrency} (ideal {ideal:.0f}/s); median of {args.repeats} fresh "
        f"processes each; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(
        f"{'mode':8} {'s':>6} {'rollouts/s':>11} {'of ideal':>9} {'RSS +MiB':>9} {'CPU ms':>7}"
        "  runs (of ideal)"
    )
    summary: dict[str, dict[str, float]] = {}
    for mode, rows in runs.items():
        keys = (
            "seconds",
            "rollouts_per_s",
            "ratio_to_ideal",
            "rss_growth_mib",
            "cpu_ms_per_rollout",
        )
        med = {key: statistics.median(r[key] for r in rows) for key in keys}
        summary[mode] = med
        each = ", ".join(f"{r['ratio_to_ideal']:.2f}" for r in rows)
        print(
            f"{mode:8} {med['seconds']:6.3f} {med['rollouts_per_s']:11.0f} "
            f"{med['ratio_to_ideal']:9.2f} {med['rss_growth_mib']:9.1f} "
            f"{med['cpu_ms_per_rollout']:7.2f}  {each}"
        )
    ratio = summary["async"]["rollouts_per_s"] / summary["threads"]["rollouts_per_s"]
    print(f"async / threads: {ratio:.2f}x the rate")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "load_average": {"before": load_before, "after": load_after},
            "runs": runs,
            "median": summary,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
