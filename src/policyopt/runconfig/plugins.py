"""The modules a run config names under ``plugins``, imported before the config is checked, so
that a module registering the user's own optimizer (``register_optimizer``) makes its name a
valid ``algorithm``. Local runs only: a job server never imports what a job names."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError

__all__ = ["PLUGINS_HELP", "import_plugins"]

PLUGINS_HELP = "modules imported first, e.g. one that registers your own optimizer"


def import_plugins(table: Mapping[str, Any], base: Path) -> None:
    """Import ``table["plugins"]`` (module names; ``base``, the config's folder, goes first on
    ``sys.path`` as for ``evaluate``); one clear error for a bad list or a failed import."""
    names = table.get("plugins")
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(
            f'plugins: expected a list of module names, e.g. plugins = ["my_optimizer"]; '
            f"got {names!r}"
        )
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    for name in names:
        try:
            importlib.import_module(name.strip())
        except Exception as exc:
            raise ConfigError(
                f"plugins: importing {name.strip()!r} failed ({type(exc).__name__}: {exc}); "
                f"name a module next to the config file ({base}) or an installed one"
            ) from exc
