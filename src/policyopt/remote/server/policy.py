"""What the job server's owner allows a job to do: the server policy.

The job server runs other people's job configs with the server's own model keys, so the
owner, not the job, decides:

- **models**: default-deny. A job may use only the models the owner grants (``models``: exact
  names or provider prefixes, each bound to the environment variable holding its key; see
  :mod:`policyopt.remote.server.grants`); by default only the embedded ``local`` model;
- **model calls**: a job may set only sampling settings for its models (:data:`SAMPLING_KEYS`,
  plus the owner's ``extra_model_kwargs``). Transport and credential settings
  (:data:`TRANSPORT_KEYS`: ``api_base``, ``api_key``, ``headers``, ...) would send the server's
  provider key wherever the job says, so they are refused unless the owner sets
  ``allow_api_base``;
- **outbound requests**: ``task_app_hosts``, the hosts and networks task apps may live on
  (:mod:`policyopt.remote.taskapp.outbound`; loopback by default);
- **input limits**: nesting depth, string and list lengths and number of example ids;
- **quotas per key**: unfinished jobs, and rollouts / optimizer-LM calls / dollars over all of
  a key's jobs.

A :class:`ServerPolicy` is built from keyword arguments, ``policyopt serve`` flags or a TOML
file (:meth:`ServerPolicy.from_toml`). Violations are :class:`PolicyViolation`, which carry the
dotted path of what was refused; the server answers them with 422 (429 for quotas).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policyopt.errors import ConfigError
from policyopt.remote.errors import PolicyViolation
from policyopt.remote.server.grants import (
    CLOUD_IDENTITY_PROVIDERS,
    LOCAL_MODEL,
    ModelGrant,
    parse_grants,
)
from policyopt.remote.taskapp.outbound import DEFAULT_TASK_APP_HOSTS

__all__ = [
    "DEFAULT_TASK_APP_HOSTS",
    "SAMPLING_KEYS",
    "TRANSPORT_KEYS",
    "PolicyViolation",
    "ServerPolicy",
    "check_json_limits",
]

#: LM settings a job may always set: they change sampling, not where or how a call is sent
SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "reasoning_effort",
    }
)
#: LM settings that choose the endpoint or carry credentials; only with ``allow_api_base``
TRANSPORT_KEYS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "headers",
        "extra_headers",
        "organization",
        "custom_llm_provider",
        "deployment_id",
        "aws_region_name",
        "vertex_project",
        "vertex_location",
    }
)


class ServerPolicy(BaseModel):
    """The owner's rules for jobs on this server (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_api_base: bool = Field(
        default=False,
        description="let jobs set transport/credential LM settings (api_base, api_key, ...)",
    )
    models: tuple[ModelGrant, ...] = Field(
        default=(ModelGrant(name=LOCAL_MODEL),),
        description="the models jobs may use, each bound to its key: 'NAME[=ENV_VAR][@API_BASE]' "
        "strings (NAME exact, or a provider prefix ending in '/'), tables, or {NAME: ENV_VAR}; "
        "'local:NAME' for another installed local model; default: only the embedded 'local' "
        "model",
    )
    allow_cloud_identity: bool = Field(
        default=False,
        description="allow grants for providers that authenticate with the server's cloud "
        "identity (bedrock, sagemaker, vertex_ai, ...) rather than a plain key",
    )
    extra_model_kwargs: tuple[str, ...] = Field(
        default=(), description="more LM settings jobs may set, beyond SAMPLING_KEYS"
    )
    task_app_hosts: tuple[str, ...] = Field(
        default=DEFAULT_TASK_APP_HOSTS,
        description="hosts, IP addresses and networks (CIDR) task apps may be on",
    )
    max_depth: int = Field(default=32, ge=2, description="deepest nesting of a JSON body")
    max_string_chars: int = Field(default=200_000, ge=1, description="longest JSON string")
    max_list_items: int = Field(default=100_000, ge=1, description="longest JSON array")
    max_object_keys: int = Field(default=1_000, ge=1, description="most keys of a JSON object")
    max_ids: int = Field(default=100_000, ge=1, description="most example ids in one job")
    max_n_jobs: int = Field(
        default=256, ge=1, description="most rollouts one job may have in flight (its n_jobs)"
    )
    max_rollouts_per_job: int = Field(
        default=1_000_000, ge=1, description="largest budget.max_rollouts of one job"
    )
    max_trials: int = Field(default=2_000, ge=1, description="most MIPRO trials (num_trials)")
    max_proposals: int = Field(
        default=32,
        ge=1,
        description="most proposals per GEPA iteration / reflection / OPRO step, and MIPRO "
        "candidates",
    )
    max_minibatch_size: int = Field(
        default=1_000, ge=1, description="largest minibatch (and GEPA merge subsample)"
    )
    max_rollout_timeout_s: float = Field(
        default=600.0, gt=0, allow_inf_nan=False, description="longest per-rollout timeout"
    )
    max_setting_value: int = Field(
        default=10_000_000,
        ge=1,
        description="largest magnitude of any other number in a job's optimizer settings",
    )
    max_active_jobs_per_key: int = Field(
        default=20, ge=1, description="unfinished (pending, queued, running) jobs per key"
    )
    max_rollouts_per_key: int | None = Field(
        default=None,
        ge=1,
        description="rollouts over all of a key's jobs (budgets of unfinished jobs count whole)",
    )
    max_cost_usd_per_key: float | None = Field(
        default=None, gt=0, description="LM dollars over all of a key's jobs"
    )
    max_job_memory_mib: int | None = Field(
        default=None,
        ge=64,
        description="memory of one job's process in MiB (with process isolation, what "
        "policyopt serve uses): past it the job is stopped and fails with that reason",
    )
    max_lm_calls_per_key: int | None = Field(
        default=None,
        ge=1,
        description="optimizer-LM calls over all of a key's jobs (an unfinished job holds its "
        "max_lm_calls cap, which such a server then requires)",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: Any) -> Any:
        if isinstance(values, dict) and "allowed_models" in values:
            raise ValueError(
                "allowed_models was replaced by models: list each model (or provider prefix "
                "ending in '/') with the environment variable of its key, e.g. "
                "models = ['openai/gpt-4o-mini=OPENAI_API_KEY'] (--model on the command line)"
            )
        return values

    @field_validator("models", mode="before")
    @classmethod
    def _grants(cls, value: Any) -> tuple[ModelGrant, ...]:
        return parse_grants(value)

    @model_validator(mode="after")
    def _cloud_identity(self) -> ServerPolicy:
        for grant in self.models:
            if grant.provider in CLOUD_IDENTITY_PROVIDERS and not self.allow_cloud_identity:
                raise ValueError(
                    f"the model grant {grant.name!r} is for {grant.provider}, which signs in "
                    "with the server's cloud identity, not a plain key: jobs would act as the "
                    "server on its cloud account; set allow_cloud_identity "
                    "(--allow-cloud-identity) to allow it"
                )
        return self

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> ServerPolicy:
        """A policy from a TOML file of these fields (a ``[server]`` table or the top level);
        ``overrides`` (e.g. from CLI flags) win."""
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib

        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"Server policy file {str(file)!r} does not exist.")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from None
        data = dict(data.get("server", data))
        data.update(overrides)
        return cls.build(**data)

    @classmethod
    def build(cls, **values: Any) -> ServerPolicy:
        """Like the constructor, but errors are :class:`ConfigError` naming the field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"Invalid server policy: {problems}") from None

    # ------------------------------------------------------------------ model calls
    def grant_for(self, model: str, path: str = "models.reflection") -> ModelGrant:
        """The owner's grant a job's model name falls under (an exact name wins over a
        prefix); :class:`PolicyViolation` naming the allowed models when there is none."""
        found = [g for g in self.models if g.matches(model)]
        if found:
            return max(found, key=lambda g: len(g.name))  # the most specific grant
        allowed = ", ".join(g.describe() for g in self.models) or "(none)"
        raise PolicyViolation(
            path,
            f"model {model[:200]!r} is not allowed on this server; allowed: {allowed} "
            "(the server's owner grants models with --model NAME=KEY_ENV_VAR)",
        )

    def check_models(self, models: Any) -> None:
        """Raise :class:`PolicyViolation` unless a job's ``models`` section is allowed."""
        self.grant_for(models.reflection)
        if models.api_base is not None and not self.allow_api_base:
            raise PolicyViolation(
                "models.api_base",
                "this server does not accept an api_base (it could send the server's "
                "provider keys elsewhere); remove it, or start the server with --allow-api-base",
            )
        for field in type(models).model_fields:
            if field.endswith("_kwargs"):
                self.check_model_kwargs(getattr(models, field), f"models.{field}")

    def check_model_kwargs(self, kwargs: Mapping[str, Any], path: str) -> None:
        """Raise :class:`PolicyViolation` for the first LM setting a job may not set."""
        allowed = SAMPLING_KEYS | set(self.extra_model_kwargs)
        for key in kwargs:
            where = f"{path}.{key}"
            if key in allowed:
                continue
            if key in TRANSPORT_KEYS:
                if self.allow_api_base:
                    continue
                raise PolicyViolation(
                    where,
                    "transport and credential settings are not accepted from jobs on this "
                    "server (they could send the server's provider keys elsewhere); remove "
                    "it, or start the server with --allow-api-base",
                )
            raise PolicyViolation(
                where,
                "not an allowed model setting; a job may set only sampling settings: "
                + ", ".join(sorted(allowed)),
            )

    # ------------------------------------------------------------------ input limits
    def check_n_jobs(self, config: Any) -> None:
        """Raise :class:`PolicyViolation` unless a job's rollouts in flight are 1 to
        ``max_n_jobs`` (each is a coroutine and a task-app connection; -1, all cores, would
        skip the cap)."""
        n_jobs = config.optimizer_kwargs().get("n_jobs")
        if n_jobs is not None and not (_is_int(n_jobs) and 1 <= n_jobs <= self.max_n_jobs):
            raise PolicyViolation(
                "n_jobs",
                f"{n_jobs!r} rollouts in flight; this server takes 1 to {self.max_n_jobs}",
            )

    def check_settings(self, config: Any) -> None:
        """Raise :class:`PolicyViolation` for the first optimizer setting or budget over the
        server's bounds: named caps (trials, proposals, minibatch, rollout timeout, budget),
        and every other number finite and at most ``max_setting_value`` in magnitude."""
        self.check_n_jobs(config)
        kwargs = config.optimizer_kwargs()
        caps = {name: (cap, what) for names, cap, what in self._caps() for name in names}
        if "timeout" in kwargs:
            timeout = kwargs["timeout"]
            if timeout is None or not (
                _is_number(timeout) and timeout <= self.max_rollout_timeout_s
            ):
                raise PolicyViolation(
                    "timeout",
                    f"{timeout!r}: a rollout's timeout must be a number of seconds, at most "
                    f"{self.max_rollout_timeout_s:g} on this server (null, no timeout, is not "
                    "accepted)",
                )
        for path, value in _numbers(kwargs):
            name = path.split(".", 1)[0]
            if name in ("n_jobs", "timeout"):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise PolicyViolation(path, f"{value!r}: numbers must be finite")
            if name == "seed" and "." not in path:
                if not 0 <= value < 2**63:
                    raise PolicyViolation(path, f"{value!r}: a seed is 0 to 2**63-1")
                continue
            cap, what = caps.get(name, (self.max_setting_value, "this setting"))
            if "." in path:
                cap, what = self.max_setting_value, "a number in a setting"
            if abs(value) > cap:
                raise PolicyViolation(
                    path, f"{value!r} is over this server's limit of {cap:,} for {what}"
                )

    def _caps(self) -> list[tuple[tuple[str, ...], int, str]]:
        return [
            (("num_trials",), self.max_trials, "MIPRO trials"),
            (
                (
                    "proposals_per_iteration",
                    "proposals_per_reflection",
                    "max_accepted_per_iteration",
                    "proposals_per_step",
                    "num_candidates",
                ),
                self.max_proposals,
                "proposals",
            ),
            (("minibatch_size", "merge_subsample_size"), self.max_minibatch_size, "a minibatch"),
            (("max_rollouts",), self.max_rollouts_per_job, "one job's rollouts"),
        ]

    def check_ids(self, config: Any) -> None:
        """Raise :class:`PolicyViolation` when a job names too many example ids."""
        total = len(config.train_ids) + len(config.val_ids) + len(config.test_ids)
        if total > self.max_ids:
            raise PolicyViolation(
                "ids", f"{total} example ids in all; this server takes at most {self.max_ids}"
            )


