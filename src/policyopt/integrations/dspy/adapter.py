"""A DSPy adapter for very small models: one user message in, plain text out.

DSPy's ChatAdapter puts the instructions in a system message and asks for ``[[ ## field ## ]]``
markers. The embedded SmolLM2-135M ignores system messages and never writes the markers, so
every call fails to parse and no instruction reaches it. :class:`PlainAdapter` writes the
instructions, the demos and the inputs as ``Field: value`` lines in one user message, and reads
the reply as the output: whole for one output field, by ``Field:`` lines for several.
"""

from __future__ import annotations

import re
from typing import Any

import dspy

__all__ = ["PlainAdapter"]


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


class PlainAdapter(dspy.Adapter):
    """Instructions, demos and inputs in one user message; the reply is the output."""

    def format(
        self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One user message: instructions, then each demo, then the inputs and the first
        output field's label to answer after."""
        parts = [str(signature.instructions).strip()]
        for demo in demos:
            lines = [f"{_label(k)}: {demo[k]}" for k in signature.input_fields if k in demo]
            lines += [f"{_label(k)}: {demo[k]}" for k in signature.output_fields if k in demo]
            parts.append("\n".join(lines))
        lines = [f"{_label(k)}: {inputs[k]}" for k in signature.input_fields if k in inputs]
        first = next(iter(signature.output_fields))
        lines.append(f"{_label(first)}:")
        parts.append("\n".join(lines))
        text = "\n\n".join(p for p in parts if p)
        return [{"role": "user", "content": text}]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """One output field: the whole reply, stripped. Several: each ``Field:`` line's value
        (the first field also takes any text before the first label)."""
        names = list(signature.output_fields)
        text = completion.strip()
        if len(names) == 1:
            return {names[0]: text}
        pattern = re.compile(
            r"^\s*(" + "|".join(re.escape(_label(n)) for n in names) + r")\s*:\s*",
            re.IGNORECASE | re.MULTILINE,
        )
        found: dict[str, str] = {}
        pieces = pattern.split(text)
        if pieces[0].strip():
            found[names[0]] = pieces[0].strip()
        by_label = {_label(n).lower(): n for n in names}
        for label, value in zip(pieces[1::2], pieces[2::2], strict=True):
            found.setdefault(by_label[label.lower()], value.strip())
        return {name: found.get(name, "") for name in names}
