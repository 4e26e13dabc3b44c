"""What every pluggable strategy shares: how a run records it and whether it can resume.

A strategy setting (GEPA's candidate selection, MIPRO's sampler, ...) holds a built-in's name or
the user's own object. The run's settings record an object as ``custom:<module>.<class>`` plus
its ``config()`` when it has one; an object with ``resumable = False`` says that replaying the
run would not repeat its choices.
"""

from __future__ import annotations

from typing import Any

from policyopt.errors import ConfigError

__all__ = ["describe_strategy", "resumable"]


def describe_strategy(value: Any) -> Any:
    """How the settings record a strategy: its name, or ``custom:module.Class`` (+ config)."""
    if isinstance(value, str):
        return value
    cls = value if isinstance(value, type) else type(value)
    name = f"custom:{cls.__module__}.{cls.__qualname__}"
    config = getattr(value, "config", None)
    if callable(config) and not isinstance(value, type):
        try:
            return {"strategy": name, "config": config()}
        except Exception as exc:  # a broken config() must not hide the strategy's name
            raise ConfigError(f"{name}.config() failed: {exc}") from exc
    return name


def resumable(value: Any) -> bool:
    """False when a custom strategy declares that a replay would not repeat its choices."""
    return isinstance(value, str) or bool(getattr(value, "resumable", True))
