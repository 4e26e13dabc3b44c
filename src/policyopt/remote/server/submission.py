"""What a submitted job body must pass before it is stored: JSON within the server's limits
(finite numbers, text without NUL or lone surrogates), a valid job config whose models,
ids and settings the policy allows, and the key's quotas. Every check is O(the body's size):
the server runs them off its event loop, and id ranges are counted, never expanded, before
the ``max_ids`` check."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException

from policyopt.errors import ConfigError
from policyopt.remote.server.policy import PolicyViolation, ServerPolicy, check_json_limits

__all__ = [
    "check_quotas",
    "checked_config",
    "parse_config",
    "parse_json",
    "reservation",
]


def checked_config(raw: bytes, policy: ServerPolicy) -> Any:
    """A submitted body -> JobConfig, every check O(the body's size): id ranges are counted
    against the policy's ``max_ids`` before they are expanded."""
    from policyopt.runconfig.schema import ID_LIMIT

    data = parse_json(raw, policy)
    token = ID_LIMIT.set(policy.max_ids)
    try:
        return parse_config(data, policy)
    finally:
        ID_LIMIT.reset(token)


def parse_config(data: Any, policy: ServerPolicy) -> Any:
    """A submitted body -> JobConfig (422 with the config error's message when invalid).

    Accepts the config itself (TOML-shaped, with or without its ``policy_optimization`` /
    ``prompt_learning`` table) or Synth's envelope ``{algorithm, config_body, overrides}``.
    """
    from policyopt.remote.config import SECTION_NAMES, JobConfig

    if not isinstance(data, dict):
        raise HTTPException(422, "The body must be a JSON object holding the job config.")
    if "config_body" in data:
        extra = set(data) - {"config_body", "algorithm", "overrides", "metadata", "auto_start"}
        if extra:
            raise HTTPException(422, f"Unknown key(s) next to config_body: {sorted(extra)}.")
        body = data["config_body"]
        if not isinstance(body, dict):
            raise HTTPException(422, "config_body must be a JSON object.")
        present = [name for name in SECTION_NAMES if name in body]
        table = body[present[0]] if len(present) == 1 else body
        if not isinstance(table, dict):
            raise HTTPException(422, f"config_body.{present[0]} must be a JSON object.")
        table = dict(table)
        if data.get("algorithm") is not None:
            table.setdefault("algorithm", data["algorithm"])
            if str(table["algorithm"]).lower() != str(data["algorithm"]).lower():
                raise HTTPException(
                    422,
                    f"algorithm {data['algorithm']!r} disagrees with the config's "
                    f"{table['algorithm']!r}.",
                )
        if data.get("overrides"):
            if not isinstance(data["overrides"], dict):
                raise HTTPException(422, "overrides must be a JSON object of dotted keys.")
            table["overrides"] = {**(table.get("overrides") or {}), **data["overrides"]}
        data = table
    try:
        config = JobConfig.from_dict(data)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    except RecursionError:  # defence in depth: the limits are checked before this
        raise HTTPException(422, "The job config nests too deeply.") from None
    if config.task_app.api_key_env is not None:
        raise HTTPException(
            422,
            "task_app.api_key_env is resolved by the client before submitting (the server never "
            "reads its own environment for a job); send task_app.api_key instead.",
        )
    try:
        policy.check_models(config.models)
        policy.check_ids(config)
        policy.check_settings(config)
    except PolicyViolation as exc:
        raise HTTPException(exc.status, str(exc)) from None
    return config


def parse_json(raw: bytes, policy: ServerPolicy) -> Any:
    """A request body as JSON within the policy's limits (400 / 422 naming what was wrong)."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except _NotFinite as exc:
        raise HTTPException(422, f"The JSON body holds {exc}: numbers must be finite.") from None
    except RecursionError:
        raise HTTPException(
            422, f"The JSON body nests deeper than {policy.max_depth} levels."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"The request body is not valid JSON: {exc}") from None
    try:
        check_json_limits(data, policy)
    except PolicyViolation as exc:
        raise HTTPException(422, f"The JSON body is over a limit: {exc}") from None
    return data


class _NotFinite(ValueError):
    """A JSON number that is not finite (Infinity, NaN, 1e999)."""


def _no_constant(name: str) -> float:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text[:40])
    return value


def reservation(policy: ServerPolicy, config: Any) -> dict[str, Any]:
    """What a job holds of its key's quotas while it runs, besides its budget: ``lm_calls``,
    its optimizer-LM cap (``max_lm_calls``: a hard cap, no call is made past it). A server that
    caps dollars or LM calls per key requires the job's own cap (422 when missing)."""
    dollars = policy.max_cost_usd_per_key
    if dollars is not None and config.budget.max_cost_usd is None:
        raise HTTPException(
            422,
            "budget.max_cost_usd: required on this server, which caps LM spend per key "
            f"(${dollars:g} in all).",
        )
    calls = config.optimizer_kwargs().get("max_lm_calls")
    if policy.max_lm_calls_per_key is not None and calls is None:
        raise HTTPException(
            422,
            f"{config.algorithm.split('[')[0]}.max_lm_calls: required on this server, which caps "
            f"optimizer-LM calls per key ({policy.max_lm_calls_per_key} in all).",
        )
    return {} if calls is None else {"lm_calls": int(calls)}


def check_quotas(policy: ServerPolicy, usage: Mapping[str, float], config: Any) -> None:
    """429 when this job would take its key over a quota (see :class:`ServerPolicy`); called
    with the key's usage inside the transaction that stores the job."""
    if usage["active"] >= policy.max_active_jobs_per_key:
        raise HTTPException(
            429,
            f"This key already has {int(usage['active'])} unfinished jobs (the limit is "
            f"{policy.max_active_jobs_per_key}); wait for some to finish or cancel them.",
        )
    cap = policy.max_rollouts_per_key
    test_most = 2 * len(config.test_ids)  # the seed and the best prompt on every test id
    if cap is not None and usage["rollouts"] + config.budget.max_rollouts + test_most > cap:
        left = max(0, cap - int(usage["rollouts"]))
        raise HTTPException(
            429,
            f"Rollout quota: this key's jobs hold {int(usage['rollouts'])} of its {cap} "
            f"rollouts; budget.max_rollouts={config.budget.max_rollouts} plus up to "
            f"{test_most} test rollouts (2 per test id) does not fit ({left} left).",
        )
    dollars = policy.max_cost_usd_per_key
    asked = config.budget.max_cost_usd
    if dollars is not None and asked is not None and usage["cost_usd"] + asked > dollars:
        raise HTTPException(
            429,
            f"Cost quota: this key's jobs hold ${usage['cost_usd']:.4f} of its "
            f"${dollars:g}; budget.max_cost_usd={asked:g} does not fit.",
        )
    calls = policy.max_lm_calls_per_key
    held = int(usage.get("lm_calls", 0))
    asked_calls = reservation(policy, config).get("lm_calls")
    if calls is not None and asked_calls is not None and held + asked_calls > calls:
        raise HTTPException(
            429,
            f"Optimizer-LM call quota: this key's jobs hold {held} of its {calls} calls; "
            f"max_lm_calls={asked_calls} does not fit ({max(0, calls - held)} left).",
        )
