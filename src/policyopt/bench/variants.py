"""Optimizer variants by name: ``gepa[merge=false]``, and sweeps that expand into many of them.

A variant is a registered optimizer plus setting overrides, written ``name[key=value,...]``.
Values are JSON-ish scalars: ``true``/``false``/``null``, numbers, and strings (bare, or quoted
with ``"`` or ``'`` when they hold ``,`` ``]`` ``=`` or spaces). Every variant has one canonical
name (keys sorted, values written back the same way) that the harness uses in cell keys, file
names, tables and plots, so ``gepa[b=1,a=2]`` and ``gepa[a=2, b=1]`` are the same cells.

A sweep expands into the cartesian product of its axes::

    gepa:merge=true,false;minibatch_size=3,6      -> 4 variants
    gepa[candidate_selection=current_best]:merge=true,false   -> fixed settings plus an axis

or, from a TOML file (:func:`load_sweep_file`)::

    [[sweep]]
    optimizer = "gepa"             # a name, or a variant whose settings every cell shares
    [sweep.grid]
    merge = [true, false]
    minibatch_size = [3, 6]

Setting names are checked before anything runs (:func:`check_settings`) against the
optimizer's settings model when one is known (:func:`setting_names`).
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policyopt.errors import ConfigError

__all__ = [
    "HARNESS_SETTINGS",
    "SETTINGS_MODELS",
    "Variant",
    "canonical",
    "check_settings",
    "expand_sweep",
    "load_sweep_file",
    "parse_variant",
    "setting_names",
    "settings_model",
    "split_names",
]

Scalar = bool | int | float | str | None

#: harness-only optimizer name -> "module:Model" of its settings model (a pydantic model: its
#: fields are the setting names a variant may override), for optimizers that are not in
#: :mod:`policyopt.registry` (e.g. a peer that declares its settings); consulted first
SETTINGS_MODELS: dict[str, str] = {}

#: settings the harness sets for every cell itself (from --seeds, --budget, --n-jobs, --out)
HARNESS_SETTINGS = frozenset({"max_rollouts", "seed", "n_jobs", "run_dir", "progress"})

_SPECIAL = set(",[]=:;\"' \t\n")


@dataclass(frozen=True)
class Variant:
    """An optimizer name and the settings it overrides (empty: the optimizer as registered)."""

    optimizer: str
    settings: Mapping[str, Scalar] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The canonical name: ``optimizer[k=v,...]`` with sorted keys; plain when no settings."""
        if not self.settings:
            return self.optimizer
        body = ",".join(f"{k}={_render(v)}" for k, v in sorted(self.settings.items()))
        return f"{self.optimizer}[{body}]"

    @property
    def is_plain(self) -> bool:
        """True when no setting is overridden."""
        return not self.settings

    def __str__(self) -> str:
        return self.name


def _render(value: Scalar) -> str:
    """A value written so :func:`parse_variant` reads it back as the same value."""
    if isinstance(value, str):
        bare = value and not (_SPECIAL & set(value)) and _scalar(value) == value
        return value if bare else json.dumps(value)
    return json.dumps(value)


def _scalar(text: str) -> Scalar:
    """``true``/``false``/``null``, a number, a quoted string, else the text itself."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (list, dict)):
        return text
    return value  # type: ignore[no-any-return]


def _split(text: str, sep: str, spec: str) -> list[str]:
    """``text`` cut at ``sep`` outside quotes and brackets."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"Unbalanced ']' in {spec!r}: write name[key=value,...].")
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise ConfigError(f"Unterminated {quote} quote in {spec!r}: close the quoted value.")
    if depth:
        raise ConfigError(f"Unbalanced '[' in {spec!r}: close it with ']' (name[key=value,...]).")
    parts.append(text[start:])
    return parts


