"""The job server over real HTTP (uvicorn on 127.0.0.1): jobs, events, SSE, cancel, queueing,
restart, and the security cases (each a clear 4xx, and the server keeps serving after)."""

from __future__ import annotations

import itertools
import json
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policyopt.errors import ConfigError
from policyopt.remote._serving import ServerThread
from policyopt.remote.client import parse_sse
from policyopt.remote.server.app import create_app, load_api_keys
from policyopt.remote.store import JobState, JobStore
from tests.integration.remote.support import (
    OTHER_KEY,
    OWNER_KEY,
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
    wait_for,
)

pytestmark = pytest.mark.waits  # see tests/conftest.py

JOBS = "/api/policy-optimization/online/jobs"
TERMINAL = {"succeeded", "failed", "cancelled"}


class Server:
    """A job server on a free port with a scripted task app; ``restart()`` keeps the files."""

    def __init__(self, root: Path, task: ScriptedTaskApp, **options: Any) -> None:
        self.root = root
        self.task = task
        self.options = {"max_concurrent_jobs": 2, **options}
        self.thread: ServerThread | None = None
        self.start()

    def start(self) -> None:
        app = create_app(
            self.root / "jobs.db",
            self.root / "runs",
            {"alice": OWNER_KEY, "bob": OTHER_KEY},
            task_app_factory=self.task.factory,
            reflection_lm_factory=scripted_reflection,
            **self.options,
        )
        self.thread = ServerThread(app).start()
        self.url = self.thread.url

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop(timeout=30)
            self.thread = None

    def client(self, key: str | None = OWNER_KEY) -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(task: ScriptedTaskApp | None = None, **options: Any) -> Server:
        server = Server(tmp_path / f"s{len(servers)}", task or ScriptedTaskApp(), **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def submit(http: httpx.Client, config: dict[str, Any] | None = None, **kw: Any) -> str:
    response = http.post(JOBS, json=config or job_config(**kw))
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def finish(http: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"{JOBS}/{job_id}").json()
        return body if body["status"] in TERMINAL else None

    return dict(wait_for(done, timeout))


def events(http: httpx.Client, job_id: str, since: int = 0) -> list[dict[str, Any]]:
    return list(http.get(f"{JOBS}/{job_id}/events", params={"since_seq": since}).json()["events"])


# ------------------------------------------------------------------------------ jobs
def test_health_needs_no_key(server: Server) -> None:
    with server.client(None) as anonymous:
        body = anonymous.get("/health").json()
    assert body["status"] == "ok" and body["jobs"] == {"running": 0, "queued": 0}


def test_gepa_job_runs_to_success_with_results_and_events(
    server: Server, http: httpx.Client
) -> None:
    job_id = submit(http, max_rollouts=80)
    status = finish(http, job_id)
    assert status["status"] == "succeeded", status
    assert status["algorithm"] == "gepa" and status["error"] is None
    assert 0 < status["progress"]["rollouts_used"] <= status["progress"]["max_rollouts"] == 80
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]

    results = http.get(f"{JOBS}/{job_id}/results").json()
    assert results["final"] and results["stop_reason"]
    top = results["top_prompts"]
    assert [p["rank"] for p in top] == list(range(1, len(top) + 1))
    scores = [p["val_score"] for p in top]
    assert scores == sorted(scores, reverse=True) and len(top) >= 2
    assert top[0]["prompt"] == results["best_prompt"] == status["best_prompt"]
    assert results["best_score"] == pytest.approx(top[0]["val_score"])
    assert results["best_score"] > 0 and results["best_prompt"] != "Solve the task."
    kinds = {h["type"] for h in results["history"]}
    assert kinds == {"candidate.proposed", "candidate.new_best"}
    test = results["test"]
    assert test["n_examples"] == 6 and test["seed"] == 0.0 and test["best"] > 0
    usage = results["usage"]
    assert usage["rollouts"] == status["progress"]["rollouts_used"]
    # every rollout the search and the test used was paid exactly once at the task app
    assert server.task.total == usage["rollouts"] + usage["test_rollouts"]
    assert max(server.task.calls.values()) == 1
    assert server.task.closed == 1

    stream = events(http, job_id)
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    types = [e["type"] for e in stream]
    assert types[:3] == ["job.created", "job.queued", "job.started"]
    assert types[-1] == "job.succeeded" and types.count("job.succeeded") == 1
    assert {"run.started", "candidate.new_best", "test.evaluated", "run.finished"} <= set(types)
    # every answer of the reflection LM is judged, accepted or rejected with a reason code
    judged = [e["data"] for e in stream if e["type"] == "proposal.judged"]
    assert judged and {j["verdict"] for j in judged} <= {"accepted", "rejected"}
    later = events(http, job_id, since=len(stream) - 2)
    assert [e["seq"] for e in later] == [len(stream) - 1, len(stream)]
    listed = http.get(JOBS).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job_id]
    assert "task-key" not in json.dumps(listed) + json.dumps(results)  # the config's key


