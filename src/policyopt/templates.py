"""Meta-prompt templates filled in safely: only named placeholders, nothing else.

``str.format`` on a template from a job config would run whatever the template asks of its
values: ``{0}`` and ``{current[0]}`` fail the run, ``{current.__class__}`` walks attributes,
``{current:>999999999}`` allocates a gigabyte. Templates here may hold only ``{name}`` for the
names an optimizer offers (``{{`` and ``}}`` are literal braces): anything else is refused
when the settings are checked (a 422 at submit on a job server), and :func:`render_template`
only substitutes, in time linear in the template and values.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping

__all__ = ["check_template", "render_template"]

_FORMATTER = string.Formatter()


def check_template(template: str, allowed: Collection[str]) -> list[str]:
    """The placeholder names ``template`` uses, in order; :class:`ValueError` naming the first
    field that is not a plain ``{name}`` of ``allowed`` (positional, attribute, index,
    conversion or format spec) or a stray brace."""
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(
            f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        shown = (
            "{"
            + field
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if field not in allowed or conversion or spec:
            raise ValueError(
                f"may use only the placeholders {', '.join('{' + n + '}' for n in allowed)} "
                f"(no positions, attributes, indexes, conversions or format specs); got "
                f"{shown[:80]!r} (write a literal brace as {{{{ or }}}})"
            )
        names.append(field)
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced by ``values[name]`` (checked first)."""
    check_template(template, values.keys())
    parts: list[str] = []
    for literal, field, _, _ in _FORMATTER.parse(template):
        parts.append(literal)
        if field is not None:
            parts.append(str(values[field]))
    return "".join(parts)
