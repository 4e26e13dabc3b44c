"""The one run-config schema: what a local run (``policyopt optimize``) and a remote job share.

A config file holds one ``[policy_optimization]`` table (the older ``[prompt_learning]`` spelling
means the same). Both kinds read the same keys the same way: ``algorithm`` (any registered
optimizer, or a variant such as ``gepa[merge=false]``), ``initial_prompt``, ``seed``, ``budget``,
``models.reflection``/``api_base``/``reflection_kwargs``, ``overrides`` (dotted keys applied
before validation) and one settings table per optimizer, named after it (``[...gepa]``,
``[...opro]``, a user's ``[...mine]``), checked against that optimizer's settings model from
:mod:`policyopt.registry`. :class:`RunConfigBase` holds them; ``remote.config.JobConfig`` and
:class:`~policyopt.runconfig.local.LocalConfig` add what only their side has, and each refuses
the other side's keys with a line saying why. Every unknown key is an error naming its dotted
path with a did-you-mean.

``initial_prompt`` takes the prompt shapes the library takes (:mod:`policyopt.prompts`), checked
by the library's own validation: a str; a table of named str components
(``initial_prompt = {instructions = "...", format = "..."}`` or an
``[policy_optimization.initial_prompt]`` table); or chat messages, written inline
(``initial_prompt = [{role = "system", content = "..."}, {role = "user", content = "..."}]``) or
as an array of tables (one ``[[policy_optimization.initial_prompt]]`` with ``role`` and
``content``, and an optional ``name``, per message). A JSON job config gives the same as JSON.

The checked values (ids, the seed prompt) are in :mod:`policyopt.runconfig.fields` and TOML in
and out in :mod:`policyopt.runconfig.tomlio`; this module re-exports their names.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from policyopt.errors import ConfigError, describe
from policyopt.runconfig.fields import (
    ID_LIMIT,
    IDS_SCHEMA,
    PROMPT_SCHEMA,
    Ids,
    SeedPrompt,
    check_seed_prompt,
    resolve_ids,
)
from policyopt.runconfig.tomlio import parse_override, read_toml, to_toml

__all__ = [
    "BUDGET_KEYS",
    "IDS_SCHEMA",
    "ID_LIMIT",
    "PROMPT_SCHEMA",
    "SECTION_NAMES",
    "Budget",
    "Ids",
    "Models",
    "RunConfigBase",
    "SeedPrompt",
    "check_seed_prompt",
    "parse_override",
    "read_toml",
    "resolve_ids",
    "settings_schema",
]

#: the top table of a TOML config file; the first is written, both are read
SECTION_NAMES = ("policy_optimization", "prompt_learning")
#: optimizer settings that the budget table holds
BUDGET_KEYS = ("max_rollouts", "max_cost_usd", "max_time_s")

_C = TypeVar("_C", bound="RunConfigBase")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problems(ValueError):
    """Several (dotted path, message) problems found by a validator; expanded when reported."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
        self.problems = problems


# ------------------------------------------------------------------------------- sections
class Budget(_Strict):
    """Hard limits of the search: rollouts (required), optimizer LM dollars, wall time."""

    max_rollouts: int | None = Field(
        default=None, ge=1, strict=True, description="hard budget of rollouts (required)"
    )
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="cap on the optimizer's LM cost"
    )
    max_time_s: float | None = Field(
        default=None, gt=0, description="wall-clock limit of the search"
    )


class Models(_Strict):
    """The optimizer's own LM (reflection / proposal / meta), the same on both sides."""

    reflection: str = Field(
        default="local",
        description="'local' (the embedded model) or a litellm model name for the optimizer's "
        "LM: reflection (GEPA), instruction proposal (MIPRO), meta-prompt (OPRO)",
    )
    api_base: str | None = Field(
        default=None, description="OpenAI-compatible base URL for the optimizer's LM"
    )
    reflection_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra LM settings (temperature, max_tokens, ...)"
    )


