"""The optimizer registry and the explicit signatures it relies on."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OptimizationResult, Program
from policyopt.errors import ConfigError
from policyopt.gepa.config import GEPASettings
from policyopt.mipro.config import MIPROSettings
from policyopt.opro import OPRO, OPROSettings
from policyopt.registry import (
    OptimizerSpec,
    get_spec,
    optimizer_names,
    register_optimizer,
    settings_args,
)
from policyopt.runtime import RunSettings
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task


@pytest.mark.parametrize(
    ("cls", "model"), [(GEPA, GEPASettings), (MIPRO, MIPROSettings), (OPRO, OPROSettings)]
)
def test_every_setting_is_a_named_keyword_with_the_models_default(
    cls: type[Any], model: type[Any]
) -> None:
    params = inspect.signature(cls.__init__).parameters
    for name, field in model.model_fields.items():
        assert name in params, f"{cls.__name__} hides the setting {name!r}"
        param = params[name]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY
        if field.is_required():
            assert param.default is inspect.Parameter.empty
        else:
            assert param.default == field.default, name
        assert field.description, f"{name} has no one-line doc"
        assert name in (cls.__doc__ or ""), f"{name} is not in {cls.__name__}'s docstring"
    assert "lm" in params  # the one LM name every algorithm accepts


@pytest.mark.parametrize(
    ("cls", "model"), [(GEPA, GEPASettings), (MIPRO, MIPROSettings), (OPRO, OPROSettings)]
)
def test_the_args_are_the_settings_models_field_docs_once(cls: type[Any], model: type[Any]) -> None:
    """The class docstring's ``Args:`` are made from the settings model: no hand-kept copy of
    the shared RunSettings docs to drift from them."""
    doc = inspect.getdoc(cls) or ""
    assert doc.count("Args:") == 1 and doc.endswith(settings_args(model, indent=0))
    args = " ".join(doc.split("Args:")[1].split())
    for name, info in model.model_fields.items():
        assert f"{name}: {' '.join(info.description.split())}" in args, name
    assert "backend: joblib backend (None: threads), or 'dask'" in args  # RunSettings' own text


def test_the_lm_alias_and_its_errors() -> None:
    program, train, val = keyword_task()
    result = GEPA(lm=keyword_reflection_lm(), max_rollouts=60, progress=False).optimize(
        program, train, val
    )
    assert result.n_rollouts <= 60
    with pytest.raises(ConfigError, match="not both"):
        GEPA(lm="a/b", reflection_lm="a/b", max_rollouts=10)
    with pytest.raises(ConfigError, match="An LM is required"):
        MIPRO(max_rollouts=10, auto="light")


def test_settings_errors_name_the_setting_without_pydantic_noise() -> None:
    with pytest.raises(ConfigError) as info:
        GEPA(lm="a/b", max_rollouts=-3)
    message = str(info.value)
    assert message.startswith("Invalid GEPA settings: max_rollouts:") and "-3" in message
    assert "pydantic" not in message and "errors.pydantic.dev" not in message


def test_builtins_are_registered_with_their_roles() -> None:
    assert optimizer_names()[:2] == ["gepa", "mipro"]
    gepa, mipro = get_spec("gepa"), get_spec("mipro")
    assert (gepa.cls, gepa.lm_param, gepa.lm_role) == (GEPA, "reflection_lm", "reflection")
    assert (mipro.cls, mipro.lm_param, mipro.lm_role) == (MIPRO, "proposer_lm", "proposer")
    assert "reflection_template" in gepa.plan({}, budget=100, n_train=5, n_val=5, small_model=True)
    # MIPRO plans a budget-only run itself; the registry checks it and shows it in estimate()
    assert mipro.plan({}, budget=200, n_train=30, n_val=30) == {}
    estimate = mipro.estimate({}, budget=200, n_train=30, n_val=30)
    assert estimate["num_candidates"] == 4 and estimate["num_trials"] >= 1
    assert estimate["plan"] == "budget" and estimate["rollouts"] <= 200
    assert mipro.plan({"auto": "light"}, budget=200, n_train=30, n_val=30) == {"auto": "light"}
    with pytest.raises(ConfigError, match="unknown gepa setting.*merj.*Known:.*merge"):
        gepa.plan({"merj": False}, budget=100, n_train=5, n_val=5)
    with pytest.raises(ConfigError, match="Unknown optimizer 'nope'.*gepa, mipro"):
        get_spec("nope")


class Echo:
    """A user's own optimizer: returns the seed prompt after scoring it once."""

    def __init__(self, *, lm: Any, max_rollouts: int, seed: int = 0) -> None:
        self.lm, self.max_rollouts, self.seed = lm, max_rollouts, seed

    def optimize(self, program: Program, trainset: Any, valset: Any = None) -> OptimizationResult:
        data = valset or trainset
        scores = [float(program.evaluate(program.prompt, e)) for e in data]  # type: ignore[arg-type]
        return OptimizationResult(
            optimizer="echo",
            best_prompt=program.prompt,
            best_score=sum(scores) / len(scores),
            best_candidate=0,
            candidates=[],
            n_rollouts=len(scores),
            max_rollouts=self.max_rollouts,
            seed=self.seed,
            stop_reason="done",
        )