def check_json_limits(value: Any, policy: ServerPolicy, root: str = "") -> None:
    """Raise :class:`PolicyViolation` (naming the path) when a decoded JSON value nests too
    deep or holds a string, array or object over the policy's limits. Iterative: a hostile
    depth cannot exhaust the stack here."""
    for path, depth, node in _walk(value, root):
        if depth > policy.max_depth:
            raise PolicyViolation(path or "(body)", f"nested deeper than {policy.max_depth} levels")
        if isinstance(node, str):
            if len(node) > policy.max_string_chars:
                raise PolicyViolation(
                    path or "(body)",
                    f"a string of {len(node)} characters; the limit is {policy.max_string_chars}",
                )
            _check_text(node, path)
        if isinstance(node, float) and not math.isfinite(node):
            raise PolicyViolation(path or "(body)", f"{node!r}: numbers must be finite")
        if isinstance(node, list) and len(node) > policy.max_list_items:
            raise PolicyViolation(
                path or "(body)",
                f"a list of {len(node)} items; the limit is {policy.max_list_items}",
            )
        if isinstance(node, dict):
            if len(node) > policy.max_object_keys:
                raise PolicyViolation(
                    path or "(body)",
                    f"an object of {len(node)} keys; the limit is {policy.max_object_keys}",
                )
            for key in node:
                if len(key) > policy.max_string_chars:
                    raise PolicyViolation(path or "(body)", "a key over the string limit")
                _check_text(key, f"{path}.{key}" if path else key, " (a key)")


