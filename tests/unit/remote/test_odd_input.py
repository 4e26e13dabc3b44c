"""No input of any shape gives a 5xx, and no key is locked out (issue 26), on SQLite and
PostgreSQL: integer overflow, Infinity/NaN, lone surrogates and NUL in every location of a
request, and every numeric setting bounded by the server's policy with a clear 422.

One real job server per database backend (uvicorn on 127.0.0.1, scripted task app and
reflection LM); the Hypothesis tests put odd values where the issue's attacks put them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyopt.remote._serving import ServerThread
from policyopt.remote.server.app import MAX_SEQ, create_app
from policyopt.remote.server.job_events import failure_reason
from tests.integration.remote.postgres import PostgresServer, postgres_server
from tests.integration.remote.support import (
    OWNER_KEY,
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
)

pytestmark = pytest.mark.timeout(300)

JOBS = "/api/policy-optimization/online/jobs"
AUTH = {"Authorization": f"Bearer {OWNER_KEY}", "Content-Type": "application/json"}
#: strings no database can store as text, as JSON escapes (valid JSON, odd Python str)
ODD_STRINGS = ["\\ud800", "a\\udfffb", "\\u0000", "x\\u0000y", "\\udbff\\u0000"]
#: numbers past every column and every float
ODD_NUMBERS = [
    "9223372036854775808",
    "-9223372036854775809",
    "1e999",
    "-1e999",
    "Infinity",
    "-Infinity",
    "NaN",
    "18446744073709551616",
    "1" + "0" * 300,
]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db: str | Path = root / "jobs.db"
    else:
        db = request.getfixturevalue("pg").fresh_database(f"odd_{int(time.time() * 1000)}")
    app = create_app(
        db,
        root / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        task_app_factory=ScriptedTaskApp(delay=0.5).factory,
        reflection_lm_factory=scripted_reflection,
        secret_file=root / "server.secret",
        max_active_jobs_per_key=10_000,
    )
    thread = ServerThread(app).start()
    try:
        yield thread.url
    finally:
        thread.stop(timeout=30)


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=AUTH, timeout=30) as client:
        yield client


def table(**changes: Any) -> dict[str, Any]:
    config = job_config()["policy_optimization"]
    config.update(changes)
    return config


def raw_with(value_json: str, where: str) -> bytes:
    """A job body (JSON text) with ``value_json`` spliced in at ``where``."""
    marker = "__ODD__"
    shapes: dict[str, Any] = {
        "override key": table(overrides={marker: 1}),
        "override value": table(overrides={"gepa.minibatch_size": marker}),
        "ids key": table(ids={marker: ["a"]}),
        "ids value": table(ids={"train": [marker]}),
        "variant": table(algorithm=f"gepa[merge={marker}]"),
        "task_app.api_key": table(task_app={"url": "http://127.0.0.1:9", "api_key": marker}),
        "prompt": table(initial_prompt=marker),
        "budget.max_cost_usd": table(budget={"max_rollouts": 60, "max_cost_usd": marker}),
        "budget.max_rollouts": table(budget={"max_rollouts": marker}),
        "setting": table(gepa={"n_jobs": 2, "minibatch_size": marker}),
        "timeout": table(gepa={"timeout": marker}),
        "seed": table(seed=marker),
        "policy": table(models={"reflection": "local", "policy": {"t": marker}}),
        "envelope key": {"config_body": {"prompt_learning": table()}, marker: 1},
    }
    text = json.dumps(shapes[where])
    # a string marker becomes the odd value itself: a JSON string, or a bare number
    return text.replace(f'"{marker}"', value_json).replace(marker, value_json.strip('"')).encode()


WHERE = [
    "override key", "override value", "ids key", "ids value", "variant", "task_app.api_key",
    "prompt", "budget.max_cost_usd", "budget.max_rollouts", "setting", "timeout", "seed",
    "policy", "envelope key",
]  # fmt: skip
ODD_VALUES = [f'"{s}"' for s in ODD_STRINGS] + ODD_NUMBERS


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.sampled_from(ODD_VALUES), where=st.sampled_from(WHERE))
def test_odd_values_anywhere_in_a_submit_are_a_4xx(
    http: httpx.Client, value: str, where: str
) -> None:
    response = http.post(JOBS, content=raw_with(value, where))
    assert response.status_code < 500, (where, value, response.text)
    if response.status_code == 201:  # a big integer is a fine id or override: stored safely
        job_id = response.json()["job_id"]
        assert http.get(f"{JOBS}/{job_id}").status_code == 200
        assert http.post(f"{JOBS}/{job_id}/cancel").status_code == 200
    else:
        assert response.status_code in (400, 422), response.text
    assert http.get(JOBS).status_code == 200  # the key is never locked out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seq=st.one_of(st.sampled_from(ODD_NUMBERS), st.integers(MAX_SEQ - 2, 2**70).map(str)),
    text=st.sampled_from([*ODD_STRINGS, "%00", "%ED%A0%80", "..%2F..%2Fetc", "po_" + "f" * 70]),
)
def test_odd_values_in_paths_queries_headers_and_cancel_bodies_are_a_4xx(
    http: httpx.Client, seq: str, text: str
) -> None:
    job_id = submit(http)
    answers = [
        http.get(f"{JOBS}/{job_id}/events", params={"since_seq": seq}),
        opened(http, f"{JOBS}/{job_id}/events/stream", headers={"Last-Event-ID": seq}),
        opened(http, f"{JOBS}/{job_id}/events/stream", params={"since_seq": seq}),
        http.get(f"{JOBS}/{text}"),
        http.get(f"{JOBS}/{text}/events"),
        http.post(f"/api/jobs/{text}/cancel"),
        http.post(f"{JOBS}/{job_id}/cancel", content=f'{{"reason": "{text}"}}'.encode()),
    ]
    for response in answers:
        assert response.status_code < 500, (response.request.url, response.text)
    http.post(f"{JOBS}/{job_id}/cancel")
    big = seq.lstrip("-").isdigit() and int(seq) > MAX_SEQ
    assert not big or answers[0].status_code == answers[2].status_code == 422


def opened(http: httpx.Client, url: str, **options: Any) -> httpx.Response:
    """An event stream's answer, closed once its status and headers are in (a valid stream
    would run until the job ends)."""
    with http.stream("GET", url, **options) as response:
        if response.status_code >= 400:
            response.read()
        return response


def submit(http: httpx.Client, **changes: Any) -> str:
    response = http.post(JOBS, json=table(**changes))
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def test_overflowing_event_seqs_are_4xx_not_500(http: httpx.Client) -> None:
    """since_seq past 2**63-1 was a 500 (SQLite OverflowError, PostgreSQL out of range), and
    the same in Last-Event-ID aborted the event stream."""
    job_id = submit(http)
    too_big = str(2**63)
    response = http.get(f"{JOBS}/{job_id}/events", params={"since_seq": too_big})
    assert response.status_code == 422 and "since_seq" in response.text
    stream = opened(http, f"{JOBS}/{job_id}/events/stream", headers={"Last-Event-ID": too_big})
    assert stream.status_code == 400 and "Last-Event-ID" in stream.json()["detail"]
    ok = http.get(f"{JOBS}/{job_id}/events", params={"since_seq": str(MAX_SEQ)})
    assert ok.status_code == 200 and ok.json()["events"] == []
    http.post(f"{JOBS}/{job_id}/cancel")


def test_infinity_in_a_budget_is_refused_and_the_key_keeps_working(http: httpx.Client) -> None:
    """Infinity was stored on SQLite, after which every submit of that key answered 500."""
    for number in ("Infinity", "NaN", "1e999"):
        body = json.dumps(table(budget={"max_rollouts": 60, "max_cost_usd": 1.0}))
        response = http.post(JOBS, content=body.replace("1.0", number).encode())
        assert response.status_code == 422, response.text
        assert "must be finite" in response.json()["detail"]
    job_id = submit(http, budget={"max_rollouts": 60, "max_cost_usd": 1.0})
    assert http.get(JOBS).status_code == 200
    http.post(f"{JOBS}/{job_id}/cancel")


@pytest.mark.parametrize(
    "where",
    ["override key", "ids key", "variant", "task_app.api_key", "prompt", "policy"],
)
def test_lone_surrogates_and_nul_are_a_422_naming_the_place(http: httpx.Client, where: str) -> None:
    for odd in ('"\\ud800"', '"a\\u0000"'):
        response = http.post(JOBS, content=raw_with(odd, where))
        assert response.status_code == 422, (where, response.text)
        assert "lone surrogate" in response.text or "NUL" in response.text
    job_id = submit(http)
    for reason in ("\\ud800", "a\\u0000b"):
        response = http.post(
            f"{JOBS}/{job_id}/cancel", content=f'{{"reason": "{reason}"}}'.encode()
        )
        assert response.status_code == 422, response.text
    assert http.post(f"{JOBS}/{job_id}/cancel", json={"reason": "done"}).status_code == 200


BOUNDS = [
    ({"gepa": {"proposals_per_iteration": 10**9}}, "proposals_per_iteration"),
    ({"gepa": {"minibatch_size": 10**9}}, "minibatch_size"),
    ({"gepa": {"timeout": 10**12}}, "timeout"),
    ({"gepa": {"timeout": None}}, "timeout"),
    ({"gepa": {"n_jobs": -1}}, "n_jobs"),
    ({"gepa": {"max_prompt_chars": 10**12}}, "max_prompt_chars"),
    ({"gepa": {"reflection_template": "{current} {records} {0}"}}, "reflection_template"),
    ({"gepa": {"reflection_template": "{current.__class__} {records}"}}, "reflection_template"),
    ({"algorithm": "opro", "opro": {"proposals_per_step": 10**9}}, "proposals_per_step"),
    ({"algorithm": "mipro", "mipro": {"num_trials": 10**9}}, "num_trials"),
    ({"budget": {"max_rollouts": 10**12}}, "max_rollouts"),
    ({"task_app": {"url": "http://127.0.0.1:0", "api_key": "k"}}, "port"),
    ({"task_app": {"url": "http://127.0.0.1:99999", "api_key": "k"}}, "port"),
]


@pytest.mark.parametrize(("change", "needle"), BOUNDS)
def test_every_setting_is_bounded_with_a_clear_422(
    http: httpx.Client, change: dict[str, Any], needle: str
) -> None:
    started = time.monotonic()
    response = http.post(JOBS, json=table(**change))
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert time.monotonic() - started < 5.0


def test_failure_reasons_shown_to_owners_name_no_server_path() -> None:
    error = FileNotFoundError(2, "No such file", str(Path.home() / "jobs" / "runs" / "x.json"))
    shown = failure_reason(error)
    assert "FileNotFoundError" in shown and "<path>" in shown
    assert str(Path.home()) not in shown and "/jobs/runs" not in shown
    url = failure_reason(ConnectionError("the task app at http://127.0.0.1:9/health is down"))
    assert "http://127.0.0.1:9/health" in url


def test_a_stored_config_over_the_bounds_is_refused_when_the_job_runs(tmp_path: Path) -> None:
    """A config stored under an older, looser policy (or by hand) cannot run past the bounds:
    the runner checks the settings again and fails the job naming the setting."""
    from policyopt.remote.server.runner import JobRunner
    from policyopt.remote.store import JobState, JobStore

    store = JobStore(tmp_path / "jobs.db")
    runner = JobRunner(
        store,
        tmp_path / "runs",
        task_app_factory=ScriptedTaskApp().factory,
        reflection_lm_factory=scripted_reflection,
    )
    try:
        config = table(gepa={"n_jobs": -1, "proposals_per_iteration": 10**9})
        job = store.create_job(owner="o", algorithm="gepa", config=config, max_rollouts=80)
        runner.start()
        runner.submit(job.id)
        deadline = time.monotonic() + 60
        while (found := store.get_job(job.id)) is not None and not found.status.terminal:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert found is not None and found.status is JobState.FAILED
        assert "n_jobs" in (found.error or "")
    finally:
        runner.shutdown(5)
        store.close()