# ------------------------------------------------------------------------------ the run
class RunConfigBase(_Strict):
    """What every run config has: the optimizer and its settings, the seed prompt, the budget,
    the optimizer's LM, overrides and the seed. Subclasses add their side's keys."""

    #: what the error header calls a config of this kind
    KIND: ClassVar[str] = "run config"
    #: optimizer settings this kind sets elsewhere -> where (refused in a settings table)
    RESERVED: ClassVar[dict[str, str]] = {}
    #: keys of the other kind -> why they are refused here
    FOREIGN: ClassVar[dict[str, str]] = {}
    #: accepted flat spellings -> (table, key) or (key,) where they go
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: tables whose keys are free-form (not checked by overrides)
    FREE_FORM: ClassVar[frozenset[str]] = frozenset({"reflection_kwargs"})

    algorithm: str = Field(
        description="a registered optimizer (gepa, mipro, opro, or one registered with "
        "policyopt.registry.register_optimizer), or a variant such as gepa[merge=false]"
    )
    initial_prompt: SeedPrompt | None = Field(
        default=None,
        description="the seed prompt: a text, named texts, or chat messages {role, content}",
    )
    sections: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="optimizer settings tables by optimizer name (written flat: [..gepa])",
    )
    budget: Budget = Field(default_factory=lambda: Budget())
    models: Models = Field(default_factory=lambda: Models())
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted keys applied before validation, e.g. {'gepa.minibatch_size': 5}",
    )
    seed: int = Field(default=0, strict=True, description="the optimizer's random seed")

    # ------------------------------------------------------------------ validation
    @model_validator(mode="before")
    @classmethod
    def _normalize_input(cls, data: Any) -> Any:
        """Accept the TOML shape: aliases, foreign keys refused, overrides applied, the
        optimizer tables gathered into ``sections`` and a variant's settings folded in."""
        if not isinstance(data, Mapping):
            return data
        return cls._normalize(data)

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, value: Any) -> Any:
        names = _optimizer_names()
        if isinstance(value, str):
            text = value.strip()
            for candidate in (text, text.lower()):
                if candidate in names:
                    return candidate
        raise ValueError(
            f"unknown algorithm {value!r}; valid algorithms: {', '.join(names)} (a variant "
            "is written gepa[merge=false]; register your own with "
            "policyopt.registry.register_optimizer)"
        )

    @model_validator(mode="after")
    def _check_all(self) -> RunConfigBase:
        problems = self._problems()
        if self.budget.max_rollouts is None:
            problems.append(
                ("budget.max_rollouts", "required: every run has a hard rollout budget")
            )
        for name, values in self.sections.items():
            if name == self.algorithm:
                run = {"max_rollouts": 1, **self._run_settings()}  # a missing one is told above
                problems += self._check_settings(name, values, run)
            else:
                problems += self._unknown_settings(name, values)
        if self.algorithm not in self.sections:
            run = {"max_rollouts": 1, **self._run_settings()}
            problems += self._check_settings(self.algorithm, {}, run)
        if problems:
            raise Problems(problems)
        return self

    def _problems(self) -> list[tuple[str, str]]:
        """Problems only a subclass can see (hook)."""
        return []

    def _run_settings(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"seed": self.seed}
        for key in BUDGET_KEYS:
            value = getattr(self.budget, key)
            if value is not None:
                kwargs[key] = value
        return kwargs

    # ------------------------------------------------------------------------ access
    @property
    def gepa(self) -> dict[str, Any] | None:
        """The ``[..gepa]`` table as given (None when absent)."""
        return self.sections.get("gepa")

    @property
    def mipro(self) -> dict[str, Any] | None:
        """The ``[..mipro]`` table as given (None when absent)."""
        return self.sections.get("mipro")

    def section(self, name: str) -> dict[str, Any] | None:
        """The settings table of optimizer ``name`` as given (None when absent)."""
        return self.sections.get(name)

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer: its table's settings, the budget and the seed
        (the caller adds the LM, ``run_dir`` and ``listeners``)."""
        kwargs = dict(self.sections.get(self.algorithm) or {})
        kwargs.update(self._run_settings())
        return kwargs

    # -------------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """A config from a dict shaped like the TOML file (wrapped in ``policy_optimization`` /
        ``prompt_learning``) or like its table; errors are :class:`ConfigError` with paths."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"A {cls.KIND} must be a mapping; got {describe(data)}.")
        table, prefix = _unwrap(data)
        try:
            return cls.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(cls._format_errors(exc, prefix)) from None

    @classmethod
    def from_toml(cls: type[_C], path_or_text: str | Path) -> _C:
        """A config from a TOML file (a :class:`~pathlib.Path`, or a str naming an existing
        file) or from TOML text."""
        return cls.from_dict(read_toml(path_or_text, kind=cls.KIND))

    # ------------------------------------------------------------------------ outputs
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the table's contents (optimizer tables flat, by name);
        ``from_dict`` gives it back."""
        data = self.model_dump(mode="json")
        sections = data.pop("sections")
        if data.get("initial_prompt") is None:
            data.pop("initial_prompt", None)
        data.update(sections)
        return data

    def to_toml(self) -> str:
        """The config as a TOML file with one ``[policy_optimization]`` table."""
        return to_toml({SECTION_NAMES[0]: _drop_none(self.to_dict())})

    # ================================================================ internals
    @classmethod
    def _normalize(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(data))
        problems = [(key, why) for key, why in cls.FOREIGN.items() if _has_path(out, key)]
        if problems:
            raise Problems(problems)
        cls._fold_aliases(out)
        overrides = out.get("overrides") or {}
        if isinstance(overrides, Mapping):
            for key, value in overrides.items():
                cls._apply_override(out, str(key), copy.deepcopy(value))
        cls._spread(out)
        cls._gather_sections(out)
        return out

    @classmethod
    def _fold_aliases(cls, out: dict[str, Any]) -> None:
        for alias, target in cls.ALIASES.items():
            if alias not in out:
                continue
            value = out.pop(alias)
            node = out
            for part in target[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise Problems([(part, f"must be a table; got {describe(node)}")])
            key = target[-1]
            if key in node and node[key] != value:
                raise Problems([(alias, f"conflicts with {'.'.join(target)}; give one")])
            node[key] = value

    @classmethod
    def _spread(cls, out: dict[str, Any]) -> None:
        """Reshape alternative spellings (hook; the job config spreads its ``ids`` table)."""

    @classmethod
    def _gather_sections(cls, out: dict[str, Any]) -> None:
        if "sections" in out:
            raise Problems(
                [("sections", "write each optimizer's table by its name, e.g. [..gepa]")]
            )
        names = _optimizer_names()
        sections: dict[str, Any] = {}
        for key in [k for k in out if k not in cls.model_fields and k in names]:
            value = out.pop(key)
            if not isinstance(value, Mapping):
                raise Problems([(key, f"must be a table of {key} settings; got {describe(value)}")])
            sections[key] = dict(value)
        algorithm = out.get("algorithm")
        if isinstance(algorithm, str) and "[" in algorithm:
            from policyopt.bench.variants import parse_variant

            try:
                variant = parse_variant(algorithm)
            except ConfigError as exc:
                raise Problems([("algorithm", str(exc))]) from None
            out["algorithm"] = name = variant.optimizer
            if name in names:
                table = sections.setdefault(name, {})
                for key, value in variant.settings.items():
                    if key in table and table[key] != value:
                        raise Problems(
                            [
                                (
                                    "algorithm",
                                    f"{algorithm} sets {key}, and so does [..{name}]; give one",
                                )
                            ]
                        )
                    table[key] = value
        out["sections"] = sections

    @classmethod
    def _apply_override(cls, out: dict[str, Any], dotted: str, value: Any) -> None:
        """Set one dotted key; a key the schema does not have is an error naming it."""
        parts = dotted.split(".")
        if parts[0] in SECTION_NAMES:
            parts = parts[1:]
        where = f"overrides[{dotted!r}]"
        if not parts or not all(parts):
            raise Problems([(where, "is not a dotted key such as 'gepa.minibatch_size'")])
        if parts[0] in cls.ALIASES and len(parts) == 1:
            parts = list(cls.ALIASES[parts[0]])
        if parts[0] == "overrides":
            raise Problems([(where, "overrides cannot override overrides")])
        foreign = cls.FOREIGN.get(parts[0]) or cls.FOREIGN.get(".".join(parts[:2]))
        if foreign:
            raise Problems([(where, foreign)])
        cls._prepare_override(out, parts, where)
        cls._check_path(parts, where)
        node = out
        for index, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise Problems(
                    [(where, f"{'.'.join(parts[: index + 1])} is {describe(child)}, not a table")]
                )
            node = child
        node[parts[-1]] = value

    @classmethod
    def _prepare_override(cls, out: dict[str, Any], parts: list[str], where: str) -> None:
        """Hook run before an override is set (the job config drops an id spelling)."""

    @classmethod
    def _check_path(cls, parts: list[str], where: str) -> None:
        """Raise unless ``parts`` names a settable key of the schema."""
        if parts[0] not in cls.model_fields and parts[0] in _optimizer_names():
            if len(parts) != 2:
                raise Problems([(where, f"name one {parts[0]} setting, e.g. {parts[0]}.seed")])
            problems = cls._unknown_settings(parts[0], {parts[1]: None})
            if problems:
                raise Problems([(where, f"{problems[0][0]}: {problems[0][1]}")])
            return
        model: type[BaseModel] = cls
        for depth, part in enumerate(parts):
            fields = model.model_fields
            if part not in fields or part == "sections":
                valid = cls._root_keys() if model is cls else list(fields)
                raise Problems(
                    [(where, f"{'.'.join(parts[: depth + 1])}: " + unknown_key(part, valid))]
                )
            rest = parts[depth + 1 :]
            sub = _model_of(fields[part].annotation)
            if sub is not None:
                if not rest:
                    return
                model = sub
                continue
            if part in cls.FREE_FORM:
                return
            if rest:
                raise Problems([(where, f"{'.'.join(parts[: depth + 1])} is not a table")])
            return

    @classmethod
    def _root_keys(cls) -> list[str]:
        names = [n for n in cls.model_fields if n != "sections"]
        return [*names, *cls.ALIASES, *_optimizer_names()]

    @classmethod
    def _allowed_settings(cls, name: str) -> list[str]:
        return [k for k in _spec(name).setting_names() if k not in cls.RESERVED]

    @classmethod
    def _unknown_settings(cls, name: str, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        allowed = cls._allowed_settings(name)
        for key in values:
            if key in cls.RESERVED:
                problems.append((f"{name}.{key}", cls.RESERVED[key]))
            elif key not in allowed:
                problems.append((f"{name}.{key}", unknown_key(str(key), allowed)))
        return problems

    @classmethod
    def _check_settings(
        cls, name: str, values: Mapping[str, Any], run: Mapping[str, Any]
    ) -> list[tuple[str, str]]:
        """Validate a table against the optimizer's settings model; problems with their paths."""
        problems = cls._unknown_settings(name, values)
        if problems:
            return problems
        fields = set(_spec(name).setting_names())
        for key in BUDGET_KEYS[1:]:
            if key in run and key not in fields:
                problems.append((f"budget.{key}", f"{name} has no {key} setting; remove it"))
        if problems:
            return problems
        payload = {**values, **{k: v for k, v in run.items() if k in fields}}
        try:
            _spec(name).settings.model_validate(payload)
        except ValidationError as exc:
            for error in exc.errors():
                loc = [str(p) for p in error["loc"]]
                if loc and loc[0] in BUDGET_KEYS:
                    path = "budget." + ".".join(loc)
                elif loc and loc[0] == "seed":
                    path = ".".join(loc)
                else:
                    path = ".".join([name, *loc])
                problems.append((path, error_message(error)))
        return problems

    @classmethod
    def _fields_at(cls, path: list[str]) -> list[str] | None:
        """Key names of the table at ``path`` (for did-you-mean hints)."""
        model: type[BaseModel] = cls
        for part in path:
            field = model.model_fields.get(part)
            sub = None if field is None else _model_of(field.annotation)
            if sub is None:
                return None
            model = sub
        return cls._root_keys() if model is cls else list(model.model_fields)

    @classmethod
    def _format_errors(cls, exc: ValidationError, prefix: str) -> str:
        """pydantic's errors as ``Invalid <kind>:`` and one ``dotted.path: message`` per line."""
        lines: list[str] = []
        for error in exc.errors():
            loc = [str(p) for p in error["loc"]]
            found = error.get("ctx", {}).get("error")
            if isinstance(found, Problems):
                lines += [f"{prefix}{path}: {msg}" for path, msg in found.problems]
                continue
            if error["type"] == "extra_forbidden" and loc:
                fields = cls._fields_at(loc[:-1])
                msg = unknown_key(loc[-1], fields) if fields else "unknown key"
            elif error["type"] == "missing":
                msg = "required key is missing"
            else:
                msg = error_message(error)
            path = ".".join(loc) if loc else "(config)"
            lines.append(f"{prefix}{path}: {msg}")
        return f"Invalid {cls.KIND}:\n  " + "\n  ".join(dict.fromkeys(lines))


