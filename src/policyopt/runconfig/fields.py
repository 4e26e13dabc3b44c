"""The values a run config checks on the way in: example ids (lists or ranges) and the seed prompt.

Each is an annotated type for pydantic fields (:data:`Ids`, :data:`SeedPrompt`) with its JSON
schema, plus the plain check behind it. Split from :mod:`policyopt.runconfig.schema`, which
re-exports every name.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from policyopt.errors import ConfigError, describe
from policyopt.prompts import MESSAGE_ROLES, Message, validate_prompt

__all__ = [
    "IDS_SCHEMA",
    "ID_LIMIT",
    "PROMPT_SCHEMA",
    "Ids",
    "SeedPrompt",
    "check_seed_prompt",
    "resolve_ids",
]


# ------------------------------------------------------------------------------------ ids
#: the most ids a range may expand to; a job server lowers it to its policy's ``max_ids``
#: while it checks a submitted config, so a huge range is refused before it is expanded
ID_LIMIT: ContextVar[int] = ContextVar("policyopt_id_limit", default=1_000_000)


def resolve_ids(value: object, *, name: str = "ids") -> list[str]:
    """Example ids from a list of str/int or a ``{start, end[, step]}`` range (end exclusive).

    Ints become strings (``{start = 0, end = 3}`` is ``["0", "1", "2"]``); duplicates are an
    error, so that a split never scores the same example twice by accident.
    """
    if isinstance(value, Mapping):
        unknown = set(value) - {"start", "end", "step"}
        if unknown:
            raise ValueError(f"a range takes start, end and step; unknown key(s) {sorted(unknown)}")
        if "end" not in value:
            raise ValueError("a range needs 'end' (exclusive), e.g. {start = 0, end = 50}")
        bounds = {k: value.get(k, d) for k, d in (("start", 0), ("end", None), ("step", 1))}
        for key, bound in bounds.items():
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise ValueError(f"range {key} must be an integer; got {describe(bound)}")
        start, end, step = bounds["start"], bounds["end"], bounds["step"]
        if step < 1:
            raise ValueError(f"range step must be >= 1; got {step}")
        if end <= start:
            raise ValueError(
                f"range end ({end}) must be greater than start ({start}): end is "
                "exclusive, {start = 0, end = 50} is ids 0..49"
            )
        # counted by arithmetic, never expanded (len(range) overflows past 2**63)
        count = (end - start + step - 1) // step
        limit = ID_LIMIT.get()
        if count > limit:
            raise ValueError(f"a range of {count} ids; the limit is {limit:,} ids per split")
        return [str(i) for i in range(start, end, step)]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(
            f"ids must be a list of strings/ints or a range {{start = 0, end = 50}}; "
            f"got {describe(value)}"
        )
    ids: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(f"id {index} must be a string or an integer; got {describe(item)}")
        ident = str(item)
        if not ident:
            raise ValueError(f"id {index} is an empty string")
        if ident in seen:
            raise ValueError(f"duplicate id {ident!r}")
        seen.add(ident)
        ids.append(ident)
    return ids


_ID_RANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "start": {"type": "integer", "default": 0},
        "end": {"type": "integer", "description": "exclusive"},
        "step": {"type": "integer", "minimum": 1, "default": 1},
    },
    "required": ["end"],
    "additionalProperties": False,
}
IDS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": ["string", "integer"]}, "uniqueItems": True},
        _ID_RANGE_SCHEMA,
    ],
    "description": "example ids: a list of strings/ints (ints become strings) or a range "
    "{start, end, step} with end exclusive",
}

#: a split's ids after validation; accepts a list or a range on input
Ids = Annotated[list[str], BeforeValidator(lambda v: resolve_ids(v)), WithJsonSchema(IDS_SCHEMA)]


# ------------------------------------------------------------------------- seed prompt
def check_seed_prompt(value: object) -> str | dict[str, str] | list[Message]:
    """``initial_prompt`` checked by the library's own prompt validation (so a config takes
    exactly the prompts a ``Program`` takes): a non-empty str, a table of named str components,
    or a list of chat messages. A bad one is a ``ValueError`` with the library's message, which
    the schema reports under the key ``initial_prompt``."""
    if isinstance(value, str) and not value:
        raise ValueError(
            "the seed prompt is empty; give its text, a table of named texts, or a list of "
            "chat messages {role, content}"
        )
    try:
        return validate_prompt(value, name="initial_prompt")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": {"enum": list(MESSAGE_ROLES)},
        "content": {"type": "string", "description": "the text the optimizer rewrites"},
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "the component's name (default: the role, or role_N when repeated)",
        },
    },
    "required": ["role", "content"],
    "additionalProperties": False,
}
PROMPT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
        {"type": "array", "items": _MESSAGE_SCHEMA, "minItems": 1},
    ],
    "description": "the seed prompt: a text, a table of named texts (each a component), or a "
    "list of chat messages {role, content[, name]} whose contents are the components",
}

#: the seed prompt after validation; its JSON schema is :data:`PROMPT_SCHEMA`
SeedPrompt = Annotated[
    str | dict[str, str] | list[dict[str, str]],
    BeforeValidator(check_seed_prompt),
    WithJsonSchema(PROMPT_SCHEMA),
]
