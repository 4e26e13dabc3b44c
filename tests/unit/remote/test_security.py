"""The job server tried as a hostile user would (issue 11), on 127.0.0.1 with real servers.

Each attack is sent to a real job server (uvicorn) whose jobs call a real task app; a capture
server stands for what must never be reached (a host that would steal the server's model key,
an internal service). A control case shows the capture server does catch what it should when
the owner allows it, so the refusals below are not vacuous.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from policyopt import Program
from policyopt.errors import ConfigError
from policyopt.remote._serving import ServerThread, serve_in_thread
from policyopt.remote.config import JobConfig
from policyopt.remote.server.app import create_app
from policyopt.remote.server.policy import PolicyViolation, ServerPolicy
from policyopt.remote.server.runner import default_reflection_lm
from policyopt.remote.store import JobStore, hash_api_key
from policyopt.remote.taskapp.app import task_app
from policyopt.remote.taskapp.client import TaskAppClient, TaskAppError
from policyopt.remote.taskapp.outbound import OutboundPolicy
from tests.integration.remote.support import (
    OWNER_KEY,
    SlowKeywordEvaluate,
    job_config,
    keyword_dataset,
    scripted_reflection,
    wait_for,
)
from tests.unit.remote.capture import capture_server

pytestmark = pytest.mark.waits  # see tests/conftest.py

JOBS = "/api/policy-optimization/online/jobs"
TASK_KEY = "task-key-SECRET-7f3a"
SERVER_MODEL_KEY = "sk-SERVER-OWN-KEY-4b1d"
TERMINAL = {"succeeded", "failed", "cancelled"}
#: the owner grants OpenAI models, bound to the key in OPENAI_API_KEY
OPENAI_GRANT = ServerPolicy(models=["local", "openai/=OPENAI_API_KEY"])


@pytest.fixture
def task_url() -> Iterator[str]:
    """A real task app (the keyword task, 0.01 s per rollout) that requires TASK_KEY."""
    app = task_app(
        Program("Solve the task.", SlowKeywordEvaluate(0.01)),
        keyword_dataset(),
        api_key=TASK_KEY,
    )
    with serve_in_thread(app) as url:
        yield url


class Backend:
    """A job server on 127.0.0.1 (real runner, real TaskAppClient to the task app)."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.root = root
        options.setdefault("reflection_lm_factory", scripted_reflection)
        self.app = create_app(root / "db" / "jobs.db", root / "runs", [OWNER_KEY], **options)
        self.thread = ServerThread(self.app).start()
        self.url = self.thread.url

    def client(self, key: str = OWNER_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def stop(self) -> None:
        self.thread.stop(timeout=30)


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(**options: Any) -> Backend:
        backend = Backend(tmp_path / f"b{len(made)}", **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.stop()


def finish(http: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"{JOBS}/{job_id}").json()
        return body if body["status"] in TERMINAL else None

    return dict(wait_for(done, timeout))


def with_models(url: str, models: dict[str, Any]) -> dict[str, Any]:
    config = job_config(url=url, task_key=TASK_KEY, max_rollouts=60)
    config["policy_optimization"]["models"] = models
    return config


# ------------------------------------------------------------------ 1. the server's model key
def test_control_with_the_owners_opt_in_the_key_does_reach_the_capture_server(
    make_backend: Callable[..., Backend], task_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of issue 11 point 1 on a server whose owner allowed api_base: the capture
    server receives the server's key. This is what every refusal below prevents."""
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_MODEL_KEY)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    backend = make_backend(allow_api_base=True, reflection_lm_factory=None, policy=OPENAI_GRANT)
    with capture_server(status=400, body=b'{"error": {"message": "no"}}') as capture:
        models = {
            "reflection": "openai/gpt-4o-mini",
            "reflection_kwargs": {"api_base": capture.url + "/v1"},
        }
        with backend.client() as http:
            response = http.post(JOBS, json=with_models(task_url, models))
            assert response.status_code == 201, response.text
            wait_for(capture.seen, timeout=240)  # the job imports litellm: ~1 min under load
            http.post(f"{JOBS}/{response.json()['job_id']}/cancel")
        assert f"Bearer {SERVER_MODEL_KEY}" in capture.authorizations()


TRANSPORT_ATTACKS = [
    ({"reflection_kwargs": {"api_base": "{capture}/v1"}}, "models.reflection_kwargs.api_base"),
    ({"reflection_kwargs": {"base_url": "{capture}/v1"}}, "models.reflection_kwargs.base_url"),
    ({"reflection_kwargs": {"api_key": "sk-mine"}}, "models.reflection_kwargs.api_key"),
    ({"reflection_kwargs": {"extra_headers": {"X": "1"}}}, "reflection_kwargs.extra_headers"),
    ({"reflection_kwargs": {"headers": {"X": "1"}}}, "models.reflection_kwargs.headers"),
    ({"reflection_kwargs": {"organization": "o"}}, "models.reflection_kwargs.organization"),
    (
        {"reflection_kwargs": {"custom_llm_provider": "openai"}},
        "models.reflection_kwargs.custom_llm_provider",
    ),
    ({"reflection_kwargs": {"cache": "/tmp/x"}}, "models.reflection_kwargs.cache"),
    ({"api_base": "{capture}/v1"}, "models.api_base"),
]


@pytest.mark.parametrize(("models", "path"), TRANSPORT_ATTACKS)
def test_transport_and_credential_model_settings_are_422_naming_the_key(
    make_backend: Callable[..., Backend],
    task_url: str,
    monkeypatch: pytest.MonkeyPatch,
    models: dict[str, Any],
    path: str,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SERVER_MODEL_KEY)
    backend = make_backend(reflection_lm_factory=None, policy=OPENAI_GRANT)
    with capture_server() as capture, backend.client() as http:
        filled = json.loads(json.dumps(models).replace("{capture}", capture.url))
        attack = with_models(task_url, {"reflection": "openai/gpt-4o-mini", **filled})
        response = http.post(JOBS, json=attack)
        assert response.status_code == 422, response.text
        assert path in response.json()["detail"]
        # the same through overrides and through Synth's envelope
        key, value = next(iter(filled.items()))
        dotted = f"models.{key}" + (f".{next(iter(value))}" if isinstance(value, dict) else "")
        leaf = next(iter(value.values())) if isinstance(value, dict) else value
        table = with_models(task_url, {"reflection": "openai/gpt-4o-mini"})["policy_optimization"]
        via_overrides = {**table, "overrides": {dotted: leaf}}
        assert http.post(JOBS, json=via_overrides).status_code == 422
        envelope = {"algorithm": "gepa", "config_body": {"prompt_learning": table}}
        envelope["overrides"] = {dotted: leaf}
        assert http.post(JOBS, json=envelope).status_code == 422
        assert http.get(JOBS).json()["jobs"] == []
    assert capture.seen() == []


def test_sampling_settings_are_accepted_and_the_model_allowlist_holds(
    make_backend: Callable[..., Backend], task_url: str
) -> None:
    policy = ServerPolicy(models=["local", "openai/gpt-4o-mini=OPENAI_API_KEY"])
    backend = make_backend(policy=policy)
    with backend.client() as http:
        ok = {
            "reflection": "openai/gpt-4o-mini",
            "reflection_kwargs": {"temperature": 0.3, "max_tokens": 64, "stop": ["\n\n"]},
        }
        response = http.post(JOBS, json=with_models(task_url, ok))
        assert response.status_code == 201, response.text
        http.post(f"{JOBS}/{response.json()['job_id']}/cancel")
        refused = http.post(JOBS, json=with_models(task_url, {"reflection": "anthropic/claude"}))
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert "models.reflection" in detail and "anthropic/claude" in detail
        unknown = {"reflection": "local", "reflection_kwargs": {"num_retries": 99}}
        response = http.post(JOBS, json=with_models(task_url, unknown))
        assert response.status_code == 422
        assert "models.reflection_kwargs.num_retries" in response.json()["detail"]


def test_a_stored_config_is_checked_again_when_the_job_runs() -> None:
    """A config stored under a looser policy (or written to the database by hand) cannot reach
    the LM with a transport setting: the runner refuses it too."""
    table = job_config(url="http://127.0.0.1:9")["policy_optimization"]
    table["models"] = {"reflection": "openai/x", "reflection_kwargs": {"api_base": "http://h"}}
    config = JobConfig.from_dict(table)
    with pytest.raises(PolicyViolation, match=r"models\.reflection_kwargs\.api_base"):
        default_reflection_lm(config, policy=OPENAI_GRANT)


# ------------------------------------------------------------------ 2. SSRF through task_app.url
SSRF_URLS = [
    ("{capture}/internal/admin/secret?x=", "query string"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]:80", "link-local"),
    ("http://10.0.0.1:8080", "not in the allowed task-app hosts"),
    ("http://192.168.1.1", "not in the allowed task-app hosts"),
    ("http://[::ffff:169.254.169.254]", "link-local"),
    ("http://0.0.0.0:{port}", "unspecified"),
    ("http://user:pw@127.0.0.1:{port}", "user name"),
    ("ftp://127.0.0.1:{port}", "http"),
    ("{capture}#frag", "fragment"),
]


@pytest.mark.parametrize(("url", "needle"), SSRF_URLS)
def test_task_app_urls_outside_the_policy_are_422_and_never_contacted(
    make_backend: Callable[..., Backend], url: str, needle: str
) -> None:
    backend = make_backend()
    with capture_server() as capture, backend.client() as http:
        port = capture.url.rsplit(":", 1)[1]
        target = url.replace("{capture}", capture.url).replace("{port}", port)
        response = http.post(JOBS, json=job_config(url=target, task_key=TASK_KEY))
        assert response.status_code == 422, response.text
        assert "task_app.url" in response.json()["detail"]
        assert needle in response.json()["detail"]
        assert http.get(JOBS).json()["jobs"] == []
        time.sleep(0.2)
    assert capture.seen() == []


def test_errors_from_a_task_app_show_status_and_json_detail_never_the_body(
    make_backend: Callable[..., Backend],
) -> None:
    """Point 2 of issue 11: an internal service's body quoted in the job's error."""
    backend = make_backend()
    secret_page = b"<html>root password: hunter2 " + b"x" * 500 + b"</html>"
    with (
        capture_server(status=404, body=secret_page, content_type="text/html") as capture,
        backend.client() as http,
    ):
        job_id = http.post(
            JOBS, json=job_config(url=capture.url + "/internal/admin", task_key=TASK_KEY)
        ).json()["job_id"]
        status = finish(http, job_id)
        capture.status, capture.content_type = 403, "application/json"
        capture.body = json.dumps({"detail": "unknown key " + "y" * 1000}).encode()
        second = finish(
            http,
            http.post(
                JOBS, json=job_config(url=capture.url + "/internal/admin", task_key=TASK_KEY)
            ).json()["job_id"],
        )
    assert status["status"] == "failed"
    assert "404" in status["error"] and "hunter2" not in status["error"]
    assert "not shown" in status["error"]
    assert second["status"] == "failed" and "403" in second["error"]
    assert "unknown key yyy" in second["error"] and "y" * 300 not in second["error"]
    assert capture.seen()[0]["path"] == "/internal/admin/health"


def test_redirects_are_not_followed(make_backend: Callable[..., Backend]) -> None:
    backend = make_backend()
    with capture_server(status=302, body=b"") as redirector, backend.client() as http:
        job_id = http.post(JOBS, json=job_config(url=redirector.url, task_key=TASK_KEY)).json()[
            "job_id"
        ]
        status = finish(http, job_id)
    assert status["status"] == "failed" and "redirect" in status["error"]
    assert [r["path"] for r in redirector.seen()] == ["/health"]  # once: no retry, no follow


class Rebinding:
    """A resolver that answers ``first`` for ``name`` the first time, then ``later``; every
    other name goes to the real resolver. Records every TCP connection attempted."""

    def __init__(self, name: str, first: str, later: str) -> None:
        self.name, self.first, self.later = name, first, later
        self.asked = 0
        self.connects: list[Any] = []
        self.real_getaddrinfo = socket.getaddrinfo
        self.real_create_connection = socket.create_connection

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self.real_getaddrinfo(host, port, *args, **kwargs)
        self.asked += 1
        address = self.first if self.asked == 1 else self.later
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    def create_connection(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        self.connects.append(address)
        return self.real_create_connection(address, *args, **kwargs)


def test_dns_rebinding_is_refused_at_connect_time(
    make_backend: Callable[..., Backend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name resolves to loopback when the job is submitted, to a metadata address when the
    server connects: the connection is refused before any packet is sent."""
    backend = make_backend()
    with capture_server() as capture, backend.client() as http:
        port = int(capture.url.rsplit(":", 1)[1])
        fake = Rebinding("tasks.rebind.test", "127.0.0.1", "169.254.169.254")
        monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", fake.create_connection)
        url = f"http://tasks.rebind.test:{port}"
        response = http.post(JOBS, json=job_config(url=url, task_key=TASK_KEY))
        assert response.status_code == 201, response.text  # it resolved to loopback then
        status = finish(http, response.json()["job_id"])
    assert status["status"] == "failed"
    assert "outbound policy" in status["error"] and "169.254.169.254" in status["error"]
    assert fake.asked >= 2
    assert not [a for a in fake.connects if a[0] == "169.254.169.254"]
    assert capture.seen() == []


def test_the_transport_checks_every_connection_and_explicit_networks_allow() -> None:
    with capture_server() as capture:
        host, port = "127.0.0.1", capture.url.rsplit(":", 1)[1]
        refused = OutboundPolicy(["10.0.0.0/8"])
        with (
            TaskAppClient(f"http://{host}:{port}", outbound=refused, retries=3) as client,
            pytest.raises(TaskAppError, match="outbound policy"),
        ):
            started = time.monotonic()
            client.health()
        assert time.monotonic() - started < 2  # refused at once, not retried
        assert capture.seen() == []
        with TaskAppClient(capture.url, outbound=OutboundPolicy()) as client:
            assert client.health() == {"status": "ok"}
        assert len(capture.seen()) == 1
    listed = OutboundPolicy(["169.254.169.254/32"])
    assert listed.refusal("169.254.169.254", "169.254.169.254") is None  # explicitly listed
    assert OutboundPolicy(["*.tasks.test"]).refusal("a.tasks.test", "203.0.113.7") is None
    assert OutboundPolicy(["*.tasks.test"]).refusal("a.tasks.test", "169.254.1.1") is not None


# ------------------------------------------------------------------ 3. input limits
def nested(depth: int, leaf: Any = 1) -> Any:
    """``{"a": {"a": ... leaf}}``, ``depth`` levels."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def test_deep_long_and_wide_inputs_are_4xx_never_500(
    make_backend: Callable[..., Backend], task_url: str
) -> None:
    backend = make_backend()
    with backend.client() as http:
        deep = job_config(url=task_url, task_key=TASK_KEY)
        deep["policy_optimization"]["models"] = {"policy": "DEEP"}
        levels = '{"a": ' * 5000 + "1" + "}" * 5000  # too deep for json.dumps itself
        cases: list[tuple[bytes, str]] = [
            (json.dumps(deep).replace('"DEEP"', levels).encode(), "nests deeper"),
            (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
            (json.dumps(nested(40)).encode(), "nested deeper than 32"),
        ]
        long = job_config(url=task_url, task_key=TASK_KEY)
        long["policy_optimization"]["initial_prompt"] = "x" * 300_000
        cases.append((json.dumps(long).encode(), "policy_optimization.initial_prompt"))
        wide = job_config(url=task_url, task_key=TASK_KEY)
        wide["policy_optimization"]["models"] = {"policy": {"l": [0] * 150_000}}
        cases.append((json.dumps(wide).encode(), "a list of 150000 items"))
        many = job_config(url=task_url, task_key=TASK_KEY)
        many["policy_optimization"]["ids"]["train"] = {"start": 0, "end": 200_000}
        cases.append((json.dumps(many).encode(), "a range of 200000 ids"))
        for body, needle in cases:
            response = http.post(JOBS, content=body, headers={"Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (needle, response.status_code)
            assert needle in response.json()["detail"], response.json()["detail"][:300]
        cancel = http.post(
            "/api/jobs/po_0000000000000000/cancel",
            content=b"[" * 50_000 + b"]" * 50_000,
            headers={"Content-Type": "application/json"},
        )
        assert cancel.status_code == 422
        assert http.get(JOBS).status_code == 200
        assert http.get("/health").json()["status"] == "ok"


# ------------------------------------------------------------------ 4. secrets at rest
def test_files_are_private_and_hold_no_key_in_plain_text(
    make_backend: Callable[..., Backend], task_url: str
) -> None:
    backend = make_backend()
    with backend.client() as http:
        job_id = http.post(JOBS, json=job_config(url=task_url, task_key=TASK_KEY)).json()["job_id"]
        status = finish(http, job_id)
    assert status["status"] == "succeeded", status  # the task app got its key back, decrypted
    db_dir = backend.root / "db"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db_dir.iterdir()}
    assert modes["jobs.db"] == 0o600 and modes["server.secret"] == 0o600
    assert all(mode == 0o600 for name, mode in modes.items() if name.startswith("jobs.db"))
    assert stat.S_IMODE(db_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((backend.root / "runs").stat().st_mode) == 0o700
    assert stat.S_IMODE((backend.root / "runs" / job_id).stat().st_mode) == 0o700
    backend.stop()
    raw = b"".join(p.read_bytes() for p in db_dir.iterdir() if p.name.startswith("jobs.db"))
    for secret in (TASK_KEY, OWNER_KEY, hash_api_key(OWNER_KEY)):
        assert secret.encode() not in raw, secret
    for path in (backend.root / "runs").rglob("*"):
        if path.is_file():
            assert TASK_KEY.encode() not in path.read_bytes(), path


def test_a_readable_secret_file_is_refused_and_legacy_owner_ids_migrate(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "server.secret"
    create_app(tmp_path / "jobs.db", tmp_path / "runs", [OWNER_KEY], secret_file=secret)
    os.chmod(secret, 0o644)
    with pytest.raises(Exception, match="chmod 600"):
        create_app(tmp_path / "jobs.db", tmp_path / "runs", [OWNER_KEY], secret_file=secret)
    os.chmod(secret, 0o600)
    store = JobStore(tmp_path / "jobs.db")  # a job stored by a server with SHA-256 owner ids
    old = store.create_job(owner=hash_api_key(OWNER_KEY), algorithm="gepa", config={})
    store.close()
    app = create_app(tmp_path / "jobs.db", tmp_path / "runs", [OWNER_KEY], secret_file=secret)
    store = app.state.store
    job = store.get_job(old.id)
    assert job is not None and job.owner != hash_api_key(OWNER_KEY) and len(job.owner) == 64


# ------------------------------------------------------------------ 6. quotas
def test_per_key_rollout_and_cost_quotas_are_429(
    make_backend: Callable[..., Backend], task_url: str
) -> None:
    policy = ServerPolicy(max_rollouts_per_key=100, max_cost_usd_per_key=1.0)
    backend = make_backend(policy=policy)
    with backend.client() as http:

        def job(rollouts: int, cost: float | None, n_test: int = 0) -> dict[str, Any]:
            config = job_config(
                url=task_url, task_key=TASK_KEY, max_rollouts=rollouts, n_test=n_test
            )
            if cost is not None:
                config["policy_optimization"]["budget"]["max_cost_usd"] = cost
            return config

        response = http.post(JOBS, json=job(60, None))
        assert response.status_code == 422 and "budget.max_cost_usd" in response.json()["detail"]
        first = http.post(JOBS, json=job(60, 0.6))
        assert first.status_code == 201, first.text
        response = http.post(JOBS, json=job(60, 0.1))
        assert response.status_code == 429
        assert (
            "Rollout quota" in response.json()["detail"] and "40 left" in response.json()["detail"]
        )
        response = http.post(JOBS, json=job(30, 0.6))
        assert response.status_code == 429 and "Cost quota" in response.json()["detail"]
        response = http.post(JOBS, json=job(30, 0.1, n_test=6))  # the test scoring counts too
        assert response.status_code == 429, response.text
        assert "plus up to 12 test rollouts" in response.json()["detail"]
        http.post(f"{JOBS}/{first.json()['job_id']}/cancel")
        finish(http, first.json()["job_id"])
        # a finished job counts what it used, not its budget
        assert http.post(JOBS, json=job(30, 0.3)).status_code == 201


def test_rollouts_in_flight_past_the_policy_are_422(
    make_backend: Callable[..., Backend], task_url: str
) -> None:
    """n_jobs is coroutines and task-app connections on the server: the owner bounds it."""
    backend = make_backend(policy=ServerPolicy(max_n_jobs=16))
    with backend.client() as http:
        huge = job_config(url=task_url, task_key=TASK_KEY, section={"n_jobs": 10**9})
        response = http.post(JOBS, json=huge)
        assert response.status_code == 422, response.text
        assert "n_jobs" in response.json()["detail"] and "1 to 16" in response.json()["detail"]
        all_cores = job_config(url=task_url, task_key=TASK_KEY, section={"n_jobs": -1})
        response = http.post(JOBS, json=all_cores)  # -1 (all cores) skipped the cap before
        assert response.status_code == 422 and "1 to 16" in response.json()["detail"]
        ok = job_config(url=task_url, task_key=TASK_KEY, section={"n_jobs": 16})
        accepted = http.post(JOBS, json=ok)
        assert accepted.status_code == 201, accepted.text
        http.post(f"{JOBS}/{accepted.json()['job_id']}/cancel")
        finish(http, accepted.json()["job_id"])


def test_the_policy_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        '[server]\ntask_app_hosts = ["10.1.0.0/16", "localhost"]\nmax_rollouts_per_key = 5\n'
    )
    policy = ServerPolicy.from_toml(path, allow_api_base=True)
    assert policy.task_app_hosts == ("10.1.0.0/16", "localhost") and policy.allow_api_base
    path.write_text("[server]\nmax_rollout_per_key = 5\n")
    with pytest.raises(ConfigError, match="max_rollout_per_key"):
        ServerPolicy.from_toml(path)
