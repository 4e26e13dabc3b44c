"""Hypothesis property tests on every job-server route, against SQLite and PostgreSQL (issue
26: no 5xx, no reset, no locked-out key, on any input).

One real server per database (uvicorn on 127.0.0.1, a scripted task app and reflection LM).
For each route a valid request gets one hostile value (an extreme number or odd string; see
:mod:`tests.unit.remote.hostile`) in one location: the JSON body at any depth, the job id in
the path, a query parameter, or a header. Every answer must arrive, be under 500, carry a JSON
``detail`` when it is an error, and name no server path; afterwards the same key's valid
submit still answers 201 (or 429 from a quota), never a 5xx.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from policyopt import Program, Score
from policyopt.remote._serving import ServerThread
from policyopt.remote.server import create_app
from policyopt.remote.server.routers import API_ROOTS
from tests.integration.remote.postgres import PostgresServer, postgres_server
from tests.integration.remote.support import (
    OWNER_KEY,
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
    wait_for,
)
from tests.strategies import examples
from tests.unit.remote.hostile import (
    check_answer,
    hostile_request,
    leaks,
    send_hostile,
    send_raw,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: hostile requests per route and database
EXAMPLES = examples(20)
AUTH = {"Authorization": f"Bearer {OWNER_KEY}"}
AUTH_RAW = [(b"Authorization", f"Bearer {OWNER_KEY}".encode())]
JOBS = API_ROOTS[0]
#: route name -> (method, path template)
ROUTES = {
    "health": ("GET", "/health"),
    "openapi": ("GET", "/openapi.json"),
    "submit": ("POST", "{root}"),
    "list": ("GET", "{root}"),
    "status": ("GET", "{root}/{job_id}"),
    "results": ("GET", "{root}/{job_id}/results"),
    "events": ("GET", "{root}/{job_id}/events"),
    "stream": ("GET", "{root}/{job_id}/events/stream"),
    "cancel": ("POST", "{root}/{job_id}/cancel"),
    "old cancel": ("POST", "/api/jobs/{job_id}/cancel"),
}
#: the query each route takes when valid
QUERIES = {"list": {"limit": "5"}, "events": {"since_seq": "0", "limit": "10"}}
#: prompts whose rollouts / health check fail with an error naming a server file
UNREADABLE = "Read the unreadable file."
SICK = "The task app is sick."
# QUIET: the fuzzed jobs are SICK, so they never run a search: a search's rollout batches call
# ast.parse (joblib) in job threads, and CPython 3.11 shares the AST recursion counter between
# threads, so Hypothesis' and pytest's own parsing in the test thread failed now and then with
# "AST constructor recursion depth mismatch"
#: prompts whose task app answers text that no database or UTF-8 holds
GARBLED = "Garbled task."
GARBLED_FEEDBACK = "Garbled task, with feedback."
GARBLE = "bad \x00 nul \ud800 surrogate"


def small_config(**changes: Any) -> dict[str, Any]:
    """A valid job of a few rollouts."""
    config = job_config(max_rollouts=40, n_train=4, n_val=4, n_test=2)["policy_optimization"]
    config.update(changes)
    return config


class HostileTaskApp(ScriptedTaskApp):
    """The scripted task app, turned hostile by words in a job's prompt: :data:`UNREADABLE`
    rollouts and a :data:`SICK` health check fail with an OSError naming a file under the
    server's data directory (its owner must not see it); :data:`GARBLED` rollouts fail, and
    :data:`GARBLED_FEEDBACK` ones answer, with text holding a NUL and a lone surrogate."""

    def __init__(self, secret_place: Path, prompt: str = "") -> None:
        super().__init__(delay=0.02)
        self.secret_place = secret_place
        self.prompt = prompt

    def factory(self, config: Any) -> HostileTaskApp:
        return HostileTaskApp(self.secret_place, str(config.initial_prompt))

    def health(self) -> dict[str, Any]:
        if SICK in self.prompt:
            raise self.unreadable()
        if GARBLED in self.prompt and "health" in self.prompt:
            raise ConnectionError(GARBLE)
        return super().health()

    def program(self, prompt: str, policy: Any = None) -> Program:
        return Program(prompt, self.evaluate_or_fail)

    def evaluate_or_fail(self, prompt: Any, example: dict[str, Any]) -> Score:
        if UNREADABLE in str(prompt):
            raise self.unreadable()
        if GARBLED_FEEDBACK in str(prompt):
            return Score(0.5, feedback=GARBLE, output={GARBLE: GARBLE})
        if GARBLED in str(prompt):
            raise RuntimeError(GARBLE)
        return self.evaluate(prompt, example)

    def unreadable(self) -> OSError:
        return FileNotFoundError(2, "No such file or directory", str(self.secret_place))


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A job server on one database; its URL and its data directory."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db: str | Path = root / "jobs.db"
    else:
        db = request.getfixturevalue("pg").fresh_database(f"routes_{int(time.time() * 1000)}")
    app = create_app(
        db,
        root / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        task_app_factory=HostileTaskApp(root / "runs" / "secret" / "data.jsonl").factory,
        reflection_lm_factory=scripted_reflection,
        secret_file=root / "server.secret",
        max_active_jobs_per_key=100_000,
    )
    thread = ServerThread(app).start()
    try:
        yield thread.url, root
    finally:
        thread.stop(timeout=30)


@pytest.fixture(scope="module")
def http(server: tuple[str, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers=AUTH, timeout=30) as client:
        yield client


def submit(http: httpx.Client, **changes: Any) -> str:
    response = http.post(JOBS, json=small_config(**changes))
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def the_key_still_works(http: httpx.Client) -> None:
    """A valid submit by the same key answers 201 (or 429 from a quota), and the job can be
    read and cancelled: no hostile request locks the key out."""
    response = http.post(JOBS, json=small_config(initial_prompt=SICK))  # see QUIET
    assert response.status_code in (201, 429), response.text
    if response.status_code == 201:
        job_id = response.json()["job_id"]
        assert http.get(f"{JOBS}/{job_id}").status_code == 200
        assert http.post(f"{JOBS}/{job_id}/cancel").status_code == 200
    assert http.get(JOBS).status_code == 200


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_hostile_value_anywhere_in_a_route_is_never_a_5xx(
    server: tuple[str, Path], http: httpx.Client, route: str
) -> None:
    url, root = server
    job_id = submit(http, initial_prompt=SICK)  # see QUIET
    method, template = ROUTES[route]
    body: Any = None
    if route == "submit":
        body = small_config(initial_prompt=SICK)
    elif "cancel" in route:
        body = {"reason": "enough"}
    seen: Counter[str] = Counter()

    @seed(zlib.crc32(route.encode()))  # fixed, and different for each route
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data(), api_root=st.sampled_from(API_ROOTS))
    def run(data: st.DataObject, api_root: str) -> None:
        path = template.replace("{root}", api_root)
        params = {"job_id": job_id} if "{job_id}" in path else {}
        request = data.draw(hostile_request(path, params, QUERIES.get(route, {}), body, OWNER_KEY))
        answer = send_hostile(url, method, request)
        assert not leaks(answer.body.decode("utf-8", "replace"), str(root))
        seen[request.where.split(" ")[0]] += 1
        if route == "submit" and answer.status == 201:  # stored safely: readable, cancellable
            accepted = answer.json()["job_id"]
            assert http.get(f"{JOBS}/{accepted}").status_code == 200
            assert http.post(f"{JOBS}/{accepted}/cancel").status_code == 200
        the_key_still_works(http)

    run()
    http.post(f"{JOBS}/{job_id}/cancel")
    print(f"\n{route}: {sum(seen.values())} hostile requests, locations {dict(seen)}")
    assert sum(seen.values()) >= EXAMPLES // 2 and {"body", "query", "header"} <= set(seen), seen


@pytest.mark.parametrize("prompt", [UNREADABLE, SICK])
def test_errors_shown_to_a_jobs_owner_name_no_server_path(
    server: tuple[str, Path], http: httpx.Client, prompt: str
) -> None:
    """Rollouts that fail with an OSError naming a file under the server's data directory
    (reported in the events' ``last_error``, with the code location ``(at FILE:LINE)``), and a
    health check that does (the job's ``error``), show the owner the error with every path
    replaced by ``<path>``: in the status, the results, the events and the event stream.
    ``last_error`` showed both paths before."""
    root = server[1]
    job_id = submit(http, initial_prompt=prompt)
    job = wait_for(
        lambda: (
            (found := http.get(f"{JOBS}/{job_id}").json())["status"] in ("succeeded", "failed")
            and found
        )
    )
    events = http.get(f"{JOBS}/{job_id}/events", params={"limit": 5000})
    if prompt == SICK:
        assert job["status"] == "failed" and "not healthy" in job["error"], job
        assert "No such file or directory: '<path>'" in job["error"], job["error"]
    else:
        errors = [
            e["data"]["last_error"] for e in events.json()["events"] if e["data"].get("last_error")
        ]
        assert errors and all("FileNotFoundError" in e and "<path>" in e for e in errors), errors
    shown = [
        json.dumps(job),
        http.get(f"{JOBS}/{job_id}/results").text,
        events.text,
        http.get(f"{JOBS}/{job_id}/events/stream").text,  # the job has ended: so has this
    ]
    for text in shown:
        assert not leaks(text, str(root), "secret/data.jsonl", "test_fuzz_routes.py"), text[:500]


def test_regression_id_range_past_64_bits_is_a_422(
    server: tuple[str, Path], http: httpx.Client
) -> None:
    """ids.train = {start: 0, end: 2**63} was a 500 (len(range) OverflowError) on both
    databases; it is a 422 naming the range, and the key keeps working."""
    for bounds in ({"start": 0, "end": 2**63}, {"start": -(2**63) - 1, "end": 1}, {"end": 10**400}):
        config = small_config()
        config["ids"]["train"] = bounds
        response = http.post(JOBS, json=config)
        assert response.status_code == 422, response.text
        assert "range of" in response.json()["detail"] and "limit" in response.json()["detail"]
    the_key_still_works(http)


def test_regression_unparseable_http_is_a_json_400(server: tuple[str, Path]) -> None:
    """A request h11 cannot parse (a target of bytes that are not ASCII, a NUL in a header, a
    malformed Content-Length) was uvicorn's text/plain 400; it is JSON like every other error."""
    url, _ = server
    for target, headers, length in [
        (f"{JOBS}/\xff\xfe".encode("latin-1"), AUTH_RAW, None),
        (JOBS.encode(), [*AUTH_RAW, (b"Last-Event-ID", b"a\x00b")], None),
        (JOBS.encode(), AUTH_RAW, b"-1"),
    ]:
        answer = send_raw(url, "GET", target, headers, content_length=length)
        check_answer(answer, repr(target))
        assert answer.status == 400 and "Malformed HTTP request" in answer.json()["detail"]


def test_regression_a_body_cut_short_logs_no_server_error(server: tuple[str, Path]) -> None:
    """A client that leaves before its body arrives, or sends a malformed chunk size, made the
    route's ``request.body()`` raise ClientDisconnect: uvicorn logged "Exception in ASGI
    application" with a traceback (a 500 in the server's log) for every such request."""
    url, _ = server
    address = httpx.URL(url)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    log = logging.getLogger("uvicorn.error")
    log.addHandler(handler)
    json_head = [*AUTH_RAW, (b"Content-Type", b"application/json")]
    try:
        for target in (JOBS.encode(), f"{JOBS}/po_x/cancel".encode()):
            chunked = [*json_head, (b"Transfer-Encoding", b"chunked")]
            answer = send_raw(url, "POST", target, chunked, b"F" * 24 + b"\r\nab\r\n0\r\n\r\n")
            check_answer(answer, "a malformed chunk size")
            assert answer.status == 400
            with socket.create_connection((address.host, address.port or 80)) as sock:
                sock.sendall(
                    b"POST "
                    + target
                    + b" HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(name + b": " + value + b"\r\n" for name, value in json_head)
                    + b'Content-Length: 5000\r\n\r\n{"a"'
                )
                sock.shutdown(socket.SHUT_WR)  # gone before the body arrived
                sock.settimeout(30)
                while sock.recv(65536):
                    pass
        time.sleep(0.5)  # the app's side of a closed connection runs after the close
        assert http_ok(url)
    finally:
        log.removeHandler(handler)
    assert not errors, [record.getMessage() for record in errors]


def http_ok(url: str) -> bool:
    """The server still answers its health check."""
    return httpx.get(f"{url}/health", timeout=30).status_code == 200


@pytest.mark.parametrize(
    "prompt",
    [GARBLED, f"{GARBLED} health", GARBLED_FEEDBACK],
    ids=["rollout", "health", "feedback"],
)
def test_regression_a_task_apps_nul_and_surrogates_are_stored_safely(
    server: tuple[str, Path], http: httpx.Client, prompt: str
) -> None:
    """A task app whose rollout error (the events' ``last_error``), health-check error (the
    job's ``error``) or feedback and output held a NUL and a lone surrogate: the job's events
    answered 500 and its event stream was reset (SQLite; the job's error was lost to an
    'unexpected runner error'). Such text is stored with U+FFFD in their place."""
    job_id = submit(http, initial_prompt=prompt)
    job = wait_for(
        lambda: (
            (found := http.get(f"{JOBS}/{job_id}").json())["status"] in ("succeeded", "failed")
            and found
        )
    )
    for part in ("", "/results", "/events?limit=5000"):
        response = http.get(f"{JOBS}/{job_id}{part}")
        assert response.status_code == 200, (part, response.text[:300])
        assert "\x00" not in response.text
    stream = http.get(f"{JOBS}/{job_id}/events/stream")  # ended with the job: read whole
    assert stream.status_code == 200 and "event: job." in stream.text
    if "health" in prompt:
        assert job["status"] == "failed" and "bad \ufffd nul \ufffd surrogate" in job["error"]
    events = http.get(f"{JOBS}/{job_id}/events", params={"limit": 5000}).json()["events"]
    if prompt == GARBLED:
        shown = [e["data"]["last_error"] for e in events if e["data"].get("last_error")]
        assert shown and all("bad \ufffd nul \ufffd surrogate" in e for e in shown), shown
    the_key_still_works(http)