def settings_schema(name: str, reserved: Mapping[str, str]) -> dict[str, Any]:
    """The JSON schema of optimizer ``name``'s settings table (reserved keys left out)."""
    schema = _spec(name).settings.model_json_schema(mode="validation")
    for key in reserved:
        schema.get("properties", {}).pop(key, None)
    schema.pop("required", None)
    schema["additionalProperties"] = False
    schema["description"] = f"{name} settings ({_spec(name).settings.__name__})"
    schema.pop("title", None)
    return schema


def unknown_key(key: str, valid: Any) -> str:
    """'unknown key' with a did-you-mean, or the valid keys."""
    names = sorted(str(v) for v in valid)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(names)}"
    return f"unknown key; {hint}"


def error_message(error: Mapping[str, Any]) -> str:
    """One pydantic error as a readable message (with the offending value)."""
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("value_error", "assertion_error"):
        msg = str(error.get("ctx", {}).get("error", error.get("msg", "")))
    else:
        msg = str(error.get("msg", ""))
    if kind not in ("missing", "value_error", "assertion_error") and "input" in error:
        value = error["input"]
        if not isinstance(value, (dict, list)):
            msg += f" (got {describe(value, 40)})"
    return msg


# ============================================================================== helpers
def _optimizer_names() -> list[str]:
    from policyopt.registry import optimizer_names

    return optimizer_names()


def _spec(name: str) -> Any:
    from policyopt.registry import get_spec

    return get_spec(name)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also inside ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is Annotated:
        return _model_of(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _model_of(a) is not None]
        if len(models) == 1:
            return _model_of(models[0])
    return None


def _has_path(data: Mapping[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _unwrap(data: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The run table of a file-shaped dict, and the prefix its errors are reported with."""
    present = [name for name in SECTION_NAMES if name in data]
    if len(present) == 2:
        raise ConfigError(
            "The config has both [policy_optimization] and [prompt_learning]; keep one "
            "(they mean the same)."
        )
    for key, value in data.items():
        close = difflib.get_close_matches(str(key), SECTION_NAMES, n=1, cutoff=0.75)
        if isinstance(value, Mapping) and close and key not in SECTION_NAMES:
            raise ConfigError(f"[{key}] is not a table policyopt reads; did you mean [{close[0]}]?")
    if not present:
        return dict(data), ""
    name = present[0]
    extra = sorted(set(data) - {name})
    if extra:
        raise ConfigError(
            f"Unknown top-level key(s) {extra}: everything goes inside the [{name}] table."
        )
    table = data[name]
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{name}] must be a table; got {describe(table)}.")
    return dict(table), name + "."


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