def _assignments(body: str, spec: str) -> dict[str, str]:
    """``k=v,k2=v2`` as raw texts by key; clear errors for empty, repeated or valueless keys."""
    out: dict[str, str] = {}
    for item in _split(body, ",", spec):
        item = item.strip()
        if not item:
            raise ConfigError(
                f"Empty setting in {spec!r}: remove the extra ',' (name[key=value,...])."
            )
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq:
            raise ConfigError(f"Setting {item!r} in {spec!r} has no value: write {item}=<value>.")
        if not key:
            raise ConfigError(f"Empty setting name in {spec!r} (at {item!r}): write key=value.")
        if not key.isidentifier():
            raise ConfigError(
                f"Setting name {key!r} in {spec!r} is not a name: use letters, digits and '_'."
            )
        if not raw:
            raise ConfigError(
                f"Setting {key!r} in {spec!r} has an empty value: give one "
                f'(quote it for an empty string: {key}="").'
            )
        if key in out:
            raise ConfigError(f"Setting {key!r} is given twice in {spec!r}: keep one.")
        out[key] = raw
    return out


def _head(spec: str) -> tuple[str, str | None]:
    """The optimizer name and the bracket body (None without brackets)."""
    text = spec.strip()
    if not text:
        raise ConfigError("An empty optimizer name: write a registered name like 'gepa'.")
    _split(text, ",", spec)  # quotes and brackets balance
    name, bracket, rest = text.partition("[")
    name = name.strip()
    if not name or set(name) & set(",[]=\"' \t\n"):
        raise ConfigError(
            f"Bad optimizer name {name!r} in {spec!r}: write name[key=value,...], "
            "e.g. gepa[merge=false]."
        )
    if not bracket:
        return name, None
    if not rest.endswith("]"):
        raise ConfigError(
            f"Text after the closing ']' in {spec!r}: the settings end the name "
            "(name[key=value,...])."
        )
    return name, rest[:-1]


def parse_variant(spec: str) -> Variant:
    """``gepa[merge=false,minibatch_size=6]`` as a :class:`Variant`; a plain name has no settings.

    >>> parse_variant("gepa[minibatch_size=6, merge=false]").name
    'gepa[merge=false,minibatch_size=6]'
    """
    name, body = _head(spec)
    if body is None or not body.strip():
        return Variant(name)
    raw = _assignments(body, spec)
    return Variant(name, {k: _scalar(v) for k, v in raw.items()})


def split_names(text: str) -> list[str]:
    """Comma-separated optimizer names and variants, cut only outside brackets and quotes:
    ``gepa,gepa[merge=false,minibatch_size=6]`` is two names."""
    return [part.strip() for part in _split(text, ",", text) if part.strip()]


def canonical(spec: str) -> str:
    """The canonical name of an optimizer or variant spec."""
    return parse_variant(spec).name


def expand_sweep(spec: str) -> list[Variant]:
    """``gepa:merge=true,false;minibatch_size=3,6`` as the 4 variants of its cartesian product.

    The part before ``:`` is an optimizer or a variant (its settings are shared by every cell);
    axes are ``;``-separated ``key=v1,v2,...``. Variants come in axis order, the last axis
    fastest.
    """
    parts = _split(spec, ":", spec)
    if len(parts) != 2 or not parts[1].strip():
        raise ConfigError(
            f"Bad sweep {spec!r}: write optimizer:key=v1,v2;key2=v3,v4 "
            "(e.g. 'gepa:merge=true,false;minibatch_size=3,6')."
        )
    base = parse_variant(parts[0])
    axes: dict[str, list[Scalar]] = {}
    for axis in _split(parts[1], ";", spec):
        axis = axis.strip()
        if not axis:
            continue
        key, eq, values = axis.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise ConfigError(
                f"Bad sweep axis {axis!r} in {spec!r}: write key=v1,v2 (axes apart by ';')."
            )
        if key in axes or key in base.settings:
            raise ConfigError(f"Setting {key!r} is swept twice in {spec!r}: keep one axis.")
        raw = [v.strip() for v in _split(values, ",", spec)]
        if any(not v for v in raw):
            raise ConfigError(f"Empty value in sweep axis {axis!r} of {spec!r}.")
        axes[key] = [_scalar(v) for v in raw]
    return _product(base, axes, spec)


def _product(base: Variant, axes: Mapping[str, list[Any]], where: str) -> list[Variant]:
    variants: list[Variant] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes.values()):
        variant = Variant(base.optimizer, {**base.settings, **dict(zip(axes, combo, strict=True))})
        if variant.name in seen:
            raise ConfigError(f"Sweep {where!r} repeats the variant {variant.name!r}.")
        seen.add(variant.name)
        variants.append(variant)
    return variants


