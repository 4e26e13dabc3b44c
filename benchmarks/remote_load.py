"""Load check of the job server on loopback: many status requests and event streams at once.

Starts ``policyopt``'s job server in a child process (a scripted in-process task app and a
scripted reflection LM, so the jobs really run: rollouts, events, SQLite writes), submits a few
long jobs, then from this process runs ``--requests`` status requests with ``--concurrency`` in
flight and ``--streams`` SSE streams at the same time, all bounded by ``--duration`` seconds.
Prints requests per second and p50/p99 latency of the status requests, and what the streams got.

    .venv/bin/python benchmarks/remote_load.py --requests 2000 --concurrency 50 --streams 20

Client and server share the machine's cores: the numbers are a floor, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY = "load-test-key"
JOBS = "/api/policy-optimization/online/jobs"


# ----------------------------------------------------------------------------- server side
class Task:
    """The scripted task app client: every rollout takes ``delay`` s and never succeeds, so the
    jobs keep running (and writing events) for the whole load. Picklable, for job processes."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __call__(self, config: Any) -> Task:  # the runner's task_app_factory
        return self

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def program(self, prompt: str, policy: Any = None) -> Any:
        from policyopt import Program

        return Program(prompt, self.evaluate)

    def evaluate(self, prompt: Any, example: dict[str, Any]) -> Any:
        from policyopt import Score

        time.sleep(self.delay)  # a rollout's latency
        return Score(0.0, feedback="Not yet right.")

    def close(self) -> None:
        pass


class Proposals:
    """The reflection LM factory: a new prompt at every call. Picklable, for job processes."""

    def __call__(self, config: Any) -> Any:
        from policyopt.testing import ScriptedLM

        counter = itertools.count()
        return ScriptedLM(lambda text: f"```\nSolve the task, take {next(counter)}.\n```")


def serve(port: int, root: str, delay: float, max_jobs: int, plain: bool = False) -> None:
    """The child process: a job server whose jobs run a scripted task (this checkout's code, or
    a baseline's when PYTHONPATH points at an exported older ``src``). ``plain``: uvicorn with
    its pure-Python HTTP parser and asyncio's loop, as installed before httptools and uvloop
    were dependencies."""
    import inspect

    if plain:
        import uvicorn

        original = uvicorn.Config.__init__

        def pure_python(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("http", "h11")
            kwargs.setdefault("loop", "asyncio")
            original(self, *args, **kwargs)

        uvicorn.Config.__init__ = pure_python  # type: ignore[method-assign]

    from policyopt.remote._serving import ServerThread
    from policyopt.remote.server.app import create_app

    options: dict[str, Any] = {
        "max_concurrent_jobs": max_jobs,
        "task_app_factory": Task(delay),
        "reflection_lm_factory": Proposals(),
    }
    if "isolation" in inspect.signature(create_app).parameters:
        options["isolation"] = "process"  # what `policyopt serve` does
    app = create_app(Path(root) / "jobs.db", Path(root) / "runs", [KEY], **options)
    server = ServerThread(app, port=port).start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(timeout=30)


def job_config(budget: int) -> dict[str, Any]:
    return {
        "algorithm": "gepa",
        "task_app": {"url": "http://127.0.0.1:9"},
        "initial_prompt": "Solve the task.",
        "ids": {"train": {"start": 0, "end": 30}, "val": {"start": 100, "end": 120}},
        "budget": {"max_rollouts": budget},
        "gepa": {"n_jobs": 4},
        "models": {"reflection": "scripted"},
    }


# ----------------------------------------------------------------------------- client side
async def status_load(
    url: str, ids: list[str], total: int, concurrency: int, deadline: float
) -> tuple[list[float], int, float]:
    """``total`` GETs of job status, ``concurrency`` at a time; latencies (s), errors, wall.

    The status requests go through aiohttp (C-accelerated): httpx's connection pool scans all
    its connections for every request, which at hundreds of connections costs more CPU than
    the server's answer, and the benchmark would measure its own client.
    """
    import aiohttp

    latencies: list[float] = []
    errors = 0
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        url, headers=headers, connector=connector, timeout=timeout
    ) as session:

        async def one(n: int) -> None:
            nonlocal errors
            if time.monotonic() > deadline:
                return
            async with semaphore:
                start = time.perf_counter()
                try:
                    async with session.get(f"{JOBS}/{ids[n % len(ids)]}") as response:
                        await response.read()
                        ok = response.status == 200
                except Exception:
                    ok = False
                latencies.append(time.perf_counter() - start)
                starts.append(start - began)
                errors += not ok

        starts: list[float] = []
        began = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(total)))
        wall = time.perf_counter() - began
        late = sorted(lat for lat, at in zip(latencies, starts, strict=True) if at > 1.0)
        if len(late) > 100:
            print(f"  after the first second: p99 {late[int(len(late) * 0.99)] * 1000:.0f} ms")
        return latencies, errors, wall


async def one_stream(client: Any, job_id: str, deadline: float) -> dict[str, Any]:
    """Read one job's SSE stream until its terminal event or the deadline."""
    started = time.perf_counter()
    first: float | None = None
    events = 0
    last = 0
    ordered = True
    try:
        async with client.stream("GET", f"{JOBS}/{job_id}/events/stream") as response:
            async for line in response.aiter_lines():
                if first is None:
                    first = time.perf_counter() - started
                if line.startswith("id: "):
                    seq = int(line[4:])
                    ordered &= seq == last + 1
                    last = seq
                    events += 1
                if line.startswith("event: job.") and line[11:] in (
                    "succeeded",
                    "failed",
                    "cancelled",
                ):
                    break
                if time.monotonic() > deadline:
                    break
    except Exception as exc:  # counted, not fatal
        return {"events": events, "first_byte_s": first, "error": repr(exc), "ordered": ordered}
    return {"events": events, "first_byte_s": first, "error": None, "ordered": ordered}


