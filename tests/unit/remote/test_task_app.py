"""The task app served by uvicorn on 127.0.0.1: protocol, auth, errors, limits, threading."""

from __future__ import annotations

import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from policyopt import Program, Score
from policyopt.errors import ConfigError, DatasetError
from policyopt.remote._serving import ServerThread, serve_in_thread
from policyopt.remote.protocol import ROLLOUT_FAILED, RolloutFailure, TaskInfo
from policyopt.remote.taskapp.app import load_app, task_app
from policyopt.tasks import get_task
from tests.unit.remote.conftest import API_KEY, DATASET, Scripted

pytestmark = pytest.mark.waits  # see tests/conftest.py

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ROUTES = [
    ("GET", "/health", None),
    ("GET", "/task_info", None),
    ("POST", "/rollout", {"example_id": "hot", "prompt": "Give the opposite."}),
]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_health_and_task_info(app_url: str, http: httpx.Client) -> None:
    health = http.get(f"{app_url}/health", headers=AUTH)
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "healthy": True,
        "service": "scripted",
        "protocol_version": 1,
        "auth_required": True,
    }
    info = TaskInfo.model_validate(http.get(f"{app_url}/task_info", headers=AUTH).json())
    assert info.name == "scripted"
    assert info.splits == {"train": ["hot", "big", "7"], "val": ["wet", "boom", "huge"],
                           "test": ["up"]}  # fmt: skip
    assert info.counts == {"train": 3, "val": 3, "test": 1}


def test_rollout_answers_score_feedback_objectives_output(
    app_url: str, http: httpx.Client, scripted: Scripted
) -> None:
    body = {"example_id": "big", "prompt": "Say a word.", "policy": {"model": "m", "t": 0.5}}
    answer = http.post(f"{app_url}/rollout", json=body, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json() == {
        "example_id": "big",
        "score": 0.0,
        "feedback": "expected small",
        "objectives": {"accuracy": 0.0, "brevity": 0.5},
        "output": {"said": "warm", "n": 1},
    }
    # evaluate got the prompt, the dataset's own example (found by id) and the policy
    assert scripted.calls == [("Say a word.", "big", {"model": "m", "t": 0.5})]
    ok = http.post(f"{app_url}/rollout", json={"example_id": "7", "prompt": "opposite"},
                   headers=AUTH)  # fmt: skip
    assert ok.json()["score"] == 1.0


def test_output_that_is_not_json_comes_back_as_its_repr(http: httpx.Client) -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 42>"

    program = Program("p", lambda prompt, ex: Score(0.5, output=Thing()))
    with serve_in_thread(task_app(program, {"train": [{"id": "a"}]})) as url:
        answer = http.post(f"{url}/rollout", json={"example_id": "a", "prompt": "x"}).json()
    assert answer["output"] == "<Thing 42>"
    assert answer["score"] == 0.5


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": API_KEY}],
    ids=["no-key", "wrong-bearer", "wrong-x-api-key", "no-bearer-prefix"],
)
def test_every_route_needs_the_key(
    app_url: str, http: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    answer = http.request(method, f"{app_url}{path}", json=body, headers=headers)
    assert answer.status_code == 401
    assert "API key" in answer.json()["detail"]
    assert API_KEY not in answer.text  # never echo key material


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_bearer_and_x_api_key_both_work(
    app_url: str, http: httpx.Client, method: str, path: str, body: Any
) -> None:
    for headers in (AUTH, {"X-API-Key": API_KEY}, {"authorization": f"bearer {API_KEY}"}):
        answer = http.request(method, f"{app_url}{path}", json=body, headers=headers)
        assert answer.status_code == 200, answer.text


def test_no_key_configured_means_open(open_app_url: str, http: httpx.Client) -> None:
    health = http.get(f"{open_app_url}/health")
    assert health.status_code == 200
    assert health.json()["auth_required"] is False


def test_unknown_example_id_is_404_with_a_clear_message(app_url: str, http: httpx.Client) -> None:
    answer = http.post(f"{app_url}/rollout", json={"example_id": "nope", "prompt": "x"},
                       headers=AUTH)  # fmt: skip
    assert answer.status_code == 404
    assert "unknown example id 'nope'" in answer.json()["detail"]
    assert "/task_info" in answer.json()["detail"]


def test_evaluate_raising_is_a_500_rollout_failure(app_url: str, http: httpx.Client) -> None:
    answer = http.post(f"{app_url}/rollout", json={"example_id": "boom", "prompt": "x"},
                       headers=AUTH)  # fmt: skip
    assert answer.status_code == 500
    failure = RolloutFailure.model_validate(answer.json())
    assert failure.error.type == ROLLOUT_FAILED
    assert failure.error.exception == "RuntimeError"
    assert "the model server is down" in failure.error.message
    assert failure.example_id == "boom"
    # and the app keeps serving
    assert http.get(f"{app_url}/health", headers=AUTH).status_code == 200


def test_a_score_outside_0_1_is_a_rollout_failure(app_url: str, http: httpx.Client) -> None:
    answer = http.post(f"{app_url}/rollout", json={"example_id": "huge", "prompt": "x"},
                       headers=AUTH)  # fmt: skip
    assert answer.status_code == 500
    assert "[0, 1]" in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 422),
        (b'{"example_id": "hot"}', 422),  # prompt missing
        (b'{"example_id": "hot", "prompt": "x", "extra": 1}', 422),  # unknown field
        (b'{"example_id": "hot", "prompt": 3}', 422),
        (b'["hot", "x"]', 422),
    ],
)
def test_malformed_rollouts_are_422(
    app_url: str, http: httpx.Client, content: bytes, status: int
) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    answer = http.post(f"{app_url}/rollout", content=content, headers=headers)
    assert answer.status_code == status
    assert http.get(f"{app_url}/health", headers=AUTH).status_code == 200


