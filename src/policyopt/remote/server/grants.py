"""The models a job server's owner lets jobs use, each bound to the credential it is called with.

Models are default-deny on a server: a job may name only a model the owner granted, by exact
name (``openai/gpt-4o-mini``) or by provider prefix (``openai/``, also spelled ``openai/*``),
and every call the server makes for it passes the credential the owner bound to that grant
(the value of an environment variable the owner names) as an explicit ``api_key``. litellm's
own look-ups of provider keys in the environment are never relied on: they are how a model
string such as ``cerebras/x`` sent the server's OpenAI key to another company's host.

Grants are written ``NAME[=ENV_VAR][@API_BASE]`` (``--model`` on ``policyopt serve``) or as
tables in the policy file. A grant without a key (``local``, or a server on loopback with an
owner-set ``api_base``) is called with a placeholder key that is no secret. ``local:NAME``
grants another local model the library ships (``local:qwen2.5-coder-0.5b``), served by the
server itself: it takes no key or endpoint, and a server refuses to start with a grant for a
model it does not know or has not installed (:func:`check_installed`). Providers whose
authentication is not a plain API key (cloud identity: Bedrock, SageMaker, Vertex AI, ...)
would act with the server's own cloud identity and are refused unless the owner sets
``allow_cloud_identity``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policyopt.errors import ConfigError, MissingDependencyError
from policyopt.lm.local_models import is_local, local_model

__all__ = [
    "CLOUD_IDENTITY_PROVIDERS",
    "LOCAL_MODEL",
    "NO_KEY",
    "ModelGrant",
    "check_installed",
    "parse_grants",
    "provider_of",
]

#: the embedded model: granted by default, it needs no credential and calls only loopback
LOCAL_MODEL = "local"
#: the key sent with a keyless grant: not a secret, and never empty (an empty key makes
#: litellm fall back to the provider key in the environment)
NO_KEY = "policyopt-no-key"
#: providers that authenticate with the host's cloud identity or an SDK credential chain
#: (instance metadata, ambient files), not a plain key; they reached 169.254.169.254 in the
#: provider survey (tests/unit/remote/test_model_grants.py)
CLOUD_IDENTITY_PROVIDERS = frozenset(
    {
        "aws_polly",
        "aws_textract",
        "bedrock",
        "bedrock_mantle",
        "chatgpt",
        "databricks",
        "databricks_agent",
        "github_copilot",
        "oci",
        "s3_vectors",
        "sagemaker",
        "sagemaker_chat",
        "sagemaker_nova",
        "sap",
        "snowflake",
        "vertex_ai",
        "vertex_ai_beta",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def provider_of(model: str) -> str:
    """The provider prefix of a litellm model string (``openai/x`` -> ``openai``), or ''."""
    return model.split("/", 1)[0] if "/" in model else ""


class ModelGrant(BaseModel):
    """One model (or provider prefix) jobs may use, and where its credential comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        description="an exact model name ('openai/gpt-4o-mini', 'local') or a provider "
        "prefix ending in '/' ('openai/'; 'openai/*' means the same)"
    )
    key_env: str | None = Field(
        default=None,
        description="environment variable (of the server) holding this model's API key; "
        "None: the model needs no key",
    )
    api_base: str | None = Field(
        default=None, description="the owner's endpoint for this model (e.g. a loopback server)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if value.endswith("/*"):
            value = value[:-1]
        if not value or value == "/" or any(c in value for c in "*?[") or value.isspace():
            raise ValueError(
                f"a model grant is an exact model name or a provider prefix ending in '/'; "
                f"got {value!r}"
            )
        if value.startswith(f"{LOCAL_MODEL}:"):
            try:
                local_model(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("key_env")
    @classmethod
    def _key_env(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"key_env must be an environment variable name; got {value!r}")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"api_base must start with http:// or https://; got {value!r}")
        return value

    @model_validator(mode="after")
    def _embedded(self) -> ModelGrant:
        if self.name.startswith(f"{LOCAL_MODEL}:") and (self.key_env or self.api_base):
            raise ValueError(
                f"{self.name!r} is a local model the server runs itself: its grant takes no "
                "key or api_base"
            )
        return self

    @property
    def embedded(self) -> bool:
        """Whether jobs under this grant use a model the server runs itself (``local`` or
        ``local:NAME``, with no owner endpoint)."""
        return is_local(self.name) and self.api_base is None

    @property
    def provider(self) -> str:
        """The provider this grant is for ('' for a bare name such as ``local``)."""
        return provider_of(self.name)

    def matches(self, model: str) -> bool:
        """Whether a job's model name falls under this grant."""
        if self.name.endswith("/"):
            return model.startswith(self.name) and len(model) > len(self.name)
        return model == self.name

    def credential(self) -> str:
        """The key to send: the bound variable's value (read now, never cached), else
        :data:`NO_KEY`. A bound variable that is unset is a :class:`ConfigError`."""
        if self.key_env is None:
            return NO_KEY
        value = os.environ.get(self.key_env, "")
        if not value:
            raise ConfigError(
                f"the server's model grant {self.name!r} reads its key from ${self.key_env}, "
                "which is not set on the server (the server's owner must export it)"
            )
        return value

    def describe(self) -> str:
        """How the grant reads in messages: the name, with '*' after a provider prefix."""
        return self.name + "*" if self.name.endswith("/") else self.name


def check_installed(grants: tuple[ModelGrant, ...]) -> None:
    """Raise :class:`ConfigError` (one line, with how to install it) for the first
    ``local:NAME`` grant whose model is not installed: checked when a server starts, so that
    its jobs do not fail one by one. Plain ``local``, granted by default, is checked when a job
    first uses it."""
    from policyopt.lm.local_models import check_installed as installed

    for grant in grants:
        if grant.name.startswith(f"{LOCAL_MODEL}:"):
            try:
                installed(grant.name)
            except MissingDependencyError as exc:
                raise ConfigError(
                    f"the model grant {grant.name!r} cannot be served: {exc}"
                ) from None


def parse_grants(value: Any) -> tuple[ModelGrant, ...]:
    """Grants from what a policy may hold: ``"NAME[=ENV][@API_BASE]"`` strings, tables
    ``{name, key_env, api_base}``, a table ``{NAME: ENV}`` or grants."""
    if value is None:
        return ()
    if isinstance(value, (str, ModelGrant)):
        value = [value]
    if isinstance(value, dict):
        value = [{"name": name, "key_env": env or None} for name, env in value.items()]
    grants: list[ModelGrant] = []
    for item in value:
        if isinstance(item, ModelGrant):
            grants.append(item)
        elif isinstance(item, str):
            grants.append(_from_text(item))
        elif isinstance(item, dict):
            grants.append(ModelGrant(**item))
        else:
            raise ValueError(f"a model grant is 'NAME[=ENV_VAR][@API_BASE]'; got {item!r}")
    return tuple(grants)


def _from_text(text: str) -> ModelGrant:
    """``NAME[=ENV][@API_BASE]`` -> a grant (``--model openai/gpt-4o-mini=OPENAI_API_KEY``)."""
    name, _, rest = text.partition("=")
    if "@" in name:
        name, _, base = name.partition("@")
        env = ""
    else:
        env, _, base = rest.partition("@")
    return ModelGrant(name=name, key_env=env.strip() or None, api_base=base.strip() or None)
