"""Test doubles and helpers shared by the job server's unit and end-to-end tests.

``ScriptedTaskApp`` stands in for a ``TaskAppClient`` (the runner accepts an injected factory):
it scores the synthetic keyword task in-process and counts every rollout it is asked for.
``keyword_dataset`` gives the same task as data for a real task app served over HTTP.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from policyopt import Program, Score
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import KEYWORDS, keyword_reflection_lm

OWNER_KEY = "key-alice-0123456789"
OTHER_KEY = "key-bob-9876543210"


def needs(n_train: int = 12, n_val: int = 12, n_test: int = 6) -> dict[str, str]:
    """Example id -> the keyword its prompt must contain (as in ``keyword_task``)."""
    out = {f"t{i}": KEYWORDS[i % len(KEYWORDS)] for i in range(n_train)}
    out.update({f"v{i}": KEYWORDS[(i + 1) % len(KEYWORDS)] for i in range(n_val)})
    out.update({f"x{i}": KEYWORDS[(i + 2) % len(KEYWORDS)] for i in range(n_test)})
    return out


def keyword_dataset(n_train: int = 12, n_val: int = 12, n_test: int = 6) -> dict[str, list[dict]]:
    """The keyword task as a task app's dataset (split -> examples with ids)."""
    table = needs(n_train, n_val, n_test)
    split = {"t": "train", "v": "val", "x": "test"}
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for ident, need in table.items():
        out[split[ident[0]]].append({"id": ident, "need": need})
    return out


def keyword_evaluate(prompt: Any, example: dict[str, Any]) -> Score:
    """The keyword task's metric on an example that carries its ``need``."""
    ok = example["need"] in prompt
    return Score(
        float(ok), feedback=None if ok else f"The prompt lacks the word {example['need']}."
    )


def job_config(
    algorithm: str = "gepa",
    *,
    max_rollouts: int = 80,
    n_train: int = 12,
    n_val: int = 12,
    n_test: int = 6,
    url: str = "http://127.0.0.1:9",
    task_key: str | None = "task-key",
    section: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A job config dict (TOML-shaped) for the keyword task."""
    default: dict[str, Any] = (
        {"n_jobs": 2}
        if algorithm == "gepa"
        else {"n_jobs": 2, "num_candidates": 3, "num_trials": 6, "minibatch_size": 6}
    )
    table: dict[str, Any] = {
        "algorithm": algorithm,
        "task_app": {"url": url, "api_key": task_key},
        "initial_prompt": "Solve the task.",
        "ids": {
            "train": [f"t{i}" for i in range(n_train)],
            "val": [f"v{i}" for i in range(n_val)],
            "test": [f"x{i}" for i in range(n_test)],
        },
        "budget": {"max_rollouts": max_rollouts},
        "models": {"reflection": "local"},  # granted by default; tests inject the LM
        algorithm: section if section is not None else default,
        **extra,
    }
    if task_key is None:
        del table["task_app"]["api_key"]
    return {"policy_optimization": table}


def scripted_reflection(config: Any) -> Any:
    """Reflection LM factory for the runner: adds the missing keyword (GEPA) or proposes
    instructions that name one (MIPRO)."""
    if config.algorithm == "gepa":
        return keyword_reflection_lm()

    def answer(text: str) -> str:
        word = KEYWORDS[len(text) % len(KEYWORDS)]
        return f"```\nSolve it with {word} and alpha.\n```"

    return ScriptedLM(answer)


class FreshProposals:
    """A picklable reflection-LM factory (for jobs in child processes): every proposal is a
    prompt never seen before, so a search on a task it cannot solve never stalls."""

    def __call__(self, config: Any) -> ScriptedLM:
        count = itertools.count()
        return ScriptedLM(lambda text: f"```\nSolve the task, take {next(count)}.\n```")


class ScriptedTaskApp:
    """A stand-in ``TaskAppClient``: scores the keyword task locally, counts rollouts.

    ``delay`` slows each rollout (to catch a job mid-run); ``healthy=False`` fails the health
    check; ``fail_after`` makes every rollout after that many raise (a task app gone down).
    """

    def __init__(
        self, *, delay: float = 0.0, healthy: bool = True, fail_after: int | None = None
    ) -> None:
        self.delay = delay
        self.healthy = healthy
        self.fail_after = fail_after
        self.calls: Counter[tuple[str, str]] = Counter()
        self.table = needs(50, 50, 50)
        self.closed = 0
        self._lock = threading.Lock()

    def factory(self, config: Any) -> ScriptedTaskApp:
        """What the runner calls to get a client for a job."""
        return self

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def health(self) -> dict[str, Any]:
        if not self.healthy:
            raise ConnectionError("connection refused")
        return {"status": "ok"}

    def program(self, prompt: str, policy: Any = None) -> Program:
        return Program(prompt, self.evaluate)

    def evaluate(self, prompt: Any, example: dict[str, Any]) -> Score:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            if self.fail_after is not None and sum(self.calls.values()) >= self.fail_after:
                raise ConnectionError("task app unreachable")
            self.calls[(str(prompt), example["id"])] += 1
        return keyword_evaluate(prompt, {"need": self.table[example["id"]]})

    def close(self) -> None:
        self.closed += 1


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


class SlowKeywordEvaluate:
    """The keyword task's evaluate with a fixed latency per rollout (picklable, no state)."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay

    def __call__(self, prompt: Any, example: dict[str, Any]) -> Score:
        time.sleep(self.delay)
        return keyword_evaluate(prompt, example)


def keyword_app(api_key: str | None = None) -> Any:
    """A real task app serving the keyword task (``policyopt task-app`` loads it by name)."""
    from policyopt.remote.taskapp.app import task_app

    program = Program("Solve the task.", SlowKeywordEvaluate())
    return task_app(program, keyword_dataset(50, 50, 50), api_key=api_key, name="keyword")


def serve_scripted(port: int, root: str) -> None:
    """A job server process whose reflection LM is scripted (rollouts still go over HTTP to the
    task app through TaskAppClient); run with ``python -c`` by the kill tests."""
    from pathlib import Path

    from policyopt.remote._serving import serve_forever
    from policyopt.remote.server.app import create_app

    app = create_app(
        Path(root) / "jobs.db",
        Path(root) / "runs",
        [OWNER_KEY],
        reflection_lm_factory=scripted_reflection,
    )
    serve_forever(app, port=port, log_level="warning")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedProcess:
    """A child process serving HTTP on a free port of 127.0.0.1, stopped by PID.

    ``command(port)`` is its argv; its output goes to ``log``.
    """

    def __init__(
        self, command: Callable[[int], list[str]], log: Path, cwd: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command(self.port), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def wait_healthy(self, headers: dict[str, str] | None = None, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not healthy in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def journal_keys(run_dir: Path) -> list[tuple[str, str, str]]:
    """(prompt, split, example) of every rollout a job's journal holds, in order."""
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return []
    keys = []
    text = path.read_text()
    # read while the job writes: a last line without its newline is still being written
    lines = text.split("\n")[:-1] if not text.endswith("\n") else text.splitlines()
    for line in lines:
        if '"type":"rollout"' in line:
            record = json.loads(line)
            keys.append((record["prompt"], record["split"], record["example"]))
    return keys