async def run(args: argparse.Namespace, url: str) -> dict[str, float]:
    import httpx

    limits = httpx.Limits(max_connections=args.concurrency + args.streams + 10)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        ids = []
        for _ in range(args.jobs):
            response = await client.post(JOBS, json=job_config(args.budget))
            response.raise_for_status()
            ids.append(response.json()["job_id"])
        started = time.monotonic()  # wait until the jobs really run (rollouts paid)
        while time.monotonic() - started < 60:
            states = [(await client.get(f"{JOBS}/{i}")).json() for i in ids]
            if all(s["progress"]["rollouts_used"] > 0 for s in states[: args.max_jobs]):
                break
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + args.duration
        streams = [
            asyncio.create_task(one_stream(client, ids[n % len(ids)], deadline))
            for n in range(args.streams)
        ]
        latencies, errors, wall = await status_load(
            url, ids, args.requests, args.concurrency, deadline
        )
        states = [(await client.get(f"{JOBS}/{i}")).json() for i in ids]
        for job_id in ids:
            await client.post(f"/api/jobs/{job_id}/cancel", json={"reason": "load test over"})
        results = await asyncio.gather(*streams)

    done = len(latencies)
    cuts = statistics.quantiles(latencies, n=100) if done >= 2 else [0.0] * 99
    print(f"jobs: {args.jobs} submitted ({args.max_jobs} at once); during the load:")
    for state in states:
        progress = state["progress"]
        print(
            f"  {state['job_id']}: {state['status']}, "
            f"{progress['rollouts_used']}/{progress['max_rollouts']} rollouts"
        )
    print(
        f"status requests: {done} done ({errors} errors) at concurrency {args.concurrency} "
        f"in {wall:.2f} s -> {done / wall:.0f} req/s; latency p50 {cuts[49] * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    got = [r["events"] for r in results]
    firsts = [r["first_byte_s"] for r in results if r["first_byte_s"] is not None]
    print(
        f"event streams: {len(results)} concurrent, {sum(got)} events received "
        f"(min {min(got)}, max {max(got)} per stream), errors "
        f"{sum(r['error'] is not None for r in results)}, all in seq order: "
        f"{all(r['ordered'] for r in results)}, first byte p50 "
        f"{statistics.median(firsts) * 1000 if firsts else float('nan'):.1f} ms"
    )
    return {
        "rps": done / wall,
        "p50": cuts[49],
        "p99": cuts[98],
        "errors": errors + sum(r["error"] is not None for r in results),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="status requests in all")
    parser.add_argument("--concurrency", type=int, default=50, help="status requests in flight")
    parser.add_argument("--streams", type=int, default=20, help="concurrent SSE streams")
    parser.add_argument("--duration", type=float, default=30.0, help="upper bound, seconds")
    parser.add_argument("--jobs", type=int, default=4, help="jobs submitted (running + queued)")
    parser.add_argument("--max-jobs", type=int, default=2, help="jobs the server runs at once")
    parser.add_argument("--budget", type=int, default=5000, help="rollouts per job")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per rollout")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="first load a server built from this git revision's src (e.g. the code before a "
        "change), then this checkout's, and print both side by side",
    )
    parser.add_argument(
        "--plain-baseline",
        action="store_true",
        help="serve the baseline with uvicorn's pure-Python parser and asyncio's loop (its "
        "environment before httptools and uvloop were dependencies)",
    )
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.delay, args.max_jobs, args.plain)
        return

    runs: dict[str, dict[str, float]] = {}
    if args.baseline:
        print(f"== baseline: {args.baseline} (jobs in the server's threads)")
        runs["baseline"] = one_run(args, baseline_src(args.baseline), plain=args.plain_baseline)
        print("== this checkout (jobs in child processes, as `policyopt serve` runs them)")
    runs["current"] = one_run(args, None)
    if "baseline" in runs:
        old, new = runs["baseline"], runs["current"]
        print(
            f"side by side: {old['rps']:.0f} -> {new['rps']:.0f} req/s "
            f"(x{new['rps'] / old['rps']:.1f}); p50 {old['p50'] * 1000:.0f} -> "
            f"{new['p50'] * 1000:.0f} ms; p99 {old['p99'] * 1000:.0f} -> {new['p99'] * 1000:.0f} "
            f"ms; errors {old['errors']:.0f} -> {new['errors']:.0f}"
        )


def baseline_src(rev: str) -> tempfile.TemporaryDirectory[str]:
    """The ``src`` folder of git revision ``rev``, exported into a temporary directory."""
    folder = tempfile.TemporaryDirectory()
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder.name], input=archive, check=True)
    return folder


def one_run(
    args: argparse.Namespace, src: tempfile.TemporaryDirectory[str] | None, plain: bool = False
) -> dict[str, float]:
    """Start a server child (this checkout, or the exported ``src``), load it, stop it."""
    port = free_port()
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        if src is not None:
            env["PYTHONPATH"] = str(Path(src.name) / "src")
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(port),
                root,
                "--delay",
                str(args.delay),
                "--max-jobs",
                str(args.max_jobs),
                *(["--plain"] if plain else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("the server did not start")
            return asyncio.run(run(args, f"http://127.0.0.1:{port}"))
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if src is not None:
                src.cleanup()


if __name__ == "__main__":
    main()
