"""Rollouts on Dask: 1 vs 2 worker processes on a CPU-bound evaluate, side by side in one run.

``evaluate`` does a fixed amount of pure-Python work, calibrated at start to take about 50 ms on
one core here (so it holds the GIL: threads would not help, processes must). For each round, a
fresh ``LocalCluster`` with 1 and then with 2 worker processes (one thread each) runs the same
rollouts through ``RolloutEngine(backend=client)``; a warm-up batch first pays the preflight and
the workers' imports, outside the timing. Rounds alternate the two sizes, so load drift on a
shared machine hits both alike. It prints rollouts/s and the speed-up per round and their medians,
and writes them to ``benchmarks/results/dask_scaling.json``. Each run also reports the CPU seconds
``evaluate`` used per wall second ("cores used"): on a shared machine that says how much of the
two cores the workers really got, which the wall-time speed-up alone hides.

``--sessions`` starts the scheduler and each worker as separate ``dask scheduler`` / ``dask
worker`` processes, each in a session of its own, as workers started apart are. It matters on a
busy Linux box: with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) the
kernel shares CPU per session, so the workers of a ``LocalCluster``, all in this session, get
this session's share however many they are.

Run: ``.venv/bin/python benchmarks/dask_scaling.py [--sessions]`` (``--quick``: fewer rollouts
and rounds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from policyopt import Score
from policyopt.rollout import RolloutEngine
from policyopt.rollout.dask_backend import local_cluster

WORK_MS = 50.0


def spin(steps: int) -> int:
    """Pure-Python busy work (holds the GIL)."""
    x = 1
    for _ in range(steps):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def calibrate(ms: float) -> int:
    """Steps of :func:`spin` that take ``ms`` milliseconds on one core here (best of 5)."""
    probe = 200_000
    best = min(_timed(probe) for _ in range(5))
    return int(probe * ms / 1000 / best)


def _timed(steps: int) -> float:
    start = time.process_time()
    spin(steps)
    return time.process_time() - start


def busy_evaluate(prompt: str, example: dict[str, Any]) -> Score:
    """A CPU-bound rollout: ``example['steps']`` of busy work, scored deterministically; its
    trace holds the CPU seconds the work took (this thread's)."""
    start = time.thread_time()
    value = (spin(example["steps"]) + len(prompt)) % 100 / 100
    return Score(value, trace={"cpu_s": time.thread_time() - start})


@contextlib.contextmanager
def sessions_cluster(n_workers: int) -> Iterator[str]:
    """A scheduler and ``n_workers`` one-thread ``dask worker`` processes, each in a session of
    its own (as when workers are started apart: with the kernel's autogroup scheduling, CPU is
    shared per session); yields the scheduler's address."""
    dask_cli = str(Path(sys.executable).parent / "dask")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = [dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1"]
    worker += ["--host", "127.0.0.1", "--no-nanny"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for command in [[*scheduler, "--no-dashboard"]] + [worker] * n_workers:
            procs.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def one(n_workers: int, n_rollouts: int, steps: int, sessions: bool = False) -> dict[str, Any]:
    """Wall time of ``n_rollouts`` rollouts on a fresh cluster of ``n_workers`` processes."""
    from distributed import Client

    examples = [{"id": str(i), "steps": steps} for i in range(n_rollouts)]
    warm = [{"id": f"w{i}", "steps": steps} for i in range(2 * n_workers)]
    with contextlib.ExitStack() as stack:
        if sessions:
            address = stack.enter_context(sessions_cluster(n_workers))
            client = stack.enter_context(Client(address, timeout=60, set_as_default=False))
            client.wait_for_workers(n_workers, timeout=120)
        else:
            cluster = local_cluster(n_workers=n_workers, threads_per_worker=1)
            stack.callback(cluster.close)
            client = stack.enter_context(Client(cluster, set_as_default=False))
        with RolloutEngine(busy_evaluate, n_jobs=2 * n_workers, backend=client) as engine:
            engine.add_split("warm", warm)
            engine.run([("P", e["id"]) for e in warm], split="warm")
            engine.add_split("timed", examples)
            start = time.perf_counter()
            batch = engine.run([("P", e["id"]) for e in examples], split="timed")
            wall = time.perf_counter() - start
            assert batch.complete and not any(r.failed for r in batch.done())
            mean_rollout_s = statistics.fmean(r.duration_s for r in batch.done())
            busy_s = sum(r.duration_s for r in batch.done())
            cpu_s = sum(r.score.trace["cpu_s"] for r in batch.done())  # type: ignore[index]
    return {
        "workers": n_workers,
        "cluster": "sessions" if sessions else "local",
        "rollouts": n_rollouts,
        "wall_s": round(wall, 3),
        "rollouts_per_s": round(n_rollouts / wall, 2),
        "mean_rollout_s": round(mean_rollout_s, 4),
        "cpu_s_per_rollout": round(cpu_s / n_rollouts, 4),
        # CPU seconds of evaluate per wall second: how many cores the workers really got
        "cores_used": round(cpu_s / wall, 2),
        # rollout seconds per wall second: how many ran at once (the parallelism Dask gave)
        "in_flight": round(busy_s / wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 rollouts, 1 round")
    parser.add_argument(
        "--sessions",
        action="store_true",
        help="workers as separate `dask worker` processes, each in its own session, instead of "
        "a LocalCluster (whose workers share this session's CPU share under autogroup)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dask_scaling.json"))
    args = parser.parse_args()
    rollouts, rounds = (60, 1) if args.quick else (args.rollouts, args.rounds)
    steps = calibrate(WORK_MS)
    load = os.getloadavg()
    print(
        f"{steps} steps ~ {WORK_MS:g} ms of one core; load average {load[0]:.2f}; {rollouts} "
        f"rollouts per run, {rounds} rounds"
    )
    runs: list[dict[str, Any]] = []
    for round_no in range(rounds):
        pair = [one(n, rollouts, steps, args.sessions) for n in (1, 2)]
        speedup = pair[0]["wall_s"] / pair[1]["wall_s"]
        for run in pair:
            run["round"] = round_no
            runs.append(run)
            print(
                f"round {round_no}: {run['workers']} worker(s): {run['wall_s']:.2f} s, "
                f"{run['rollouts_per_s']:.1f} rollouts/s (a rollout {run['mean_rollout_s']:.3f} s, "
                f"{run['cpu_s_per_rollout']:.3f} s of CPU; {run['in_flight']:.2f} at once, "
                f"{run['cores_used']:.2f} cores used)"
            )
        print(f"round {round_no}: speed-up 2 vs 1 workers: {speedup:.2f}x")
    speedups = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[::2], runs[1::2], strict=True)]
    summary = {
        "work_ms": WORK_MS,
        "steps": steps,
        "rollouts": rollouts,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "cluster": "sessions" if args.sessions else "local",
        "load_average_at_start": [round(v, 2) for v in load],
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "median_speedup": round(statistics.median(speedups), 3),
        "speedups": [round(s, 3) for s in speedups],
        "runs": runs,
    }
    print(
        f"median speed-up, 2 vs 1 worker processes: {summary['median_speedup']:.2f}x "
        f"(target >= 1.7x); load average now {os.getloadavg()[0]:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
