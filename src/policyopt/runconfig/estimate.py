"""What a local run will spend, before anything runs: rollouts, LM calls, tokens and dollars.

The optimizer's plan comes from the registry (``OptimizerSpec.plan``: the small-model preset,
the config's settings, the budget fit) and its own forecast function; tokens are estimated from
the text sizes (about 4 characters a token) and priced with litellm's price map where the model
is in it. It is a forecast with stated assumptions, printed before a run and by
``policyopt estimate``; the hard caps are the budget's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policyopt.lm.local_models import is_local, local_model
from policyopt.prompts import PromptShape, is_chat, prompt_text
from policyopt.runconfig.local import Prepared

__all__ = ["estimate_run", "format_estimate", "price_per_token"]

#: characters per token assumed when counting text
CHARS_PER_TOKEN = 4
#: completion tokens assumed per call when the LM's max_tokens is not known
DEFAULT_TASK_OUTPUT = 64
DEFAULT_OPTIMIZER_OUTPUT = 256
#: fixed instruction text of an optimizer's meta-prompt (template) in tokens, roughly
OPTIMIZER_TEMPLATE_TOKENS = 250


def _tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _prompt_chars(prompt: Any) -> str:
    """The seed prompt's text for counting tokens: a chat prompt as its messages' contents, one
    ``[role] content`` line each (not their JSON, whose keys and quotes the model never sees)."""
    return prompt_text(prompt) if is_chat(prompt) else _text(prompt)


@functools.lru_cache(maxsize=1)
def _bundled_prices() -> dict[str, Any]:
    """litellm's bundled price list, read without importing litellm (seconds to import) and
    without fetching the online copy; {} when it is not there."""
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(path.read_text(encoding="utf-8")))
    return {}


def price_per_token(model: Any) -> tuple[float, float] | None:
    """(input, output) dollars per token from litellm's price map; 0 for the local model;
    None when unknown (a callable, or a model litellm has no price for)."""
    if is_local(model):
        return (0.0, 0.0)
    if not isinstance(model, str):
        return None
    prices = _bundled_prices()
    provider, _, name = model.partition("/")
    info = prices.get(model)
    if info is None and prices.get(name, {}).get("litellm_provider") == provider:
        info = prices[name]  # "openai/gpt-4o-mini" is listed as "gpt-4o-mini"
    if info is None:
        from policyopt.lm._import import _litellm  # with the bundled price list: nothing fetched

        try:
            info = _litellm().get_model_info(model)
        except Exception:  # litellm raises a bare Exception for a model it does not know
            return None
    cost_in, cost_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if cost_in is None or cost_out is None:
        return None
    return (float(cost_in), float(cost_out))


def _forecast(
    spec: Any,
    section: dict[str, Any],
    settings: Any,
    *,
    budget: int,
    n_train: int,
    n_val: int,
    n_components: int,
    small_model: bool,
) -> dict[str, Any]:
    """The optimizer's own forecast of iterations and LM calls ({} when it has none): the
    registry's ``spec.estimate`` where the spec has one, else the built-ins' forecast functions."""
    try:
        method = getattr(spec, "estimate", None)
        if callable(method):
            return dict(
                method(
                    section, budget=budget, n_train=n_train, n_val=n_val, small_model=small_model
                )
            )
        if spec.name == "gepa":
            from policyopt.gepa.optimizer import estimate

            return dict(estimate(settings, n_val, n_components))
        if spec.name == "mipro":
            from policyopt.mipro.optimizer import estimate_rollouts

            return dict(estimate_rollouts(settings, n_train, n_val, n_components))
        if spec.name == "opro":
            from policyopt.opro.config import estimate as opro_estimate

            return dict(opro_estimate(settings, n_train, n_val))
    except Exception:  # a forecast is a courtesy: the run's caps do not depend on it
        return {}
    return {}


def _optimizer_calls(forecast: Mapping[str, Any]) -> int | None:
    if isinstance(forecast.get("lm_calls"), (int, float)):
        return int(forecast["lm_calls"])
    for key, value in forecast.items():
        if key.endswith("_calls") and isinstance(value, (int, float)):
            return int(value)
    return None


def _model_label(model: Any) -> str:
    if model is None:
        return "your program's own model"
    if isinstance(model, str):
        return f"local model ({local_model(model).title})" if is_local(model) else model
    name = getattr(model, "__qualname__", type(model).__name__)
    return f"{getattr(model, '__module__', '?')}:{name}"


def _line(role: str, model: Any, calls: int | None, tok_in: int, tok_out: int) -> dict[str, Any]:
    price = price_per_token(model) if model is not None else None
    cost = None
    if price is not None and calls is not None:
        cost = calls * (tok_in * price[0] + tok_out * price[1])
    return {
        "role": role,
        "model": _model_label(model),
        "calls": calls,
        "input_tokens": None if calls is None else calls * tok_in,
        "output_tokens": None if calls is None else calls * tok_out,
        "cost_usd": cost,
        "price_known": price is not None,
    }


def estimate_run(prepared: Prepared) -> dict[str, Any]:
    """The up-front estimate of ``prepared``'s run (a JSON-able dict)."""
    from policyopt.registry import get_spec

    config = prepared.config
    spec = get_spec(config.algorithm)
    budget = int(config.budget.max_rollouts or 0)
    n_train = len(prepared.train)
    n_val = len(prepared.val) if prepared.val is not None else n_train
    n_test = len(prepared.test)
    small = is_local(prepared.reflection_model)
    plan = spec.plan(
        dict(config.sections.get(config.algorithm) or {}),
        budget=budget,
        n_train=n_train,
        n_val=n_val,
        small_model=small,
    )
    fields = set(spec.setting_names())
    run = {k: v for k, v in config.optimizer_kwargs().items() if k in fields and k not in plan}
    settings = spec.settings.model_validate({**plan, **run, "max_rollouts": budget})
    prompt = prepared.seed_prompt
    n_components = 1 if prompt is None else len(PromptShape.of(prompt, name="initial_prompt").names)
    forecast = _forecast(
        spec,
        dict(config.sections.get(config.algorithm) or {}),
        settings,
        budget=budget,
        n_train=n_train,
        n_val=n_val,
        n_components=n_components,
        small_model=small,
    )
    optimizer_calls = _optimizer_calls(forecast)
    rollouts = budget
    for key in ("rollouts", "total"):
        if isinstance(forecast.get(key), int):
            rollouts = min(budget, int(forecast[key]))
            break

    examples = [*prepared.train[:20]]
    example_tokens = sum(_tokens(_text(e)) for e in examples) / len(examples) if examples else 0.0
    prompt_tokens = _tokens(_prompt_chars(prompt)) if prompt is not None else 0
    task_kwargs = config.models.task_kwargs
    task_out = int(
        task_kwargs.get("max_tokens")
        or (128 if is_local(prepared.task_model) else DEFAULT_TASK_OUTPUT)
    )
    task_in = round(prompt_tokens + example_tokens + 10)
    test_rollouts = 2 * n_test  # the seed and the best prompt on the test split
    task_calls = None if prepared.task_model is None else rollouts + test_rollouts
    lines = [_line("task", prepared.task_model, task_calls, task_in, task_out)]

    refl_kwargs = config.models.reflection_kwargs
    refl_out = int(refl_kwargs.get("max_tokens") or (48 if small else DEFAULT_OPTIMIZER_OUTPUT))
    minibatch = int(getattr(settings, "minibatch_size", None) or 3)
    refl_in = round(
        OPTIMIZER_TEMPLATE_TOKENS + prompt_tokens + minibatch * (example_tokens + task_out + 20)
    )
    lines.append(_line(spec.lm_role, prepared.reflection_model, optimizer_calls, refl_in, refl_out))
    low, high = forecast.get("lm_calls_min"), forecast.get("lm_calls_max")
    if isinstance(low, int) and isinstance(high, int):
        lines[-1]["calls_range"] = [low, high]
    known = [x["cost_usd"] for x in lines if x["cost_usd"] is not None]
    unknown = [x["role"] for x in lines if x["cost_usd"] is None]
    return {
        "optimizer": spec.name,
        "budget": budget,
        "n_train": n_train,
        "n_val": n_val,
        "n_test": n_test,
        "rollouts": rollouts,
        "test_rollouts": test_rollouts,
        "forecast": forecast,
        "settings": {k: v for k, v in plan.items() if isinstance(v, (str, int, float, bool))},
        "lms": lines,
        "cost_usd": sum(known),
        "cost_unknown_for": unknown,
        "assumptions": (
            f"~{CHARS_PER_TOKEN} characters a token; one task-model call per rollout; "
            f"{task_out} output tokens a task call, {refl_out} an optimizer call; the "
            "optimizer's forecast of its LM calls (its accept rate is a guess)"
        ),
    }


