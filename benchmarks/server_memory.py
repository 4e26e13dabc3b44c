"""Memory of the job server and of its job processes over a long job (issue 26).

Starts, on loopback, a task app that answers at once (a scripted score over ``--examples``
examples, served over HTTP by ``policyopt.remote.taskapp``) and a job server as ``policyopt
serve`` runs it (``create_app`` with jobs in child processes, served by ``run_app``), whose
reflection LM is scripted (a fresh prompt per call: no model's memory is measured). It submits
one long GEPA job (``--budget`` rollouts, more than it can finish) and, beside it, a stream of
short jobs (one at a time), then every ``--every`` seconds for ``--minutes`` minutes samples the
resident memory (RSS) of the server process and of each job process, the long job's rollouts,
and the events stored. Writes the samples to ``--out`` and prints a table: flat columns mean
memory does not grow with a job's rollouts and events; a rising one is a leak to look into.

    .venv/bin/python benchmarks/server_memory.py --minutes 6

The numbers depend on the machine's other load: run ``uptime`` before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import psutil

KEY = "memory-bench-key"
TASK_KEY = "memory-bench-task-key"
JOBS = "/api/policy-optimization/online/jobs"
TERMINAL = {"succeeded", "failed", "cancelled"}
ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- child processes
#: characters of output text each rollout answers with (the task app's ``--output-chars``)
OUTPUT_CHARS = 0


def score(prompt: str, example: dict[str, Any]) -> Any:
    """A scripted metric: a deterministic mix of right and wrong per (prompt, example), so GEPA
    accepts a new candidate now and then and never solves the task (the job keeps running)."""
    from policyopt import Score

    ok = zlib.crc32(f"{prompt}|{example['id']}".encode()) % 4 == 0
    output = f"{example['id']}: " + "o" * OUTPUT_CHARS if OUTPUT_CHARS else None
    return Score(
        float(ok),
        feedback=None if ok else f"Example {example['id']} wants more care.",
        output=output,
    )


async def evaluate(prompt: Any, example: dict[str, Any]) -> Any:
    """The task app's evaluate: async, so a rollout costs no thread and no wait."""
    return score(str(prompt), example)


def serve_task_app(port: int, n_examples: int, output_chars: int) -> None:
    """The task app child: ``n_examples`` examples split 60/30/10 into train, val and test,
    each rollout answering ``output_chars`` characters of output."""
    global OUTPUT_CHARS
    OUTPUT_CHARS = output_chars
    from policyopt import Program
    from policyopt.remote._serving import serve_forever
    from policyopt.remote.taskapp.app import task_app

    n_train, n_val = n_examples * 6 // 10, n_examples * 3 // 10
    dataset = {
        "train": [{"id": f"t{i}"} for i in range(n_train)],
        "val": [{"id": f"v{i}"} for i in range(n_val)],
        "test": [{"id": f"x{i}"} for i in range(n_examples - n_train - n_val)],
    }
    app = task_app(Program("Solve the task.", evaluate), dataset, api_key=TASK_KEY, name="bench")
    serve_forever(app, port=port, log_level="warning")


class Proposals:
    """The reflection LM factory: a new prompt at every call. Picklable, for job processes."""

    def __call__(self, config: Any) -> Any:
        from policyopt.testing import ScriptedLM

        counter = itertools.count()
        return ScriptedLM(lambda text: f"```\nSolve the task with care, take {next(counter)}.\n```")


def serve_jobs(port: int, root: str, max_jobs: int) -> None:
    """The job server child: what ``policyopt serve`` runs (``create_app`` with
    ``isolation="process"`` and ``run_app``), with the scripted reflection LM injected."""
    from policyopt.remote.server.app import create_app, run_app

    app = create_app(
        Path(root) / "jobs.db",
        Path(root) / "runs",
        [KEY],
        max_concurrent_jobs=max_jobs,
        reflection_lm_factory=Proposals(),
        isolation="process",
    )
    run_app(app, port=port, log_level="warning")


