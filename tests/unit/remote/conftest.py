"""Live task apps on 127.0.0.1 for the remote tests: a scripted program (no LM) and helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from policyopt import Program, Score
from policyopt.remote._serving import serve_in_thread
from policyopt.remote.taskapp.app import current_policy, task_app

API_KEY = "test-key-123"

#: a small dataset with string and int ids in three splits
DATASET: dict[str, list[dict[str, Any]]] = {
    "train": [{"id": "hot", "answer": "cold"}, {"id": "big", "answer": "small"}, {"id": 7}],
    "val": [{"id": "wet", "answer": "dry"}, {"id": "boom"}, {"id": "huge"}],
    "test": [{"id": "up", "answer": "down"}],
}


class Scripted:
    """evaluate: 1.0 when the prompt names 'opposite'; 'boom' raises; 'huge' scores 2.0.

    Records every call (prompt, example id, policy) and can be told to block, so tests can
    check concurrency and that the server stays responsive.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, prompt: Any, example: dict[str, Any]) -> Score:
        with self.lock:
            self.calls.append((prompt, str(example["id"]), current_policy()))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if example["id"] == "boom":
            raise RuntimeError("the model server is down")
        if example["id"] == "huge":
            return Score(2.0)
        ok = "opposite" in str(prompt)
        return Score(
            float(ok),
            feedback=None if ok else f"expected {example.get('answer')}",
            output={"said": "cold" if ok else "warm", "n": 1},
            objectives={"accuracy": float(ok), "brevity": 0.5},
        )


@pytest.fixture
def scripted() -> Scripted:
    return Scripted()


@pytest.fixture
def app_url(scripted: Scripted) -> Iterator[str]:
    """A task app with an API key, serving the scripted program on DATASET."""
    app = task_app(Program("Answer.", scripted), DATASET, api_key=API_KEY, name="scripted")
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def open_app_url(scripted: Scripted) -> Iterator[str]:
    """The same task app without an API key."""
    with serve_in_thread(task_app(Program("Answer.", scripted), DATASET)) as url:
        yield url


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False
