"""Hosted models' credentials: a missing key is one line naming the environment variable before
any rollout, an authentication failure is never retried, and the estimate reads prices from
litellm's bundled list without importing litellm or fetching anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policyopt import LM
from policyopt.cli import app
from policyopt.errors import LMError
from policyopt.lm.credentials import auth_failure, missing_credentials, unreachable
from tests.fake_openai import fake_openai


def test_a_missing_key_is_an_auth_failure_and_never_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sent: list[dict[str, Any]] = []
    real_send = LM._send

    def counting_send(self: LM, litellm: Any, request: dict[str, Any], timeout: Any = None) -> Any:
        sent.append(request)
        return real_send(self, litellm, request, timeout)

    monkeypatch.setattr(LM, "_send", counting_send)
    with fake_openai(["never"]) as server:
        lm = LM("openai/fake-model", api_base=server.api_base, num_retries=4, max_backoff=0.01)
        with pytest.raises(LMError, match="authentication failed, not retried") as caught:
            lm("hi")
    assert len(sent) == 1  # was 5: litellm reports a missing key as an InternalServerError
    assert "OPENAI_API_KEY" in str(caught.value) and len(str(caught.value)) < 500


def test_auth_failure_tells_keys_from_rate_limits() -> None:
    class RateLimitError(Exception):
        pass

    class InternalServerError(Exception):
        pass

    assert auth_failure(InternalServerError("OpenAIException - Missing credentials. Please ..."))
    assert not auth_failure(RateLimitError("Incorrect API key provided ... rate limit"))
    assert not auth_failure(InternalServerError("upstream overloaded"))


def test_missing_credentials_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert missing_credentials("openai/gpt-4o-mini", {}) == ["OPENAI_API_KEY"]
    assert missing_credentials("openai/gpt-4o-mini", {"api_key": "sk-x"}) == []
    assert missing_credentials("openai/my-model", {"api_base": "http://127.0.0.1:1/v1"}) == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert missing_credentials("openai/gpt-4o-mini", {}) == []


def test_optimize_without_a_key_fails_before_any_rollout(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    text = (project / "config.toml").read_text().replace('"prog:task_lm"', '"openai/gpt-4o-mini"')
    (project / "hosted.toml").write_text(text)
    result = CliRunner().invoke(app, ["optimize", str(project / "hosted.toml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "models.task = 'openai/gpt-4o-mini' needs OPENAI_API_KEY" in lines[0]
    assert not (project / "calls.txt").exists() and not (project / "runs").exists()


def test_prices_come_from_the_bundled_list_without_importing_litellm() -> None:
    code = (
        "import json, sys\n"
        "from policyopt.runconfig.estimate import price_per_token\n"
        "prices = [price_per_token(m) for m in ('openai/gpt-4o-mini', 'gpt-4o', 'local')]\n"
        "print(json.dumps({'prices': prices, 'litellm': 'litellm' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["litellm"] is False  # importing it fetched the online price map (27 s offline)
    assert out["prices"][0][0] > 0 and out["prices"][1][0] > 0 and out["prices"][2] == [0, 0]
    assert "cost map" not in proc.stderr


def test_optimize_against_a_server_that_is_not_there_fails_before_any_rollout(
    project: Path,
) -> None:
    """A task model's api_base that nothing answers is one line naming the host, before any
    rollout (before: every rollout failed and was retried against it)."""
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = (project / "config.toml").read_text()
    text = text.replace('"prog:task_lm"', '"openai/my-model"')
    text += f'\n[policy_optimization.models.task_kwargs]\napi_base = "http://127.0.0.1:{port}/v1"\n'
    (project / "down.toml").write_text(text)
    result = CliRunner().invoke(app, ["optimize", str(project / "down.toml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"nothing answers at 127.0.0.1:{port}" in lines[0] and "api_base" in lines[0]
    assert not (project / "calls.txt").exists() and not (project / "runs").exists()
    with fake_openai() as server:  # a server that answers passes the check
        assert unreachable(server.api_base) is None


def test_unreachable_names_what_is_wrong_with_the_url() -> None:
    assert "not an http(s) URL" in str(unreachable("ftp://example.invalid"))
    assert "not an http(s) URL" in str(unreachable("localhost:8000"))