def test_oversized_bodies_are_413_by_header_and_by_stream(http: httpx.Client) -> None:
    app = task_app(Program("p", lambda p, e: 1.0), {"train": [{"id": "a"}]}, max_body_bytes=4096)
    with serve_in_thread(app) as url:
        big = {"example_id": "a", "prompt": "x" * 5000}
        answer = http.post(f"{url}/rollout", json=big)
        assert answer.status_code == 413
        assert "at most 4096 bytes" in answer.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no content-length: the middleware counts
            yield b'{"example_id": "a", "prompt": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = http.post(f"{url}/rollout", content=chunks(),
                             headers={"content-type": "application/json"})  # fmt: skip
        assert streamed.status_code == 413
        small = http.post(f"{url}/rollout", json={"example_id": "a", "prompt": "ok"})
        assert small.status_code == 200


def test_evaluate_runs_off_the_event_loop(app_url: str, scripted: Scripted) -> None:
    """While one evaluate blocks, /health still answers at once (evaluate is in a thread)."""
    scripted.gate = threading.Event()
    results: list[int] = []

    def slow() -> None:
        with httpx.Client(timeout=15) as client:
            body = {"example_id": "hot", "prompt": "opposite"}
            results.append(client.post(f"{app_url}/rollout", json=body, headers=AUTH).status_code)

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        assert scripted.entered.wait(5)
        started = time.perf_counter()
        with httpx.Client(timeout=5) as client:
            assert client.get(f"{app_url}/health", headers=AUTH).status_code == 200
        assert time.perf_counter() - started < 5.0  # the gate holds evaluate for 10 s
        assert not results  # the rollout is still blocked
    finally:
        scripted.gate.set()
        worker.join(10)
    assert results == [200]


def test_concurrent_rollouts_all_answer(app_url: str, scripted: Scripted) -> None:
    ids = ["hot", "big", "7", "wet", "up"] * 4
    out: dict[int, float] = {}

    def call(i: int, ident: str) -> None:
        with httpx.Client(timeout=15) as client:
            body = {"example_id": ident, "prompt": "opposite"}
            out[i] = client.post(f"{app_url}/rollout", json=body, headers=AUTH).json()["score"]

    threads = [threading.Thread(target=call, args=(i, x)) for i, x in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert out == dict.fromkeys(range(len(ids)), 1.0)
    assert len(scripted.calls) == len(ids)


def test_a_task_serves_its_splits() -> None:
    task = get_task("antonyms")
    program = task.program(lambda text: "The opposite is cold.")
    with serve_in_thread(task_app(program, task)) as url, httpx.Client(timeout=10) as http:
        info = TaskInfo.model_validate(http.get(f"{url}/task_info").json())
        assert info.name == "antonyms"
        assert info.counts == {"train": len(task.train), "val": len(task.val),
                               "test": len(task.test)}  # fmt: skip
        answer = http.post(f"{url}/rollout", json={"example_id": "hot", "prompt": "p"}).json()
    assert answer["score"] == 1.0
    assert "cold" in answer["feedback"]


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"train": [{"word": "x"}]}, "needs an 'id'"),
        ({"train": [{"id": "a"}], "val": [{"id": "a"}]}, "appears twice"),
        ({"train": [{"id": True}]}, "needs an 'id'"),
        ({"train": "abc"}, "must be a list"),
        ({}, "no splits"),
        ([{"id": "a"}], "dict of split name"),
    ],
)
def test_bad_datasets_are_refused(dataset: Any, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        task_app(Program("p", lambda p, e: 1.0), dataset)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="policyopt.Program"):
        task_app(lambda p, e: 1.0, DATASET)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="api_key"):
        task_app(Program("p", lambda p, e: 1.0), DATASET, api_key="")
    with pytest.raises(ConfigError, match="max_body_bytes"):
        task_app(Program("p", lambda p, e: 1.0), DATASET, max_body_bytes=10)


