"""Optimizers by name: each algorithm declared once, looked up by the CLI, the harness, the job
config and the job server.

An :class:`OptimizerSpec` says everything those callers need that the optimizer class alone does
not: its settings model, the keyword of its LM and that LM's role, what it changes for a tiny
model such as the embedded SmolLM2, and how it fits its plan to a rollout budget. Built-in
algorithms live in their own folders and are listed in :data:`BUILTIN` as ``"module:SPEC"``
(imported on first use); ``register_optimizer`` adds a user's own::

    register_optimizer(OptimizerSpec(name="mine", cls=MyOptimizer, settings=MySettings))

after which ``policyopt bench --optimizers mine`` and a job config with ``algorithm = "mine"``
find it.
"""

from __future__ import annotations

import importlib
import textwrap
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from policyopt.errors import ConfigError, describe
from policyopt.ledger import with_lm_cap
from policyopt.protocol import Optimizer

__all__ = [
    "BUILTIN",
    "OptimizerSpec",
    "get_spec",
    "optimizer_names",
    "register_optimizer",
    "settings_args",
    "with_settings_args",
]

_C = TypeVar("_C", bound=type)


def settings_args(model: type[BaseModel], *, indent: int = 4) -> str:
    """An ``Args:`` block (Google style) of every field of ``model``, from the fields'
    descriptions: an optimizer's settings (its own and the shared
    :class:`~policyopt.runtime.RunSettings`) are documented once, on its settings model."""
    lines = [" " * indent + "Args:"]
    for name, info in model.model_fields.items():
        lines += textwrap.wrap(
            f"{name}: {info.description or ''}",
            width=indent + 96,
            initial_indent=" " * (indent + 4),
            subsequent_indent=" " * (indent + 8),
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def with_settings_args(model: type[BaseModel]) -> Callable[[_C], _C]:
    """A class decorator: the class docstring gets the ``Args:`` block of ``model``'s settings
    (:func:`settings_args`) at its end, so that the class does not repeat them by hand."""

    def decorate(cls: _C) -> _C:
        cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n{settings_args(model)}\n"
        cls.__settings_args__ = True  # type: ignore[attr-defined]  # the docs site reads it
        return cls

    return decorate


#: A budget fit: ``(settings, budget, n_train, n_val) -> settings`` with the plan filled in.
BudgetFit = Callable[[dict[str, Any], int, int, int], dict[str, Any]]
#: An up-front estimate: ``(planned settings, budget, n_train, n_val) -> {what: how many}``.
#: Every built-in's has ``rollouts`` and ``lm_calls`` (its optimizer LM's calls), and
#: ``lm_calls_min``/``lm_calls_max`` where the forecast is a range; ``assumed_*`` keys name the
#: guesses a forecast rests on.
Estimator = Callable[[dict[str, Any], int, int, int], dict[str, Any]]


@dataclass(frozen=True)
class OptimizerSpec:
    """One algorithm, declared once.

    ``cls(**{lm_param: lm}, max_rollouts=..., **settings)`` builds it; ``settings`` is its
    pydantic settings model (the one place its settings are validated). ``lm_role`` names what
    the LM does (``reflection``, ``proposer``, ``meta``): it labels usage and CLI output.
    ``small_model_settings`` and ``small_model_lm`` (LM keyword overrides) are what a tiny
    model needs; ``fit_to_budget`` fills in a plan (e.g. trials) from the budget and data sizes
    (and raises when the budget cannot run it); ``estimator`` forecasts what the plan spends.
    ``artifact_settings`` are its defaults when the candidate is any text artifact (code, a
    config: :func:`policyopt.optimize_anything`); ``single_task`` its settings for a search with
    no dataset (one problem, the candidate is the solution), or None when it cannot do one.
    """

    name: str
    cls: type[Any]
    settings: type[BaseModel]
    lm_param: str = "lm"
    lm_role: str = "optimizer"
    description: str = ""
    small_model_settings: Mapping[str, Any] = field(default_factory=dict)
    small_model_lm: Mapping[str, Any] = field(default_factory=dict)
    fit_to_budget: BudgetFit | None = None
    estimator: Estimator | None = None
    artifact_settings: Mapping[str, Any] = field(default_factory=dict)
    single_task: Mapping[str, Any] | None = field(default_factory=dict)

    def setting_names(self) -> list[str]:
        """Every setting the algorithm accepts (besides its LM and listeners)."""
        return list(self.settings.model_fields)

    def check_settings(self, settings: Mapping[str, Any], *, where: str = "") -> None:
        """Raise :class:`ConfigError` naming any unknown setting and the known ones."""
        unknown = sorted(set(settings) - set(self.setting_names()))
        if unknown:
            raise ConfigError(
                f"{where or self.name}: unknown {self.name} setting(s) {', '.join(unknown)}. "
                f"Known: {', '.join(sorted(self.setting_names()))}."
            )

    def plan(
        self,
        settings: Mapping[str, Any],
        *,
        budget: int,
        n_train: int,
        n_val: int,
        small_model: bool = False,
    ) -> dict[str, Any]:
        """The settings a run will use: the small-model preset, then ``settings``, then the
        budget fit for whatever the plan still leaves open."""
        merged: dict[str, Any] = dict(self.small_model_settings) if small_model else {}
        merged.update(settings)
        self.check_settings(merged)
        if self.fit_to_budget is not None:
            merged = self.fit_to_budget(merged, budget, n_train, n_val)
        return merged

    def estimate(
        self,
        settings: Mapping[str, Any],
        *,
        budget: int,
        n_train: int,
        n_val: int,
        small_model: bool = False,
    ) -> dict[str, Any]:
        """What a run with :meth:`plan`'s settings is expected to spend, before it starts
        (empty when the spec has no estimator)."""
        planned = self.plan(
            settings, budget=budget, n_train=n_train, n_val=n_val, small_model=small_model
        )
        if self.estimator is None:
            return {}
        forecast = self.estimator(planned, budget, n_train, n_val)
        return with_lm_cap(forecast, planned.get("max_lm_calls"))

    def build(
        self, *, lm: Any, max_rollouts: int, listeners: Sequence[Any] = (), **settings: Any
    ) -> Optimizer:
        """An optimizer instance with its LM, event listeners (if any) and settings."""
        self.check_settings(settings)
        extra: dict[str, Any] = {"listeners": list(listeners)} if listeners else {}
        optimizer = self.cls(**{self.lm_param: lm}, max_rollouts=max_rollouts, **extra, **settings)
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"{self.name}: {self.cls.__name__} has no optimize() method.")
        return optimizer  # type: ignore[no-any-return]


