"""The language-neutral example: replay examples/task_app/exchange.json against live task apps.

The committed exchange is the protocol's reference. It is replayed, byte for byte in its
requests, against a Python task app serving the same toy task and, when node is installed,
against examples/task_app/server.mjs, a task app with no Python in it; then GEPA optimizes the
Node app's prompt through TaskAppClient.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policyopt import GEPA, Program, Score
from policyopt.remote._serving import serve_in_thread
from policyopt.remote.protocol import Health, RolloutRequest, RolloutResponse, TaskInfo
from policyopt.remote.taskapp.app import task_app
from policyopt.remote.taskapp.client import TaskAppClient

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "task_app"
EXCHANGE = json.loads((EXAMPLE_DIR / "exchange.json").read_text())["exchanges"]
KEY = "example-key"

TOY = {
    "train": [
        {"id": "hot", "word": "hot", "answer": "cold"},
        {"id": "big", "word": "big", "answer": "small"},
    ],
    "val": [{"id": "wet", "word": "wet", "answer": "dry"}],
    "test": [{"id": "up", "word": "up", "answer": "down"}],
}


def toy_evaluate(prompt: str, example: dict[str, Any]) -> Score:
    """The toy program of server.mjs, in Python."""
    output = example["answer"] if "opposite" in prompt.lower() else example["word"]
    ok = output == example["answer"]
    feedback = (
        None
        if ok
        else f"expected '{example['answer']}', got '{output}': the answer must be the "
        "opposite of the word"
    )
    return Score(float(ok), feedback=feedback, output=output, objectives={"accuracy": float(ok)})


@pytest.fixture(scope="module")
def python_app() -> Iterator[str]:
    app = task_app(
        Program("Repeat the word.", toy_evaluate),
        TOY,
        api_key=KEY,
        name="toy-antonyms",
        description="reply with the opposite of a word",
    )
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def node_app() -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    env = {**os.environ, "TASK_APP_API_KEY": KEY, "PORT": "0"}
    proc = subprocess.Popen(
        [node, str(EXAMPLE_DIR / "server.mjs")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(15)
        assert line and "listening on http://" in line[0], f"node did not start: {line}"
        yield line[0].split("listening on ")[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_example_bodies_are_valid_protocol_messages() -> None:
    bodies = {x["name"]: x for x in EXCHANGE}
    Health.model_validate(bodies["health"]["response"]["body"])
    TaskInfo.model_validate(bodies["task_info"]["response"]["body"])
    for exchange in EXCHANGE:
        if exchange["request"]["path"] == "/rollout":
            RolloutRequest.model_validate(exchange["request"]["body"])
            if exchange["response"]["status"] == 200:
                RolloutResponse.model_validate(exchange["response"]["body"])


def replay(url: str) -> None:
    with httpx.Client(timeout=10) as http:
        for exchange in EXCHANGE:
            request, expected = exchange["request"], exchange["response"]
            content = None
            if "body" in request:
                content = json.dumps(request["body"]).encode()
            answer = http.request(
                request["method"], url + request["path"], headers=request["headers"],
                content=content,
            )  # fmt: skip
            name = exchange["name"]
            assert answer.status_code == expected["status"], (name, answer.text)
            assert answer.headers["content-type"].startswith("application/json"), name
            body = answer.json()
            if answer.status_code < 300:
                assert body == expected["body"], name
            else:
                assert isinstance(body["detail"], str) and body["detail"], name


def test_replay_against_the_python_task_app(python_app: str) -> None:
    replay(python_app)


def test_the_python_task_app_answers_the_exact_error_texts(python_app: str) -> None:
    with httpx.Client(timeout=10) as http:
        for exchange in EXCHANGE:
            request, expected = exchange["request"], exchange["response"]
            body = request.get("body")
            answer = http.request(
                request["method"], python_app + request["path"], headers=request["headers"],
                json=body,
            )  # fmt: skip
            assert answer.json() == expected["body"], exchange["name"]


def test_replay_against_the_node_task_app(node_app: str) -> None:
    replay(node_app)


@pytest.mark.parametrize("which", ["python_app", "node_app"])
def test_gepa_optimizes_a_task_app_through_the_client(
    which: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(which)
    proposal = "```\nGive the opposite of the word.\n```"
    with TaskAppClient(url, KEY) as client:
        ids = client.task_info()
        program = client.program("Repeat the word.", {"temperature": 0})
        result = GEPA(
            reflection_lm=lambda text: proposal,
            max_rollouts=30,
            minibatch_size=2,
            n_jobs=2,
            progress=False,
        ).optimize(
            program,
            [{"id": i} for i in ids.ids("train")],
            [{"id": i} for i in ids.ids("val")],
        )
        test_score = client.rollout("up", result.best_prompt).score
    assert result.best_prompt == "Give the opposite of the word."
    assert result.best_score == 1.0
    assert result.candidates[0].val_score == 0.0
    assert test_score == 1.0
