"""Models are default-deny on a job server, and each is called with exactly its bound key.

The survey repeats issue 26's attack over every provider prefix litellm knows, with every
request caught at the transport (nothing leaves the machine): with only ``OPENAI_API_KEY`` set,
the server used to let ``cerebras/x`` (and 77 other prefixes) carry that key to another host,
and ``bedrock``/``sagemaker``/``vertex_ai_beta`` reach the cloud metadata address.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

from policyopt.errors import ConfigError
from policyopt.lm import LM
from policyopt.remote.config import JobConfig
from policyopt.remote.server.grants import CLOUD_IDENTITY_PROVIDERS, NO_KEY
from policyopt.remote.server.policy import PolicyViolation, ServerPolicy
from policyopt.remote.server.runner import default_reflection_lm
from tests.integration.remote.support import job_config
from tests.unit.remote.transport_trap import trap_transport

OPENAI_SECRET = "sk-OWNER-OPENAI-7c21"
#: other provider keys an owner's environment may hold: no call may ever carry them
ENV_SECRETS = {
    "OPENAI_API_KEY": OPENAI_SECRET,
    "ANTHROPIC_API_KEY": "sk-ant-OWNER-5e10",
    "AZURE_API_KEY": "az-OWNER-9a31",
    "GEMINI_API_KEY": "gm-OWNER-2b77",
    "HUGGINGFACE_API_KEY": "hf-OWNER-6d02",
    "LITELLM_API_KEY": "ll-OWNER-3f48",
    "AWS_ACCESS_KEY_ID": "AKIAOWNER0000SECRET",
    "AWS_SECRET_ACCESS_KEY": "aws-OWNER-secret-8c5e",
}
METADATA = ("169.254.169.254", "metadata.google.internal", "fd00:ec2::254")


def config_for(model: str, **models: Any) -> JobConfig:
    table = job_config()["policy_optimization"]
    table["models"] = {"reflection": model, **models}
    return JobConfig.from_dict(table)


def provider_prefixes() -> list[str]:
    import litellm

    return sorted({str(getattr(p, "value", p)) for p in litellm.provider_list})


# ------------------------------------------------------------------ the grants themselves
def test_grants_parse_from_flags_tables_and_refuse_what_is_unclear() -> None:
    policy = ServerPolicy.build(
        models=[
            "openai/gpt-4o-mini=OPENAI_API_KEY",
            "anthropic/*=ANTHROPIC_API_KEY",
            "openai/qwen=@http://127.0.0.1:8080/v1",
            "local",
        ]
    )
    names = [(g.name, g.key_env, g.api_base) for g in policy.models]
    assert names == [
        ("openai/gpt-4o-mini", "OPENAI_API_KEY", None),
        ("anthropic/", "ANTHROPIC_API_KEY", None),
        ("openai/qwen", None, "http://127.0.0.1:8080/v1"),
        ("local", None, None),
    ]
    table = ServerPolicy.build(models={"groq/": "GROQ_API_KEY", "local": ""})
    assert [(g.name, g.key_env) for g in table.models] == [
        ("groq/", "GROQ_API_KEY"),
        ("local", None),
    ]
    assert [g.name for g in ServerPolicy().models] == ["local"]  # default-deny
    for bad, needle in [
        (["openai/gpt-4o*=K"], "provider prefix ending in '/'"),
        (["openai/=not a name"], "environment variable name"),
        (["bedrock/=AWS_KEY"], "cloud identity"),
        (["vertex_ai/"], "cloud identity"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            ServerPolicy.build(models=bad)
    assert ServerPolicy.build(models=["bedrock/"], allow_cloud_identity=True).models
    with pytest.raises(ConfigError, match="allowed_models was replaced by models"):
        ServerPolicy.build(allowed_models=["openai/*"])


def test_the_policy_file_takes_a_models_table(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text('[server.models]\n"openai/" = "OPENAI_API_KEY"\nlocal = ""\n')
    policy = ServerPolicy.from_toml(path)
    assert policy.grant_for("openai/gpt-4o").key_env == "OPENAI_API_KEY"


def test_a_model_outside_the_grants_is_refused_naming_the_allowed_ones() -> None:
    policy = ServerPolicy(models=["local", "openai/=OPENAI_API_KEY", "openai/o1=O1_KEY"])
    assert policy.grant_for("openai/o1").key_env == "O1_KEY"  # the exact grant wins
    assert policy.grant_for("openai/gpt-4o").key_env == "OPENAI_API_KEY"
    for model in ("openai/", "gpt-4o", "cerebras/x", "openai", "litellm_proxy/openai/x"):
        with pytest.raises(PolicyViolation, match=r"allowed: local, openai/\*, openai/o1") as err:
            policy.check_models(config_for(model).models)
        assert err.value.path == "models.reflection"


def test_the_lm_gets_exactly_the_bound_key_and_never_an_empty_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    monkeypatch.setenv("GROQ_KEY_OF_OWNER", "gsk-bound")
    policy = ServerPolicy(
        models=["groq/=GROQ_KEY_OF_OWNER", "openai/qwen@http://127.0.0.1:9/v1", "hosted_vllm/"]
    )
    lm = default_reflection_lm(
        config_for("groq/llama", reflection_kwargs={"top_p": 0.5}), policy=policy
    )
    assert isinstance(lm, LM) and lm.kwargs == {"api_key": "gsk-bound", "top_p": 0.5}
    local = default_reflection_lm(config_for("openai/qwen"), policy=policy)
    assert local.kwargs == {"api_key": NO_KEY, "api_base": "http://127.0.0.1:9/v1"}
    assert default_reflection_lm(config_for("hosted_vllm/m"), policy=policy).kwargs == {
        "api_key": NO_KEY
    }
    monkeypatch.delenv("GROQ_KEY_OF_OWNER")
    with pytest.raises(ConfigError, match=r"\$GROQ_KEY_OF_OWNER, which is not set"):
        default_reflection_lm(config_for("groq/llama"), policy=policy)


# ------------------------------------------------------------------ the provider survey
def survey_call(lm: Any) -> None:
    """One call as the server would make it, without the LM's own retries."""
    lm.num_retries = lm.timeout_retries = 0
    with contextlib.suppress(Exception):  # every request is refused: the call fails
        lm("Say hi.")