#: built-in algorithms: name -> "module:SPEC" (each declared in its own folder)
BUILTIN: dict[str, str] = {
    "gepa": "policyopt.gepa.spec:SPEC",
    "mipro": "policyopt.mipro.spec:SPEC",
    "opro": "policyopt.opro.spec:SPEC",
}

_REGISTRY: dict[str, OptimizerSpec | str] = dict(BUILTIN)
_LOCK = threading.Lock()


def register_optimizer(spec: OptimizerSpec, *, replace: bool = False) -> OptimizerSpec:
    """Add ``spec`` under ``spec.name``; a name already taken needs ``replace=True``."""
    if not isinstance(spec, OptimizerSpec):
        raise ConfigError(f"register_optimizer takes an OptimizerSpec; got {describe(spec)}.")
    if not spec.name or not spec.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"An optimizer name must be letters, digits, '-' or '_'; got {spec.name!r}."
        )
    with _LOCK:
        if spec.name in _REGISTRY and not replace:
            raise ConfigError(
                f"An optimizer named {spec.name!r} is already registered; pass replace=True."
            )
        _REGISTRY[spec.name] = spec
    return spec


def optimizer_names() -> list[str]:
    """Registered names, built-ins first."""
    return list(_REGISTRY)


def get_spec(name: str) -> OptimizerSpec:
    """The spec registered as ``name``; a clear error for an unknown name."""
    with _LOCK:
        entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(
            f"Unknown optimizer {name!r}; registered: {', '.join(optimizer_names())}."
        )
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        if not isinstance(entry, OptimizerSpec):
            raise ConfigError(f"{module}:{attr} is not an OptimizerSpec.")
        with _LOCK:
            _REGISTRY[name] = entry
    return entry