_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def _check_text(text: str, path: str, what: str = "") -> None:
    """Refuse a NUL or a lone surrogate: neither can be stored (PostgreSQL text, UTF-8)."""
    found = _BAD_CHARS.search(text)
    if found is not None:
        char = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
        raise PolicyViolation(
            _printable(path) or "(body)",
            f"a string{what} holds {char} (\\u{ord(found.group()):04x}), which is not text; "
            "remove it",
        )


def _printable(path: str) -> str:
    """A path safe to show and store (its bad characters escaped)."""
    return _BAD_CHARS.sub(lambda m: f"\\u{ord(m.group()):04x}", path)[:200]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and value > 0


def _numbers(value: Any, root: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, number) of every int/float in settings (bools are not numbers)."""
    for path, _, node in _walk(value, root):
        if _is_int(node) or isinstance(node, float):
            yield path, node


def _walk(value: Any, root: str) -> Iterator[tuple[str, int, Any]]:
    """(dotted path, depth, node) of every node, depth first, without recursion."""
    stack: list[tuple[str, int, Any]] = [(root, 1, value)]
    while stack:
        path, depth, node = stack.pop()
        yield path, depth, node
        children: Sequence[tuple[str, Any]] = ()
        if isinstance(node, dict):
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        stack.extend((p, depth + 1, v) for p, v in reversed(children))
