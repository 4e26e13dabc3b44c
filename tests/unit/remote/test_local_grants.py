"""A server's owner may grant another local model the library ships, as ``local:NAME``.

The second model is opt-in and usually not installed, so nothing here needs it: being installed
is stood in for by :func:`policyopt.lm.local_models.check_installed` patched to pass, and a
model that is known but absent by a fake entry in ``LOCAL_MODELS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import policyopt.remote.server.app as server
from policyopt.cli import app as cli
from policyopt.errors import ConfigError
from policyopt.lm import LocalLM, local_models
from policyopt.lm.local_models import LocalModel
from policyopt.remote.server import job_lm
from policyopt.remote.server.app import create_app
from policyopt.remote.server.policy import PolicyViolation, ServerPolicy
from policyopt.remote.server.runner import default_reflection_lm
from tests.integration.remote.support import OWNER_KEY, job_config
from tests.unit.remote.test_model_grants import config_for

QWEN = "local:qwen2.5-coder-0.5b"
JOBS = "/api/policy-optimization/online/jobs"


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every known local model counts as installed."""
    monkeypatch.setattr(local_models, "check_installed", local_models.local_model)


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> str:
    """A local model the library knows whose packages are not installed; its grant name."""
    model = LocalModel(
        name="absent-1b",
        title="Absent",
        served_as="absent-1b",
        file_name="absent.gguf",
        packages=("po_no_such_weights",),
        install_hint="Install it with `pip install absent-weights`.",
    )
    monkeypatch.setitem(local_models.LOCAL_MODELS, model.name, model)
    return f"local:{model.name}"


def submit(tmp_path: Path, model: str, policy: ServerPolicy | None = None) -> Any:
    """POST one job naming ``model`` to a server (not started: nothing runs); the response."""
    application = create_app(tmp_path / "jobs.db", tmp_path / "runs", [OWNER_KEY], policy=policy)
    config = job_config()
    config["policy_optimization"]["models"] = {"reflection": model}
    http = TestClient(application)  # outside ``with``: no lifespan, so no job starts
    return http.post(JOBS, json=config, headers={"Authorization": f"Bearer {OWNER_KEY}"})


def test_local_name_grants_parse_and_unknown_names_are_refused() -> None:
    policy = ServerPolicy.build(models=["local", QWEN])
    assert [(g.name, g.key_env, g.api_base, g.embedded) for g in policy.models] == [
        ("local", None, None, True),
        (QWEN, None, None, True),
    ]
    table = ServerPolicy.build(models={QWEN: ""})
    assert table.grant_for(QWEN).embedded
    with pytest.raises(ConfigError, match=r"unknown local model 'local:nope'; known: .*qwen"):
        ServerPolicy.build(models=["local:nope"])
    for bad in (f"{QWEN}=SOME_KEY", f"{QWEN}@http://127.0.0.1:9/v1"):
        with pytest.raises(ConfigError, match="the server runs itself: its grant takes no key"):
            ServerPolicy.build(models=[bad])


def test_a_local_model_not_granted_is_422_naming_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(PolicyViolation, match=r"'local:qwen2.5-coder-0.5b' is not allowed"):
        ServerPolicy().check_models(config_for(QWEN).models)
    response = submit(tmp_path, QWEN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "models.reflection" in detail and QWEN in detail and "allowed: local " in detail


def test_a_granted_local_model_is_accepted_and_served_by_local_lm(
    tmp_path: Path, installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = ServerPolicy(models=["local", QWEN])
    response = submit(tmp_path, QWEN, policy)
    assert response.status_code == 201, response.text
    monkeypatch.setattr(job_lm, "_LOCAL", job_lm._SharedLocalLMs())  # nothing shared with others
    try:
        lm = default_reflection_lm(config_for(QWEN), policy=policy)
        assert isinstance(lm, LocalLM) and lm.local_model.name == "qwen2.5-coder-0.5b"
        assert default_reflection_lm(config_for(QWEN), policy=policy) is lm  # one per model
        plain = default_reflection_lm(config_for("local"), policy=policy)
        assert isinstance(plain, LocalLM) and plain.local_model.name == "smollm2-135m"
    finally:
        job_lm._LOCAL.close()  # never started: nothing to stop but the objects


def test_a_granted_local_model_not_installed_stops_the_server_at_start(
    tmp_path: Path, absent: str
) -> None:
    with pytest.raises(ConfigError) as err:
        create_app(
            tmp_path / "jobs.db",
            tmp_path / "runs",
            [OWNER_KEY],
            policy=ServerPolicy(models=["local", absent]),
        )
    assert str(err.value) == (
        "the model grant 'local:absent-1b' cannot be served: local model 'absent-1b' is not "
        "installed (no package po_no_such_weights). Install it with `pip install absent-weights`."
    )


def test_policyopt_serve_refuses_an_unknown_or_absent_local_model_in_one_line(
    tmp_path: Path, absent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Any] = []
    monkeypatch.setattr(server, "run_app", lambda application, **kwargs: served.append(kwargs))
    flags = ["serve", "--api-key", "k", "--db", str(tmp_path / "jobs.db")]
    flags += ["--data-dir", str(tmp_path / "runs")]
    for model, needle in [
        ("local:nope", "unknown local model 'local:nope'; known: "),
        (absent, "pip install absent-weights"),
    ]:
        result = CliRunner().invoke(cli, [*flags, "--model", model])
        assert result.exit_code == 2, result.output
        assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert served == []
    granted = CliRunner().invoke(cli, [*flags, "--model", "local", "--model", "local:smollm2-135m"])
    assert granted.exit_code == 0 or "not installed" in granted.output, granted.output