def test_server_thread_restarts_on_the_same_port_and_runs_shutdown_hooks() -> None:
    closed: list[bool] = []
    app = task_app(Program("p", lambda p, e: 1.0), {"train": [{"id": "a"}]},
                   on_shutdown=lambda: closed.append(True))  # fmt: skip
    server = ServerThread(app).start()
    url, port = server.url, server.port
    server.stop()
    assert closed == [True]
    with socket.socket() as probe:  # nothing listens any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    server.start()
    try:
        assert server.url == url
        with httpx.Client(timeout=5) as http:
            assert http.get(f"{url}/health").status_code == 200
    finally:
        server.stop()


# ------------------------------------------------------------------------- load_app / CLI
@pytest.fixture
def apps_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("policyopt_test_apps")
    program = Program("p", lambda p, e: 1.0)
    module.app = task_app(program, {"train": [{"id": "a"}]})  # type: ignore[attr-defined]
    module.factory = lambda api_key=None: task_app(  # type: ignore[attr-defined]
        program, {"train": [{"id": "a"}]}, api_key=api_key
    )
    module.no_args = lambda: module.app  # type: ignore[attr-defined]
    module.number = 42  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_load_app_resolves_apps_and_factories(apps_module: types.ModuleType) -> None:
    assert load_app("policyopt_test_apps:app") is apps_module.app
    assert load_app("policyopt_test_apps:no_args") is apps_module.app
    keyed = load_app("policyopt_test_apps:factory", api_key="k")
    with serve_in_thread(keyed) as url, httpx.Client(timeout=5) as http:
        assert http.get(f"{url}/health").status_code == 401
        assert http.get(f"{url}/health", headers={"X-API-Key": "k"}).status_code == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "module:object"),
        ("policyopt_no_such_module:x", "Cannot import"),
        ("policyopt_test_apps:missing", "no attribute"),
        ("policyopt_test_apps:number", "expected a FastAPI app"),
    ],
)
def test_load_app_errors(apps_module: types.ModuleType, spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_app(spec)


def test_load_app_refuses_a_key_for_a_built_app(apps_module: types.ModuleType) -> None:
    with pytest.raises(ConfigError, match="cannot be added"):
        load_app("policyopt_test_apps:app", api_key="k")


def test_cli_task_app_reports_a_bad_target(apps_module: types.ModuleType) -> None:
    from policyopt.cli import app

    result = CliRunner().invoke(app, ["task-app", "policyopt_test_apps:number"])
    assert result.exit_code == 2
    assert "expected a FastAPI app" in result.output
    both = CliRunner().invoke(
        app, ["task-app", "policyopt_test_apps:app", "--api-key", "a", "--api-key-env", "B"]
    )
    assert both.exit_code != 0


def test_import_of_policyopt_remote_is_light() -> None:
    import subprocess

    code = (
        "import sys, policyopt.remote, policyopt.remote.config; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'httpx', 'litellm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_task_app_name_is_the_function() -> None:
    import policyopt.remote as remote
    import policyopt.remote.taskapp
    import policyopt.remote.taskapp.app

    assert remote.task_app is task_app
    assert policyopt.remote.taskapp.task_app is task_app


def test_an_async_evaluate_is_served_on_the_loop_without_a_thread_cap() -> None:
    """80 rollouts at once reach an async evaluate together (a sync endpoint's pool caps at 40),
    ``current_rollout()`` works inside it, and its exception is a rollout failure."""
    import asyncio

    from policyopt.remote.taskapp.app import current_rollout

    state = {"in_flight": 0, "peak": 0, "ids_seen": set()}
    lock = threading.Lock()

    async def evaluate(prompt: str, example: dict[str, Any]) -> Score:
        if example["id"] == "boom":
            raise RuntimeError("async evaluate failed")
        request = current_rollout()
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
            state["ids_seen"].add(request.example_id if request else None)
        await asyncio.sleep(0.4)
        with lock:
            state["in_flight"] -= 1
        return Score(1.0, feedback=f"ok {example['id']}")

    rows = [{"id": f"e{i}"} for i in range(80)] + [{"id": "boom"}]
    app = task_app(Program("p", evaluate), {"train": rows})
    with serve_in_thread(app) as url, httpx.Client(timeout=30) as http:
        results: list[int] = []

        def post(example_id: str) -> None:
            body = {"prompt": "p", "example_id": example_id}
            results.append(http.post(f"{url}/rollout", json=body).status_code)

        threads = [threading.Thread(target=post, args=(r["id"],)) for r in rows[:80]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        failed = http.post(f"{url}/rollout", json={"prompt": "p", "example_id": "boom"})
    assert results == [200] * 80
    assert state["peak"] > 40  # not bounded by a thread pool
    assert state["ids_seen"] == {f"e{i}" for i in range(80)}
    assert failed.status_code == 500
    failure = RolloutFailure.model_validate(failed.json())
    assert failure.error.type == ROLLOUT_FAILED and "async evaluate failed" in failure.error.message
