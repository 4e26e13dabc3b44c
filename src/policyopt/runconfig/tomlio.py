"""TOML in and out for run configs: read a file or text, parse a ``--set`` value, write a config.

A small writer of its own (scalars, then one table per nested dict) because the standard library
only reads TOML. Split from :mod:`policyopt.runconfig.schema`, which re-exports ``read_toml`` and
``parse_override``.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError, describe

__all__ = ["parse_override", "read_toml", "to_toml"]


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` (a ``--set`` argument, local or ``job submit``) as (dotted key, value);
    the value is read as TOML (``5``, ``true``, ``"x"``, ``[1, 2]``, ``{a = 1}``), else as JSON
    (``{"a": 1}``), else kept as the bare text (``openai/gpt-4o-mini``)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(
            f"--set {text!r} is not key.path=value; e.g. --set gepa.minibatch_size=5."
        )
    tomllib = _tomllib()
    text = raw.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
        if not isinstance(value, (datetime.date, datetime.time)):  # a date is kept as text
            return key, value
    except tomllib.TOMLDecodeError:
        pass
    try:
        return key, json.loads(text)
    except ValueError:
        return key, text


def read_toml(path_or_text: str | Path, *, kind: str = "config") -> dict[str, Any]:
    """The dict of a TOML file (a Path, or a str naming an existing file) or TOML text."""
    tomllib = _tomllib()
    text: str
    source = "TOML text"
    if isinstance(path_or_text, Path) or not any(c in path_or_text for c in "\n=["):
        from policyopt.runconfig.files import read_text

        path = Path(path_or_text)
        text, source = read_text(path, f"{kind[0].upper()}{kind[1:]} file"), str(path)
    else:
        text = path_or_text
    try:
        return dict(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None


def to_toml(data: Mapping[str, Any], path: str = "") -> str:
    """A small TOML writer for configs: scalars first, then one table per nested dict."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    out: list[str] = []
    if path and (scalars or not tables):
        out.append(f"[{path}]")
    out += [f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in scalars]
    for key, value in tables:
        sub = f"{path}.{_toml_key(str(key))}" if path else _toml_key(str(key))
        chunk = to_toml(value, sub)
        if chunk:
            out.append(("\n" if out else "") + chunk)
    return "\n".join(out)


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise ConfigError(f"Cannot write {describe(value)} as TOML.")


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib
