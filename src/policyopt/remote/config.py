"""The job configuration: the shared run-config schema plus what only a remote job has.

A TOML job file holds one ``[policy_optimization]`` table (the older ``[prompt_learning]``
spelling means the same): the keys every run has (see :mod:`policyopt.runconfig.schema`:
``algorithm``, ``initial_prompt``, ``budget``, ``models``, ``overrides``, ``seed`` and one settings
table per registered optimizer) plus ``task_app``, ``ids`` and ``models.policy``; see
``docs/job-config.md``. The keys only a local run has (``program``, ``evaluate``, ``data``,
``run_dir``, ``tracking``, ``models.task``) are refused: a job cannot name Python modules or
files on the server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from policyopt.errors import ConfigError
from policyopt.runconfig.schema import (
    IDS_SCHEMA,
    SECTION_NAMES,
    Budget,
    Ids,
    Models,
    Problems,
    RunConfigBase,
    SeedPrompt,
    _Strict,
    resolve_ids,
    settings_schema,
    unknown_key,
)

__all__ = [
    "SECTION_NAMES",
    "SERVER_SETTINGS",
    "Budget",
    "JobConfig",
    "JobModels",
    "Models",
    "TaskAppRef",
    "job_config_schema",
    "resolve_ids",
    "write_schema",
]

#: optimizer settings the job server supplies or that live elsewhere in the config
SERVER_SETTINGS: dict[str, str] = {
    "max_rollouts": "not a job setting: set it in budget.max_rollouts",
    "max_cost_usd": "not a job setting: set it in budget.max_cost_usd",
    "max_time_s": "not a job setting: set it in budget.max_time_s",
    "seed": "not a job setting: set the job's top-level seed",
    "run_dir": "not a job setting: the job server gives every job its own run directory",
    "progress": "not a job setting: the job server reports progress as events",
    "accept_changed": "not a job setting: every job has its own run directory",
    "retry_failures": "not a job setting: a resumed job replays its journal as recorded",
    "backend": "not a job setting: the job server runs rollouts as coroutines (async HTTP "
    "calls to the task app, n_jobs in flight)",
    "listeners": "not a job setting: the job server streams the job's events",
}
_LOCAL_ONLY = (
    "is local-only (policyopt optimize): a job config cannot name Python modules or files on "
    "the server; serve your program as a task app (policyopt task-app) and give task_app.url"
)
#: keys only a local run has -> why a job refuses them
LOCAL_ONLY: dict[str, str] = {
    key: _LOCAL_ONLY
    for key in (
        "program",
        "evaluate",
        "data",
        "run_dir",
        "tracking",
        "models.task",
        "models.task_kwargs",
        "prompt",
        "plugins",
    )
}
_ID_SPLITS = {"train": "train_ids", "val": "val_ids", "test": "test_ids"}


class TaskAppRef(_Strict):
    """Where the task app listens and the key it expects (given, or read from the environment)."""

    url: str = Field(description="base URL of the task app, e.g. http://127.0.0.1:8001")
    api_key: str | None = Field(default=None, description="the task app's API key")
    api_key_env: str | None = Field(
        default=None,
        description="name of an environment variable (on the job server) holding the key",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://; got {value!r}")
        try:
            port = urlsplit(value).port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"the port must be 1 to 65535; got {value[:200]!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_key(self) -> TaskAppRef:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolved_api_key(self) -> str | None:
        """The key: ``api_key``, else the value of ``api_key_env`` (an error when unset)."""
        if self.api_key is not None or self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"task_app.api_key_env names {self.api_key_env!r}, which is not set in the "
                "environment of this process; export it or give task_app.api_key."
            )
        return value


class JobModels(Models):
    """The optimizer's LM (shared keys) and the policy settings sent to the task app."""

    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="free-form settings (model, temperature, ...) sent as 'policy' with every "
        "rollout",
    )