# ----------------------------------------------------------------------------- the benchmark
def job_config(url: str, budget: int, n_examples: int, n_jobs: int) -> dict[str, Any]:
    n_train, n_val = n_examples * 6 // 10, n_examples * 3 // 10
    n_test = n_examples - n_train - n_val
    return {
        "algorithm": "gepa",
        "task_app": {"url": url, "api_key": TASK_KEY},
        "initial_prompt": "Solve the task.",
        "ids": {
            "train": [f"t{i}" for i in range(n_train)],
            "val": [f"v{i}" for i in range(n_val)],
            "test": [f"x{i}" for i in range(min(n_test, 10))],
        },
        "budget": {"max_rollouts": budget},
        "models": {"reflection": "local"},  # granted by default; the scripted LM answers
        "gepa": {"n_jobs": n_jobs},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """This script in a child process (one of the ``--serve-*`` modes), its output in ``log``."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, __file__, *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited early (code {proc.returncode})")
        try:
            if httpx.get(f"{url}/health", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not healthy in 120 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, then SIGKILL if it has not ended in 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(proc: psutil.Process) -> float | None:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.Error:
        return None


def job_processes(server: psutil.Process) -> list[psutil.Process]:
    """The server's job processes (multiprocessing ``spawn`` children), oldest first."""
    found = []
    for child in server.children(recursive=False):
        try:
            line = " ".join(child.cmdline())
            if "spawn_main" in line and "resource_tracker" not in line:
                found.append(child)
        except psutil.Error:
            continue
    return sorted(found, key=lambda p: p.create_time())


def events_stored(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    task_port, server_port = free_port(), free_port()
    task_url, url = f"http://127.0.0.1:{task_port}", f"http://127.0.0.1:{server_port}"
    task_args = [str(task_port), str(args.examples), str(args.output_chars)]
    task = start(["--serve-task-app", *task_args], root / "task.log")
    server = start(["--serve-jobs", str(server_port), str(root)], root / "server.log")
    samples: list[dict[str, Any]] = []
    try:
        wait_healthy(task_url, task, {"Authorization": f"Bearer {TASK_KEY}"})
        wait_healthy(url, server, {})
        server_ps = psutil.Process(server.pid)
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            long_config = job_config(task_url, args.budget, args.examples, args.n_jobs)
            long_id = http.post(JOBS, json=long_config).raise_for_status().json()["job_id"]
            deadline = time.monotonic() + 60
            while not job_processes(server_ps) and time.monotonic() < deadline:
                time.sleep(0.2)
            long_pid = job_processes(server_ps)[0].pid if job_processes(server_ps) else None
            short_config = job_config(task_url, args.short_budget, 40, 4)
            short_id: str | None = None
            short_done = 0
            short_rss: dict[int, float] = {}  # job process pid -> the largest RSS seen
            began = time.monotonic()
            next_sample = began
            while time.monotonic() - began < args.minutes * 60:
                state = None if short_id is None else http.get(f"{JOBS}/{short_id}").json()
                if state is None or state["status"] in TERMINAL:
                    short_done += state is not None and state["status"] == "succeeded"
                    response = http.post(JOBS, json=short_config).raise_for_status()
                    short_id = response.json()["job_id"]
                for child in job_processes(server_ps):
                    if child.pid != long_pid and (mb := rss_mb(child)) is not None:
                        short_rss[child.pid] = max(short_rss.get(child.pid, 0.0), mb)
                if time.monotonic() >= next_sample:
                    next_sample += args.every
                    long_state = http.get(f"{JOBS}/{long_id}").json()
                    long_ps = next((p for p in job_processes(server_ps) if p.pid == long_pid), None)
                    sample = {
                        "t_s": round(time.monotonic() - began, 1),
                        "rollouts": long_state["progress"]["rollouts_used"],
                        "long_job_events": long_state["last_seq"],
                        "events_stored": events_stored(root / "jobs.db"),
                        "server_rss_mb": rss_mb(server_ps),
                        "long_job_rss_mb": None if long_ps is None else rss_mb(long_ps),
                        "short_jobs_done": short_done,
                        "short_job_rss_mb_max": max(short_rss.values(), default=None),
                        "journal_mb": _size_mb(root / "runs" / long_id / "journal.jsonl"),
                        "long_job_status": long_state["status"],
                    }
                    samples.append(sample)
                    print(_row(sample), flush=True)
                time.sleep(0.5)
            http.post(f"/api/jobs/{long_id}/cancel", json={"reason": "benchmark over"})
            if short_id is not None:
                http.post(f"/api/jobs/{short_id}/cancel", json={"reason": "benchmark over"})
    finally:
        stop(server)
        stop(task)
    return {"samples": samples, "short_job_peak_rss_mb": sorted(short_rss.values())}


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 2) if path.exists() else 0.0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


HEADER = (
    f"{'t (s)':>6} {'rollouts':>9} {'events':>8} {'server MB':>10} {'long job MB':>12} "
    f"{'short jobs':>10} {'short job MB':>13} {'journal MB':>11}"
)


def _row(s: dict[str, Any]) -> str:
    return (
        f"{s['t_s']:>6.0f} {s['rollouts']:>9} {s['events_stored']:>8} "
        f"{_fmt(s['server_rss_mb']):>10} {_fmt(s['long_job_rss_mb']):>12} "
        f"{s['short_jobs_done']:>10} {_fmt(s['short_job_rss_mb_max']):>13} {s['journal_mb']:>11}"
    )


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """First and last sample taken once the long job runs, and the growth between them."""
    live = [s for s in samples if s["long_job_rss_mb"] is not None and s["rollouts"] > 0]
    if len(live) < 2:
        return {}
    first, last = live[0], live[-1]
    return {
        "rollouts": [first["rollouts"], last["rollouts"]],
        "events_stored": [first["events_stored"], last["events_stored"]],
        "server_rss_mb": [first["server_rss_mb"], last["server_rss_mb"]],
        "long_job_rss_mb": [first["long_job_rss_mb"], last["long_job_rss_mb"]],
        "long_job_kb_per_1000_rollouts": round(
            (last["long_job_rss_mb"] - first["long_job_rss_mb"])
            * 1024
            / max(1, last["rollouts"] - first["rollouts"])
            * 1000,
            1,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.5, help="wall time sampled")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--budget", type=int, default=200_000, help="the long job's rollouts")
    parser.add_argument("--examples", type=int, default=300, help="the task's examples")
    parser.add_argument("--n-jobs", type=int, default=8, help="the long job's rollouts in flight")
    parser.add_argument("--short-budget", type=int, default=60, help="each short job's rollouts")
    parser.add_argument(
        "--output-chars", type=int, default=0, help="characters of output per rollout answer"
    )
    parser.add_argument("--max-jobs", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "results" / "server_memory.json", help="JSON samples"
    )
    parser.add_argument("--serve-task-app", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve-jobs", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_task_app:
        serve_task_app(*(int(a) for a in args.serve_task_app))
        return
    if args.serve_jobs:
        serve_jobs(int(args.serve_jobs[0]), args.serve_jobs[1], args.max_jobs)
        return

    load_before = os.getloadavg()
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as root:
        result = run(args, Path(root))
    load_after = os.getloadavg()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "summary": summary(result["samples"]),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(report["summary"]))
    print(f"load average before {load_before}, after {load_after}; samples in {args.out}")


if __name__ == "__main__":
    main()
