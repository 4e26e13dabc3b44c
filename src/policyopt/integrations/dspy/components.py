"""A DSPy module's optimizable texts as named components, and writing texts back into a copy.

Names follow DSPy's own predictor names (``module.named_predictors()``):

- ``"<predictor>.instructions"``: the signature's instructions (kind ``instructions``);
- ``"<predictor>.fields.<field>"``: an input or output field's description (kind ``fields``);
- ``"<react>.tools.<tool>"``: a ``dspy.ReAct`` tool's description (kind ``tools``). ReAct bakes
  its tools' descriptions into its ``react`` predictor's instructions when it is built, so a new
  description is also written over the tool's line in those instructions.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dspy

from policyopt.errors import ConfigError, describe

__all__ = ["COMPONENT_KINDS", "Component", "apply_components", "find_components", "parse_kinds"]

#: what can be exposed: predictor instructions, field descriptions, ReAct tool descriptions
COMPONENT_KINDS = ("instructions", "fields", "tools")


@dataclass(frozen=True)
class Component:
    """One optimizable text: its name, kind, where it lives and its text in the seed module."""

    name: str
    kind: str
    owner: str  # predictor name (instructions, fields) or ReAct module path (tools)
    target: str  # field or tool name; "" for instructions
    text: str


def parse_kinds(components: str | Iterable[str]) -> tuple[str, ...]:
    """``"instructions"`` or an iterable of :data:`COMPONENT_KINDS`, checked and ordered."""
    kinds = (components,) if isinstance(components, str) else tuple(components)
    unknown = [k for k in kinds if k not in COMPONENT_KINDS]
    if not kinds or unknown:
        raise ConfigError(
            "The 'components' parameter of optimize_dspy must be one or more of "
            f"{', '.join(COMPONENT_KINDS)}; got {describe(components)} instead."
        )
    return tuple(k for k in COMPONENT_KINDS if k in kinds)


def _field_text(name: str, field: Any) -> str:
    desc = (field.json_schema_extra or {}).get("desc", "")
    # DSPy writes "${name}" for a field declared without a description
    return "" if desc == f"${{{name}}}" else str(desc)


def _react_modules(module: dspy.Module) -> list[tuple[str, Any]]:
    found = []
    for path, sub in module.named_sub_modules():
        if isinstance(sub, dspy.ReAct):
            found.append((path.removeprefix("self.").removeprefix("self"), sub))
    return found


def find_components(module: dspy.Module, kinds: Iterable[str]) -> list[Component]:
    """Every component of ``kinds`` in ``module``, in predictor order (tools last)."""
    kinds = tuple(kinds)
    found: list[Component] = []
    for pred_name, predictor in module.named_predictors():
        signature = predictor.signature
        if "instructions" in kinds:
            found.append(
                Component(
                    f"{pred_name}.instructions",
                    "instructions",
                    pred_name,
                    "",
                    str(signature.instructions),
                )
            )
        if "fields" in kinds:
            for field_name, field in signature.fields.items():
                found.append(
                    Component(
                        f"{pred_name}.fields.{field_name}",
                        "fields",
                        pred_name,
                        field_name,
                        _field_text(field_name, field),
                    )
                )
    if "tools" in kinds:
        for path, react in _react_modules(module):
            prefix = f"{path}." if path else ""
            for tool_name, tool in react.tools.items():
                if tool_name == "finish":  # ReAct's own, not the user's
                    continue
                found.append(
                    Component(
                        f"{prefix}tools.{tool_name}", "tools", path, tool_name, str(tool.desc or "")
                    )
                )
    return found


def apply_components(
    module: dspy.Module, components: Iterable[Component], texts: Mapping[str, str]
) -> dspy.Module:
    """A deep copy of ``module`` with ``texts`` (component name -> text) written in.

    A component missing from ``texts`` keeps its seed text; an unknown name is a ConfigError.
    """
    table = {c.name: c for c in components}
    unknown = sorted(set(texts) - set(table))
    if unknown:
        raise ConfigError(
            f"Unknown DSPy component(s) {', '.join(unknown)}; this program has {', '.join(table)}."
        )
    clone = module.deepcopy()
    predictors = dict(clone.named_predictors())
    reacts = dict(_react_modules(clone))
    for name, text in texts.items():
        component = table[name]
        if text == component.text:  # unchanged: the seed's signature stays exactly as it was
            continue
        if component.kind == "instructions":
            predictor = predictors[component.owner]
            predictor.signature = predictor.signature.with_instructions(text)
        elif component.kind == "fields":
            predictor = predictors[component.owner]
            predictor.signature = predictor.signature.with_updated_fields(
                component.target, desc=text
            )
    for name, text in texts.items():  # after instructions: tool lines live inside them
        component = table[name]
        if component.kind == "tools" and text != component.text:
            _set_tool(reacts[component.owner], component.target, text)
    return clone


def _set_tool(react: Any, tool_name: str, text: str) -> None:
    """Give the tool its new description, and rewrite its line in the ``react`` predictor's
    instructions (ReAct renders ``str(tool)`` there when it is built)."""
    tool = react.tools[tool_name]
    old_line = str(tool)
    # a copy of the tool: a Tool object may be shared with the seed module or other copies
    new_tool = copy.copy(tool)
    new_tool.desc = text
    react.tools[tool_name] = new_tool
    predictor = react.react
    instructions = str(predictor.signature.instructions)
    if old_line in instructions:
        instructions = instructions.replace(old_line, str(new_tool))
    else:  # the instructions were rewritten without the tool list: say it once, at the end
        instructions = f"{instructions}\nTool {new_tool}"
    predictor.signature = predictor.signature.with_instructions(instructions)