# ------------------------------------------------------------------------------ the job
class JobConfig(RunConfigBase):
    """One optimization job: what to optimize, where rollouts run, the search and its budget."""

    KIND: ClassVar[str] = "job config"
    RESERVED: ClassVar[dict[str, str]] = SERVER_SETTINGS
    FOREIGN: ClassVar[dict[str, str]] = LOCAL_ONLY
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {
        "task_app_url": ("task_app", "url"),
        "localapi_url": ("task_app", "url"),
        "task_app_api_key": ("task_app", "api_key"),
    }
    FREE_FORM: ClassVar[frozenset[str]] = frozenset({"policy", "reflection_kwargs"})

    task_app: TaskAppRef
    initial_prompt: SeedPrompt = Field(  # type: ignore[assignment]
        description="the seed prompt: a text, named texts, or chat messages {role, content}; "
        "sent to the task app in this shape with every rollout",
    )
    train_ids: Ids = Field(description="ids of the training examples (required)")
    val_ids: Ids = Field(
        default_factory=list, description="validation ids (empty: validate on train_ids)"
    )
    test_ids: Ids = Field(
        default_factory=list, description="held-out ids scored after the search (may be empty)"
    )
    models: JobModels = Field(default_factory=lambda: JobModels())

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not self.train_ids:
            problems.append(("train_ids", "at least one training example id is required"))
        test = set(self.test_ids)
        for name in ("train_ids", "val_ids"):
            shared = sorted(test & set(getattr(self, name)))
            if shared:
                problems.append(
                    (
                        "test_ids",
                        f"{len(shared)} id(s) also in {name} (e.g. {shared[0]!r}); "
                        "test ids must be held out",
                    )
                )
        budget = self.budget.max_rollouts
        if budget is not None and self.train_ids and not problems:
            problems += self._budget_problems(budget)
        return problems

    def _budget_problems(self, budget: int) -> list[tuple[str, str]]:
        """A budget the optimizer's plan cannot run (e.g. not one MIPRO trial), told at submit
        time by the registry's own check rather than when the job starts."""
        from policyopt.registry import get_spec

        try:
            spec = get_spec(self.algorithm)
        except ConfigError:  # a variant or unknown name: told by the algorithm check
            return []
        n_val = len(self.val_ids or self.train_ids)
        try:
            spec.plan(
                dict(self.sections.get(self.algorithm) or {}),
                budget=budget,
                n_train=len(self.train_ids),
                n_val=n_val,
            )
        except ConfigError as exc:
            return [("budget.max_rollouts", str(exc))]
        except Exception:  # bad settings: the settings check names them
            return []
        return []

    @classmethod
    def _spread(cls, out: dict[str, Any]) -> None:
        if "ids" not in out:
            return
        ids = out.pop("ids")
        if not isinstance(ids, dict):
            raise Problems([("ids", f"must be a table {{train, val, test}}; got {ids!r:.40}")])
        for split, value in ids.items():
            field = _ID_SPLITS.get(str(split))
            if field is None:
                raise Problems([(f"ids.{split}", unknown_key(str(split), _ID_SPLITS))])
            if field in out:
                raise Problems([(f"ids.{split}", f"conflicts with {field}; give one")])
            out[field] = value

    @classmethod
    def _prepare_override(cls, out: dict[str, Any], parts: list[str], where: str) -> None:
        if parts[0] == "ids":
            if len(parts) != 2 or parts[1] not in _ID_SPLITS:
                raise Problems([(where, "ids overrides are ids.train, ids.val or ids.test")])
            out.pop(_ID_SPLITS[parts[1]], None)
        if parts[0] in _ID_SPLITS.values() and isinstance(out.get("ids"), dict):
            out["ids"].pop({v: k for k, v in _ID_SPLITS.items()}[parts[0]], None)

    @classmethod
    def _check_path(cls, parts: list[str], where: str) -> None:
        if parts[0] == "ids":
            return
        super()._check_path(parts, where)

    @classmethod
    def _root_keys(cls) -> list[str]:
        return [*super()._root_keys(), "ids"]

    def policy(self) -> dict[str, Any]:
        """The policy settings sent with every rollout."""
        return dict(self.models.policy)


def job_config_schema() -> dict[str, Any]:
    """The published JSON schema of a job (the contents of the ``[policy_optimization]``
    table); ``docs/job_config.schema.json`` is this, written with ``indent=2``."""
    from policyopt.registry import BUILTIN

    schema = JobConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "policyopt job config"
    schema["description"] = (
        "The [policy_optimization] (or [prompt_learning]) table of a policyopt job. "
        "Also accepted: an 'ids' table {train, val, test} instead of train_ids/val_ids/test_ids, "
        "and the flat task_app_url / task_app_api_key. Unknown keys are errors. Each "
        "optimizer's settings go in a table named after it; the built-in ones are listed, and "
        "an optimizer registered on the server with policyopt.registry.register_optimizer is "
        "accepted too."
    )
    properties = schema["properties"]
    properties.pop("sections")
    for name in BUILTIN:
        properties[name] = settings_schema(name, SERVER_SETTINGS)
    properties["ids"] = {
        "type": "object",
        "properties": {split: IDS_SCHEMA for split in _ID_SPLITS},
        "additionalProperties": False,
        "description": "the splits' ids (alternative spelling of train_ids/val_ids/test_ids)",
    }
    for alias, target in JobConfig.ALIASES.items():
        properties[alias] = {
            "type": "string",
            "description": f"accepted alias of {'.'.join(target)}",
        }
    # task_app and train_ids may come under another spelling
    schema["required"] = ["algorithm", "initial_prompt"]
    schema["allOf"] = [
        {"anyOf": [{"required": [k]} for k in ("task_app", *JobConfig.ALIASES)]},
        {"anyOf": [{"required": ["train_ids"]}, {"required": ["ids"]}]},
    ]
    return schema


def write_schema(path: str | Path) -> None:
    """Write :func:`job_config_schema` to ``path`` (how docs/job_config.schema.json is made)."""
    Path(path).write_text(json.dumps(job_config_schema(), indent=2) + "\n", encoding="utf-8")
