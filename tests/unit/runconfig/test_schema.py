"""The shared run-config schema: any registered optimizer (built-in, variant or a user's own)
with its settings checked by its settings model, the same keys on both sides, and each side
refusing the other's keys with a line saying why."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from policyopt import registry
from policyopt.errors import ConfigError
from policyopt.registry import OptimizerSpec, register_optimizer
from policyopt.remote.config import JobConfig
from policyopt.runconfig.local import LocalConfig


def job(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "algorithm": "gepa",
        "task_app": {"url": "http://127.0.0.1:8001"},
        "initial_prompt": "p",
        "train_ids": ["a", "b"],
        "budget": {"max_rollouts": 10},
    }
    data.update(changes)
    return data


def local(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "algorithm": "gepa",
        "initial_prompt": "p",
        "evaluate": "prog:evaluate",
        "data": {"train": "train.jsonl"},
        "budget": {"max_rollouts": 10},
    }
    data.update(changes)
    return data


def error(kind: Any, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        kind.from_dict(data)
    return str(info.value)


class MineSettings(BaseModel):
    """A user's optimizer settings: what the config checks its table against."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_rollouts: int
    seed: int = 0
    temperature: float = 1.0


class Mine:
    def __init__(self, *, lm: Any, max_rollouts: int, seed: int = 0, temperature: float = 1.0):
        self.settings = MineSettings(max_rollouts=max_rollouts, seed=seed, temperature=temperature)

    def optimize(self, program: Any, trainset: Any, valset: Any = None) -> Any:
        raise NotImplementedError


@pytest.fixture
def mine(monkeypatch: pytest.MonkeyPatch) -> OptimizerSpec:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after
    return register_optimizer(OptimizerSpec(name="mine", cls=Mine, settings=MineSettings))


@pytest.mark.parametrize("kind,base", [(JobConfig, job), (LocalConfig, local)])
def test_a_registered_optimizer_and_its_settings(kind: Any, base: Any, mine: OptimizerSpec) -> None:
    config = kind.from_dict(base(algorithm="mine", mine={"temperature": 0.5}))
    assert config.algorithm == "mine"
    assert config.optimizer_kwargs() == {"temperature": 0.5, "seed": 0, "max_rollouts": 10}
    text = error(kind, base(algorithm="mine", mine={"temperture": 0.5}))
    assert "mine.temperture: unknown key; did you mean temperature?" in text
    text = error(kind, base(algorithm="mine", mine={"top_k": 3}))
    assert "mine.top_k: unknown key; valid keys: temperature" in text
    text = error(kind, base(algorithm="mine", mine={"temperature": "hot"}))
    assert "mine.temperature: Input should be a valid number" in text
    text = error(kind, base(algorithm="mine", budget={"max_rollouts": 10, "max_cost_usd": 1.0}))
    assert "budget.max_cost_usd: mine has no max_cost_usd setting" in text
    assert kind.from_dict(config.to_dict()) == config
    assert kind.from_toml(config.to_toml()) == config


@pytest.mark.parametrize("kind,base", [(JobConfig, job), (LocalConfig, local)])
def test_opro_and_variants_by_name(kind: Any, base: Any) -> None:
    opro = kind.from_dict(base(algorithm="opro", opro={"proposals_per_step": 2}))
    assert opro.section("opro") == {"proposals_per_step": 2}
    variant = kind.from_dict(base(algorithm="gepa[merge=false, minibatch_size=4]"))
    assert variant.algorithm == "gepa"
    assert variant.gepa == {"merge": False, "minibatch_size": 4}
    assert kind.from_toml(variant.to_toml()) == variant
    clash = error(kind, base(algorithm="gepa[merge=false]", gepa={"merge": True}))
    assert "algorithm: gepa[merge=false] sets merge, and so does [..gepa]; give one" in clash
    assert "gepa.merj: unknown key; did you mean merge?" in error(
        kind, base(algorithm="gepa[merj=false]")
    )
    assert "overrides['opro.proposals_per_stepp']" in error(
        kind, base(overrides={"opro.proposals_per_stepp": 1})
    )


@pytest.mark.parametrize(
    "key,value",
    [
        ("program", "prog:program"),
        ("evaluate", "prog:evaluate"),
        ("data", {"train": "train.jsonl"}),
        ("run_dir", "/tmp/x"),
        ("tracking", {"mlflow": {"uri": "file:/tmp/m"}}),
        ("models", {"task": "local"}),
        ("plugins", ["os"]),  # a job server never imports what a job names
    ],
)
def test_a_job_refuses_local_only_keys(key: str, value: Any) -> None:
    text = error(JobConfig, job(**{key: value}))
    assert "is local-only (policyopt optimize): a job config cannot name Python modules" in text
    assert "policyopt task-app" in text


@pytest.mark.parametrize(
    "key,value",
    [
        ("task_app", {"url": "http://127.0.0.1:1"}),
        ("train_ids", ["a"]),
        ("ids", {"train": ["a"]}),
        ("models", {"policy": {"model": "x"}}),
    ],
)
def test_a_local_run_refuses_remote_only_keys(key: str, value: Any) -> None:
    assert "is for remote jobs (policyopt job submit)" in error(LocalConfig, local(**{key: value}))


def test_shared_keys_mean_the_same_on_both_sides() -> None:
    shared = {
        "algorithm": "gepa",
        "initial_prompt": "p",
        "seed": 3,
        "budget": {"max_rollouts": 10, "max_time_s": 60.0},
        "models": {"reflection": "openai/gpt-4o-mini", "reflection_kwargs": {"temperature": 1}},
        "gepa": {"minibatch_size": 4},
        "overrides": {"gepa.minibatch_size": 5},
    }
    remote = JobConfig.from_dict({**job(), **shared})
    here = LocalConfig.from_dict({**local(), **shared})
    assert remote.optimizer_kwargs() == here.optimizer_kwargs()
    assert remote.models.reflection == here.models.reflection
    assert remote.budget == here.budget


def test_local_config_checks() -> None:
    no_prompt = {k: v for k, v in local().items() if k != "initial_prompt"}
    assert LocalConfig.from_dict({**no_prompt, "prompt": "q"}).initial_prompt == "q"
    assert "initial_prompt: required with evaluate" in error(LocalConfig, no_prompt)
    assert "evaluate: must be 'module:attribute'" in error(LocalConfig, local(evaluate="prog"))
    assert "data.train: give exactly one of path, hf or load" in error(
        LocalConfig, local(data={"train": {"path": "a.jsonl", "hf": "x"}})
    )
    assert "budget.max_rollouts: required" in error(LocalConfig, local(budget={}))
    assert "gepa.progress: the command shows progress" in error(
        LocalConfig, local(gepa={"progress": False})
    )
    source = LocalConfig.from_dict(
        local(data={"train": "hf:squad", "val": "mod:load", "test": "t.csv"})
    ).data
    assert not isinstance(source, str)
    assert source.train.hf == "squad" and source.val is not None and source.val.load == "mod:load"
    assert source.test is not None and source.test.path == "t.csv"


@pytest.mark.parametrize(
    "text,value",
    [
        ("a.b=5", 5),
        ("a.b=true", True),
        ('a.b="x y"', "x y"),
        ("a.b={k = 1}", {"k": 1}),
        ('a.b={"k": 1}', {"k": 1}),
        ("a.b=null", None),
        ("a.b=openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        ("a.b=2024-01-01", "2024-01-01"),
    ],
)
def test_set_values_read_as_toml_then_json_then_text(text: str, value: Any) -> None:
    from policyopt.runconfig.schema import parse_override

    assert parse_override(text) == ("a.b", value)