def test_a_users_own_optimizer_registers_and_builds() -> None:
    spec = OptimizerSpec(name="echo-test", cls=Echo, settings=RunSettings)
    register_optimizer(spec)
    try:
        assert get_spec("echo-test") is spec and "echo-test" in optimizer_names()
        with pytest.raises(ConfigError, match="already registered"):
            register_optimizer(spec)
        optimizer = spec.build(lm="x/y", max_rollouts=5, seed=2)
        assert isinstance(optimizer, Echo) and optimizer.seed == 2
        with pytest.raises(ConfigError, match="letters, digits"):
            register_optimizer(OptimizerSpec(name="bad name", cls=Echo, settings=RunSettings))
    finally:
        from policyopt import registry

        registry._REGISTRY.pop("echo-test", None)


def test_the_cli_lists_the_registry() -> None:
    from typer.testing import CliRunner

    from policyopt.cli import app

    result = CliRunner().invoke(app, ["optimizers"])
    assert result.exit_code == 0
    for name in optimizer_names():
        assert f"{name}: " in result.output
    assert "reflection LM: reflection_lm=" in result.output


def test_a_budget_too_small_for_one_mipro_trial_fails_in_plan_before_any_run() -> None:
    mipro = get_spec("mipro")
    with pytest.raises(ConfigError, match="a budget alone cannot run a single trial.*at least 87"):
        mipro.plan({}, budget=60, n_train=38, n_val=39)
    with pytest.raises(ConfigError, match="auto='light'.*at least 103"):
        mipro.plan({"auto": "light"}, budget=60, n_train=38, n_val=39, small_model=True)


@pytest.mark.parametrize("name", ["gepa", "mipro", "opro"])
@pytest.mark.parametrize("budget", [100, 300, 1000])
def test_every_builtin_estimates_rollouts_and_lm_calls_with_a_range(name: str, budget: int) -> None:
    spec = get_spec(name)
    est = spec.estimate({}, budget=budget, n_train=38, n_val=39, small_model=True)
    assert 0 < est["rollouts"] <= budget
    assert est.get("lm_calls_min", est["lm_calls"]) <= est["lm_calls"]
    assert est["lm_calls"] <= est.get("lm_calls_max", est["lm_calls"])
    assert est["lm_calls"] >= 1


def test_a_spec_without_an_estimator_estimates_nothing() -> None:
    spec = OptimizerSpec(name="echo-est", cls=Echo, settings=RunSettings)
    assert spec.estimate({}, budget=10, n_train=2, n_val=2) == {}


def _words_lm() -> Any:
    """Proposes the current instruction's keywords plus one its prompt names (deterministic)."""
    import hashlib
    import random
    import re

    from policyopt.testing import ScriptedLM
    from policyopt.testing.conformance import KEYWORDS

    def answer(text: str) -> str:
        if "describe what this dataset" in text:
            return "Each example needs a keyword."
        rng = random.Random(hashlib.sha256(text.encode()).hexdigest())
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        words = [w for w in KEYWORDS if current and w in current.group(1)]
        named = [w for w in KEYWORDS if w in text]
        extra = rng.choice(named) if named and rng.random() < 0.4 else rng.choice(KEYWORDS)
        return f"```\nSolve the task: {' '.join(dict.fromkeys([*words, extra][-3:]))}.\n```"

    return ScriptedLM(answer)


@pytest.mark.parametrize("name", ["gepa", "mipro", "opro"])
def test_a_run_spends_what_its_spec_estimated(name: str) -> None:
    """Rollouts within 2x of the estimate (never above its top); LM calls within 2x or inside
    the stated range (benchmarks/estimate_accuracy.py measures more budgets and the local model)."""
    from policyopt.testing.conformance import CountingEvaluate

    evaluate = CountingEvaluate()
    program, train, val = keyword_task(n_train=20, n_val=20, evaluate=evaluate)
    spec = get_spec(name)
    sizes = {"budget": 200, "n_train": 20, "n_val": 20}
    settings = {**spec.plan({}, **sizes), "stop_at_perfect": False} if name != "mipro" else {}
    est = spec.estimate(settings, **sizes)
    lm = _words_lm()
    result = spec.build(lm=lm, max_rollouts=200, progress=False, **settings).optimize(
        program, train, val
    )
    assert est["rollouts"] / 2 <= result.n_rollouts == evaluate.total
    assert result.n_rollouts <= est.get("rollouts_max", est["rollouts"]) <= 200
    calls = lm.usage.calls
    in_range = est.get("lm_calls_min", -1) <= calls <= est.get("lm_calls_max", -1)
    assert in_range or est["lm_calls"] / 2 <= calls <= 2 * est["lm_calls"], (calls, est)