def load_sweep_file(path: str | Path) -> list[Variant]:
    """The variants of a TOML grid: ``[[sweep]]`` tables with ``optimizer`` and ``[sweep.grid]``.

    Each grid value is a list (the axis) or one value (fixed for that sweep).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the sweep file {str(file)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The sweep file {str(file)!r} is not valid TOML: {exc}") from exc
    extra = set(data) - {"sweep"}
    sweeps = data.get("sweep")
    if extra or not isinstance(sweeps, list) or not sweeps:
        raise ConfigError(
            f"The sweep file {str(file)!r} needs [[sweep]] tables (optimizer = '...' and "
            f"[sweep.grid]) and nothing else; found {sorted(data)}."
        )
    variants: list[Variant] = []
    for i, table in enumerate(sweeps):
        where = f"{file.name} [[sweep]] #{i + 1}"
        unknown = set(table) - {"optimizer", "grid"}
        if unknown or not isinstance(table.get("optimizer"), str):
            raise ConfigError(
                f"{where}: needs optimizer = '<name>' and a [sweep.grid] table; "
                f"unknown keys: {sorted(unknown)}."
            )
        base = parse_variant(table["optimizer"])
        grid = table.get("grid", {})
        axes: dict[str, list[Any]] = {}
        fixed: dict[str, Any] = dict(base.settings)
        for key, values in grid.items():
            if key in fixed:
                raise ConfigError(f"{where}: setting {key!r} is given twice.")
            items = values if isinstance(values, list) else [values]
            if not items or any(isinstance(v, (list, dict)) for v in items):
                raise ConfigError(f"{where}: grid.{key} must be a list of scalars, got {values!r}.")
            if isinstance(values, list):
                axes[key] = items
            else:
                fixed[key] = values
        variants.extend(_product(Variant(base.optimizer, fixed), axes, where))
    return variants


def _model_names(model: Any) -> frozenset[str]:
    return frozenset(getattr(model, "model_fields", {}))


def settings_model(optimizer: str) -> Any | None:
    """The pydantic settings model of ``optimizer`` (None when the harness knows none).

    The one place that maps an optimizer name to its settings: :data:`SETTINGS_MODELS`, then
    the optimizer registry (``policyopt.registry``: gepa, mipro and users' own)."""
    target = SETTINGS_MODELS.get(optimizer)
    if target is not None:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    from policyopt.registry import get_spec, optimizer_names

    if optimizer in optimizer_names():
        return get_spec(optimizer).settings
    return None


def setting_names(optimizer: str) -> frozenset[str] | None:
    """The setting names a variant of ``optimizer`` may override; None when not known (then
    the optimizer itself rejects unknown ones when its cell runs)."""
    model = settings_model(optimizer)
    return None if model is None else _model_names(model) - HARNESS_SETTINGS


def check_settings(variants: Iterable[Variant | str]) -> None:
    """Fail before anything runs when a variant names a setting its optimizer does not have,
    one the harness sets per cell, or a value its settings model rejects."""
    for item in variants:
        variant = parse_variant(item) if isinstance(item, str) else item
        if variant.is_plain:
            continue
        reserved = sorted(set(variant.settings) & HARNESS_SETTINGS)
        if reserved:
            raise ConfigError(
                f"{variant.name!r} sets {', '.join(reserved)}, which the harness sets for every "
                "cell: use --seeds, --budget and --n-jobs instead."
            )
        model = settings_model(variant.optimizer)
        if model is None:
            continue
        known = _model_names(model) - HARNESS_SETTINGS
        unknown = sorted(set(variant.settings) - known)
        if unknown:
            raise ConfigError(
                f"Unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                f" in {variant.name!r}; {variant.optimizer}'s settings are: "
                f"{', '.join(sorted(known))}."
            )
        payload: dict[str, Any] = dict(variant.settings)
        if "max_rollouts" in _model_names(model):  # required, and set by the harness
            payload.setdefault("max_rollouts", 1)
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            # only the variant's own values: other required fields are the optimizer's business
            mine = [e for e in exc.errors() if e["loc"] and e["loc"][0] in variant.settings]
            if mine:
                detail = "; ".join(
                    f"{e['loc'][0]}: {e['msg']} (got {e['input']!r})" for e in mine[:3]
                )
                raise ConfigError(f"Bad value in {variant.name!r}: {detail}.") from exc