def test_mipro_job_runs_to_success(server: Server, http: httpx.Client) -> None:
    job_id = submit(http, job_config("mipro", max_rollouts=90))
    status = finish(http, job_id)
    assert status["status"] == "succeeded", status
    results = http.get(f"{JOBS}/{job_id}/results").json()
    assert results["algorithm"] == "mipro" and results["top_prompts"][0]["rank"] == 1
    assert results["usage"]["rollouts"] <= 90
    assert results["usage"]["lm_usage"]["proposer"]["calls"] >= 1


def test_legacy_root_and_synth_envelope(server: Server, http: httpx.Client) -> None:
    table = job_config(max_rollouts=80)["policy_optimization"]
    envelope = {
        "algorithm": "gepa",
        "config_body": {"prompt_learning": table},
        "overrides": {"budget.max_rollouts": 40},
        "metadata": {"who": "ci"},
        "auto_start": True,
    }
    response = http.post("/api/prompt-learning/online/jobs", json=envelope)
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    assert response.json()["progress"]["max_rollouts"] == 40
    assert finish(http, job_id)["status"] == "succeeded"
    assert http.get(f"/api/prompt-learning/online/jobs/{job_id}").status_code == 200
    mismatch = {**envelope, "algorithm": "mipro"}
    response = http.post(JOBS, json=mismatch)
    assert response.status_code == 422 and "disagrees" in response.json()["detail"]


# ------------------------------------------------------------------------------ security
ROUTES = [
    ("GET", JOBS),
    ("POST", JOBS),
    ("GET", JOBS + "/po_0000000000000000"),
    ("GET", JOBS + "/po_0000000000000000/results"),
    ("GET", JOBS + "/po_0000000000000000/events"),
    ("GET", JOBS + "/po_0000000000000000/events/stream"),
    ("POST", JOBS + "/po_0000000000000000/cancel"),
    ("POST", "/api/jobs/po_0000000000000000/cancel"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic " + OWNER_KEY, "Bearer"])
def test_every_api_route_needs_a_valid_key(
    server: Server, method: str, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    with server.client(None) as anonymous:
        response = anonymous.request(method, path, headers=headers, json=job_config())
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["detail"]
        assert anonymous.get("/health").status_code == 200


def test_another_keys_job_is_404_exactly_like_a_missing_one(
    server: Server, http: httpx.Client
) -> None:
    job_id = submit(http)
    with server.client(OTHER_KEY) as bob:
        for method, template in ROUTES[2:]:
            theirs = bob.request(method, template.replace("po_0000000000000000", job_id))
            missing = bob.request(method, template)
            assert theirs.status_code == missing.status_code == 404
            assert theirs.json() == missing.json()
        assert bob.get(JOBS).json()["jobs"] == []
    finish(http, job_id)
    assert http.get(f"{JOBS}/{job_id}").json()["cancel_requested"] is False


@pytest.mark.parametrize(
    ("body", "content_type", "code", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe\x00", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 422, "JSON object"),
        (pickle.dumps({"algorithm": "gepa"}), "application/octet-stream", 415, "JSON"),
        (pickle.dumps({"algorithm": "gepa"}), "application/python-pickle", 415, "JSON"),
    ],
)
def test_malformed_bodies_are_clear_4xx(
    server: Server,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    content_type: str,
    code: int,
    needle: str,
) -> None:
    unpickled: list[Any] = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: unpickled.append(a))
    response = http.post(JOBS, content=body, headers={"Content-Type": content_type})
    assert response.status_code == code, response.text
    assert needle in response.json()["detail"]
    assert unpickled == []
    assert http.get(JOBS).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"algorithm": "sgd"}, "valid algorithms: gepa, mipro"),
        ({"budgett": {"max_rollouts": 5}}, "budgett"),
        ({"gepa": {"minibatch_sise": 3}}, "gepa.minibatch_sise"),
        ({"task_app": {"url": "http://127.0.0.1:9", "api_key_env": "HOME"}}, "api_key_env"),
        ({"models": {"reflection": "local", "api_base": "http://10.0.0.1"}}, "api_base"),
        ({"models": {"reflection": "cerebras/x"}}, "allowed: local"),
    ],
)
def test_invalid_configs_are_422_with_the_config_error(
    server: Server, http: httpx.Client, change: dict[str, Any], needle: str
) -> None:
    config = job_config()
    config["policy_optimization"].update(change)
    response = http.post(JOBS, json=config)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert http.get(JOBS).json()["jobs"] == []


def test_oversized_bodies_are_413_by_header_and_by_stream(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(max_body_bytes=4096)
    big = b'{"x": "' + b"a" * 10_000 + b'"}'
    with server.client() as http:
        response = http.post(JOBS, content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "4096 bytes" in response.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
            for _ in range(10):
                yield b"a" * 1000

        response = http.post(JOBS, content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert "content-length" not in response.request.headers  # really streamed
        assert http.get(JOBS).status_code == 200
        assert submit(http)  # a normal job still fits


def test_per_key_limit_of_unfinished_jobs(make_server: Callable[..., Server]) -> None:
    server = make_server(
        ScriptedTaskApp(delay=0.05), max_concurrent_jobs=1, max_active_jobs_per_key=2
    )
    with server.client() as http:
        first, second = submit(http), submit(http)
        response = http.post(JOBS, json=job_config())
        assert response.status_code == 429 and "unfinished" in response.json()["detail"]
        with server.client(OTHER_KEY) as bob:
            assert submit(bob)  # the limit is per key
        for job_id in (first, second):
            http.post(f"/api/jobs/{job_id}/cancel")


def test_create_app_needs_keys_and_loads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="at least one API key"):
        create_app(tmp_path / "j.db", tmp_path / "runs", [])
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nk-file-1\n\nk-file-2  # ci\n")
    monkeypatch.setenv("POLICYOPT_API_KEYS", "k-env-1, k-env-2,,k-arg")
    assert load_api_keys(["k-arg"], keys_file=keys_file) == [
        "k-arg",
        "k-env-1",
        "k-env-2",
        "k-file-1",
        "k-file-2",
    ]
    with pytest.raises(ConfigError, match="does not exist"):
        load_api_keys([], keys_file=tmp_path / "missing")


# ------------------------------------------------------------------------------ queue, cancel
def test_bounded_concurrency_queues_the_rest(make_server: Callable[..., Server]) -> None:
    server = make_server(ScriptedTaskApp(delay=0.01), max_concurrent_jobs=1)
    with server.client() as http:
        ids = [submit(http, max_rollouts=60) for _ in range(3)]
        states = [http.get(f"{JOBS}/{i}").json()["status"] for i in ids]
        assert states.count("running") <= 1 and "queued" in states
        for job_id in ids:
            assert finish(http, job_id)["status"] == "succeeded"
        windows = []
        for job_id in ids:
            stream = {e["type"]: e["ts"] for e in events(http, job_id)}
            windows.append((stream["job.started"], stream["job.succeeded"]))
    windows.sort()
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start >= end  # never two at once


def test_cancel_a_queued_job_and_a_running_one(make_server: Callable[..., Server]) -> None:
    task = ScriptedTaskApp(delay=0.03)
    server = make_server(task, max_concurrent_jobs=1)
    with server.client() as http:
        running = submit(http, max_rollouts=400)
        waiting = submit(http, max_rollouts=400)
        wait_for(lambda: http.get(f"{JOBS}/{running}").json()["status"] == "running")
        body = http.post(f"/api/jobs/{waiting}/cancel", json={"reason": "not needed"}).json()
        assert body["status"] == "cancelled"
        wait_for(lambda: http.get(f"{JOBS}/{running}").json()["progress"]["rollouts_used"] > 20)
        body = http.post(f"{JOBS}/{running}/cancel", json={"reason": "enough"}).json()
        assert body["cancel_requested"] and "next check" in body["message"]
        status = finish(http, running)
        assert status["status"] == "cancelled"
        assert status["progress"]["rollouts_used"] < 400
        results = http.get(f"{JOBS}/{running}/results").json()
        assert results["final"] and results["top_prompts"]  # partial results kept
        assert results["stop_reason"] == "stop_file"
        types = [e["type"] for e in events(http, running)]
        assert types[-1] == "job.cancelled" and "job.cancel_requested" in types
        assert "job.started" not in [e["type"] for e in events(http, waiting)]
        again = http.post(f"/api/jobs/{running}/cancel").json()
        assert again["status"] == "cancelled" and "already ended" in again["message"]
        bad = http.post(f"/api/jobs/{running}/cancel", json={"reason": 5})
        assert bad.status_code == 422


# ------------------------------------------------------------------------------ failures
def test_unhealthy_task_app_fails_the_job_with_the_reason(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(ScriptedTaskApp(healthy=False))
    with server.client() as http:
        status = finish(http, submit(http))
    assert status["status"] == "failed"
    assert "not healthy" in status["error"] and "connection refused" in status["error"]


def test_task_app_going_down_fails_the_job_in_bounded_time(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(ScriptedTaskApp(fail_after=30))
    with server.client() as http:
        started = time.monotonic()
        job_id = submit(http, max_rollouts=300)
        status = finish(http, job_id, timeout=30)
        assert time.monotonic() - started < 30
        last = events(http, job_id)[-1]
    assert status["status"] == "failed"
    assert "max_errors" in status["error"] and "task app unreachable" in status["error"]
    assert last["type"] == "job.failed" and last["level"] == "error"


# ------------------------------------------------------------------------------ SSE
def read_stream(
    http: httpx.Client, job_id: str, last_event_id: int | None = None
) -> tuple[list[dict[str, Any]], str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with http.stream("GET", f"{JOBS}/{job_id}/events/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    parsed = list(parse_sse(raw.splitlines()))
    for item in parsed:
        assert json.loads(item["data"])["seq"] == int(item["id"])
        assert json.loads(item["data"])["type"] == item["event"]
    return [json.loads(i["data"]) for i in parsed], raw


def test_sse_streams_live_until_the_terminal_event_and_resumes(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(ScriptedTaskApp(delay=0.01), keepalive_s=0.2, poll_interval=0.05)
    with server.client() as http:
        job_id = submit(http, max_rollouts=60)
        live, raw = read_stream(http, job_id)  # opened while the job runs
        seqs = [e["seq"] for e in live]
        assert seqs == list(range(1, len(seqs) + 1))
        assert live[-1]["type"] == "job.succeeded" and raw.startswith("retry:")
        assert http.get(f"{JOBS}/{job_id}").json()["status"] == "succeeded"
        resumed, _ = read_stream(http, job_id, last_event_id=seqs[-4])
        assert [e["seq"] for e in resumed] == seqs[-3:]
        after_end, _ = read_stream(http, job_id, last_event_id=seqs[-1])
        assert after_end == []  # nothing after the end: the stream closes at once
        bad = http.get(f"{JOBS}/{job_id}/events/stream", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400


def test_sse_sends_keepalives_while_a_job_waits(make_server: Callable[..., Server]) -> None:
    server = make_server(ScriptedTaskApp(delay=0.2), max_concurrent_jobs=1, keepalive_s=0.1)
    with server.client() as http:
        blocker = submit(http, max_rollouts=400)
        waiting = submit(http)
        chunks = []
        with http.stream("GET", f"{JOBS}/{waiting}/events/stream") as response:
            for line in response.iter_lines():
                chunks.append(line)
                if line.startswith(": keep-alive"):
                    break
        assert ": keep-alive" in chunks
        for job_id in (blocker, waiting):
            http.post(f"/api/jobs/{job_id}/cancel")


# ------------------------------------------------------------------------------ restart
def test_a_graceful_restart_requeues_and_resumes_without_repaying(
    make_server: Callable[..., Server],
) -> None:
    task = ScriptedTaskApp(delay=0.02)
    server = make_server(task, max_concurrent_jobs=1)
    with server.client() as http:
        job_id = submit(http, max_rollouts=120)
        wait_for(lambda: http.get(f"{JOBS}/{job_id}").json()["progress"]["rollouts_used"] > 30)
    server.stop()
    store = JobStore(server.root / "jobs.db")
    suspended = store.get_job(job_id)
    store.close()
    assert suspended is not None and suspended.status is JobState.QUEUED
    paid_before = task.total
    assert 0 < paid_before < 120
    server.start()
    with server.client() as http:
        status = finish(http, job_id)
        assert status["status"] == "succeeded"
        results = http.get(f"{JOBS}/{job_id}/results").json()
        types = [e["type"] for e in events(http, job_id)]
    assert "job.suspended" in types and types.count("job.started") == 2
    assert max(task.calls.values()) == 1  # no (prompt, example) paid twice
    assert task.total == results["usage"]["rollouts"] + results["usage"]["test_rollouts"]


def test_startup_fails_jobs_it_cannot_resume(
    tmp_path: Path, make_server: Callable[..., Server]
) -> None:
    root = tmp_path / "s0"
    store = JobStore(root / "jobs.db")
    broken = store.create_job(owner="x", algorithm="gepa", config={"algorithm": "nope"})
    store.transition(broken.id, JobState.RUNNING)
    tired = store.create_job(
        owner="x", algorithm="gepa", config=job_config()["policy_optimization"]
    )
    store.transition(tired.id, JobState.RUNNING, attempts=3)
    asked = store.create_job(
        owner="x", algorithm="gepa", config=job_config()["policy_optimization"]
    )
    store.transition(asked.id, JobState.RUNNING)
    store.request_cancel(asked.id, "stop it")
    store.close()
    make_server()  # tmp_path/s0: the same files
    store = JobStore(root / "jobs.db")
    try:
        first = store.get_job(broken.id)
        assert first is not None and first.status is JobState.FAILED
        assert "stored config is invalid" in (first.error or "")
        second = store.get_job(tired.id)
        assert second is not None and second.status is JobState.FAILED
        assert "interrupted 3 times" in (second.error or "")
        third = store.get_job(asked.id)
        assert third is not None and third.status is JobState.CANCELLED
        assert store.events(asked.id)[-1].type == "job.cancelled"
    finally:
        store.close()