def format_estimate(est: Mapping[str, Any]) -> list[str]:
    """The estimate as a few plain lines."""
    split = f"{est['n_train']} train / {est['n_val']} val / {est['n_test']} test examples"
    out = [f"Estimate: {est['optimizer']} on {split}, budget {est['budget']} rollouts"]
    fc = est["forecast"]
    detail = []
    if "seed_evaluation" in fc:
        detail.append(f"seed prompt scored on {fc['seed_evaluation']} val examples")
    for key, label in (("iterations", "iterations"), ("steps", "steps"), ("num_trials", "trials")):
        if key in fc:
            detail.append(f"~{fc[key]} {label}")
    rollouts = f"  rollouts: at most {est['rollouts']} in the search (hard cap {est['budget']})"
    if est["test_rollouts"]:
        rollouts += f" + {est['test_rollouts']} on the test split after it"
    out.append(rollouts + (f"; {', '.join(detail)}" if detail else ""))
    for line in est["lms"]:
        if line["calls"] is None:
            calls = (
                "calls not known ("
                + ("your program calls its own model" if line["role"] == "task" else "no forecast")
                + ")"
            )
            out.append(f"  {line['role']} LM ({line['model']}): {calls}")
            continue
        cost = "unknown price" if not line["price_known"] else f"${line['cost_usd']:.4f}"
        span = line.get("calls_range")
        calls = f"~{line['calls']}" + (f" ({span[0]}-{span[1]})" if span else "")
        out.append(
            f"  {line['role']} LM ({line['model']}): {calls} calls, "
            f"~{line['input_tokens']:,} input + ~{line['output_tokens']:,} output tokens, {cost}"
        )
    unknown = ", ".join(est["cost_unknown_for"])
    if len(est["cost_unknown_for"]) == len(est["lms"]):
        total = f"  total: unknown price ({unknown} LM)"
    else:
        total = f"  total: ~${est['cost_usd']:.4f}" + (
            f" + unknown ({unknown} LM)" if unknown else ""
        )
    out.append(total)
    out.append(f"  (a forecast: {est['assumptions']})")
    return out