def test_provider_survey_the_owners_keys_reach_only_the_host_bound_to_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every provider prefix litellm knows, as a job's model, on a server granting OpenAI
    models only: all but openai/ are refused at submit. Then each prefix granted with its own
    bound key: the call carries that key only, never a provider key from the environment,
    and nothing reaches a cloud metadata address."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for name in [k for k in os.environ if k.endswith(("_API_KEY", "_TOKEN", "_SECRET_KEY"))]:
        monkeypatch.delenv(name)
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    prefixes = provider_prefixes()
    assert len(prefixes) > 150
    openai_only = ServerPolicy(models=["openai/=OPENAI_API_KEY"])
    accepted = []
    for prefix in prefixes:
        try:
            openai_only.check_models(config_for(f"{prefix}/x").models)
            accepted.append(prefix)
        except PolicyViolation:
            pass
    assert accepted == ["openai"]

    leaks: dict[str, set[str]] = {}
    metadata: dict[str, set[str]] = {}
    called = 0
    with trap_transport() as trap:
        survey_call(default_reflection_lm(config_for("openai/gpt-4o-mini"), policy=openai_only))
        assert trap.carrying(OPENAI_SECRET) == {"api.openai.com"}  # the control: it is seen
        for prefix in prefixes:
            if prefix in CLOUD_IDENTITY_PROVIDERS:
                with pytest.raises(ConfigError, match="cloud identity"):
                    ServerPolicy.build(models=[f"{prefix}/=BOUND_KEY"])
                continue
            bound = f"sk-BOUND-{prefix}"
            monkeypatch.setenv("BOUND_KEY", bound)
            policy = ServerPolicy(models=[f"{prefix}/=BOUND_KEY"])
            trap.clear()
            survey_call(default_reflection_lm(config_for(f"{prefix}/x"), policy=policy))
            called += 1
            for env, secret in ENV_SECRETS.items():
                if trap.carrying(secret):
                    leaks.setdefault(prefix, set()).update(
                        f"{env}->{h}" for h in trap.carrying(secret)
                    )
            hit = {h for h in trap.hosts() if h.strip("[]") in METADATA}
            if hit:
                metadata[prefix] = hit
    assert called > 150
    assert leaks == {}, leaks
    assert metadata == {}, metadata


def test_policyopt_serve_takes_model_grants_and_refuses_unclear_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    import policyopt.remote.server.app as server
    from policyopt.cli import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(server, "serve", lambda **kwargs: seen.update(kwargs))
    flags = ["serve", "--api-key", "k", "--model", "openai/gpt-4o-mini=OPENAI_API_KEY"]
    result = CliRunner().invoke(app, [*flags, "--model", "local"])
    assert result.exit_code == 0, result.output
    grants = [(g.name, g.key_env) for g in seen["policy"].models]
    assert grants == [("openai/gpt-4o-mini", "OPENAI_API_KEY"), ("local", None)]
    refused = CliRunner().invoke(app, ["serve", "--api-key", "k", "--model", "bedrock/=K"])
    assert refused.exit_code == 2 and "allow_cloud_identity" in refused.output
