"""Prompt shapes: one text, named text components, or a list of chat messages.

Optimizers work on *components* (name -> text) and hand ``evaluate`` the prompt in the seed's
shape; :class:`PromptShape` converts between the two. The shapes and their components:

- ``str``: one component, ``"prompt"``;
- ``dict[str, str]``: its keys;
- chat messages, ``[{"role": ..., "content": ..., "name": ...}, ...]`` (role one of
  :data:`MESSAGE_ROLES`, content a str, ``name`` optional): the contents. A message with a
  ``name`` is the component of that name; an unnamed one is named by its role when no other
  unnamed message has that role (``system``, ``user``), else by its role and its 1-based rank
  among the unnamed messages of that role (``user_1``, ``assistant_1``, ``user_2``). The rule
  depends only on the seed's list, so names are stable for a run and across resumes.

Demonstration turns that MIPRO inserts (:meth:`PromptShape.shaped` with ``turns``) sit after the
leading system/developer messages and are not components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from policyopt.errors import ConfigError, describe

__all__ = [
    "MESSAGE_ROLES",
    "Message",
    "Prompt",
    "PromptShape",
    "component_names",
    "fresh_copy",
    "is_chat",
    "prompt_text",
    "validate_messages",
    "validate_prompt",
]

#: Roles a chat message of a prompt may have.
MESSAGE_ROLES = ("system", "user", "assistant", "developer")
_INSTRUCTION_ROLES = ("system", "developer")
_MESSAGE_KEYS = ("role", "content", "name")

#: One chat message: ``{"role": ..., "content": ...}`` and an optional ``"name"``.
Message: TypeAlias = dict[str, str]

#: A prompt: one text, named text components, or a list of chat messages.
Prompt: TypeAlias = "str | dict[str, str] | list[dict[str, str]]"


def is_chat(prompt: object) -> bool:
    """True when ``prompt`` is a list (or tuple) of chat messages (not checked further)."""
    return isinstance(prompt, (list, tuple))


def validate_messages(messages: Sequence[object], *, name: str = "prompt") -> list[Message]:
    """Check a chat-message prompt and return it as a fresh list of plain dicts.

    Raises :class:`ConfigError` naming the message and the fix for an empty list, a message that
    is not a dict, an unknown key, a role outside :data:`MESSAGE_ROLES`, a non-str content or
    name, and two messages with the same component name.
    """
    if not messages:
        raise ConfigError(
            f"The {name!r} is an empty list; a chat prompt needs at least one "
            "{'role': ..., 'content': ...} message."
        )
    out: list[Message] = []
    for index, message in enumerate(messages):
        where = f"Message {index} of the {name!r}"
        if not isinstance(message, Mapping):
            raise ConfigError(
                f"{where} is {describe(message)}; each message must be a dict like "
                "{'role': 'user', 'content': '...'}."
            )
        unknown = [k for k in message if k not in _MESSAGE_KEYS]
        if unknown:
            raise ConfigError(
                f"{where} has the key {unknown[0]!r}; a message takes only 'role', 'content' "
                "and an optional 'name'."
            )
        for key in ("role", "content"):
            if key not in message:
                raise ConfigError(f"{where} has no {key!r}; add it, e.g. {{'role': 'user', ...}}.")
        role, content = message["role"], message["content"]
        if role not in MESSAGE_ROLES:
            raise ConfigError(
                f"{where} has the role {role!r}; use one of {', '.join(MESSAGE_ROLES)}."
            )
        if not isinstance(content, str):
            raise ConfigError(
                f"{where} has a content of {describe(content)}; the content must be a str "
                "(multi-part content is not supported)."
            )
        clean: Message = {"role": role, "content": content}
        if "name" in message:
            label = message["name"]
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(
                    f"{where} has a 'name' of {describe(label)}; a name must be a non-empty str "
                    "(or leave the key out to name the message by its role)."
                )
            clean["name"] = label
        out.append(clean)
    component_names(out, name=name)  # raises on duplicate names
    return out


def component_names(messages: Sequence[Mapping[str, str]], *, name: str = "prompt") -> list[str]:
    """The component name of each message of a valid chat prompt (see the module docstring)."""
    unnamed: dict[str, int] = {}
    for m in messages:
        if "name" not in m:
            unnamed[m["role"]] = unnamed.get(m["role"], 0) + 1
    rank: dict[str, int] = {}
    names: list[str] = []
    first: dict[str, int] = {}
    for index, m in enumerate(messages):
        if "name" in m:
            label = m["name"]
        elif unnamed[m["role"]] == 1:
            label = m["role"]
        else:
            rank[m["role"]] = rank.get(m["role"], 0) + 1
            label = f"{m['role']}_{rank[m['role']]}"
        if label in first:
            raise ConfigError(
                f"Messages {first[label]} and {index} of the {name!r} are both named {label!r}; "
                "give one of them a distinct 'name' key."
            )
        first[label] = index
        names.append(label)
    return names


def validate_prompt(
    prompt: object, *, name: str = "prompt"
) -> str | dict[str, str] | list[Message]:
    """Check that ``prompt`` is a str, a non-empty dict of str -> str, or chat messages."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        if not prompt:
            raise ConfigError(
                f"The {name!r} must be a str or a non-empty dict of named str components; "
                "got an empty dict."
            )
        for key, value in prompt.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(
                    f"The {name!r} must be a str or a dict[str, str]; component {key!r} is "
                    f"{describe(value)}. Convert every component to text."
                )
        return dict(prompt)
    if is_chat(prompt):
        return validate_messages(prompt, name=name)  # type: ignore[arg-type]
    raise ConfigError(
        f"The {name!r} must be a str, a dict[str, str] of named components or a list of chat "
        f"messages ({{'role': ..., 'content': ...}}); got {describe(prompt)} instead."
    )


def fresh_copy(prompt: Any) -> Any:
    """A copy of a dict or chat prompt for one ``evaluate`` call (a str as is), so that an
    ``evaluate`` that edits its messages in place (``messages.append(...)``) cannot change the
    prompt other rollouts, the cache and the result see."""
    if isinstance(prompt, dict):
        return dict(prompt)
    if isinstance(prompt, list):
        return [dict(m) if isinstance(m, dict) else m for m in prompt]
    return prompt


def prompt_text(prompt: object) -> str:
    """A prompt as readable text: a str as is, else one ``[name] text`` line per component."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        return "\n".join(f"[{k}] {v}" for k, v in prompt.items())
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, Mapping) for m in prompt):
        lines = []
        for m in prompt:
            label = m.get("role", "?") + (f" {m['name']}" if m.get("name") else "")
            lines.append(f"[{label}] {m.get('content', '')}")
        return "\n".join(lines)
    return str(prompt)


@dataclass(frozen=True)
class PromptShape:
    """The seed prompt's shape: its component names and how to rebuild a prompt from them."""

    kind: str  # "text", "dict" or "chat"
    names: tuple[str, ...]
    messages: tuple[Message, ...] = ()  # chat: the seed's messages, contents included

    @classmethod
    def of(cls, prompt: object, *, name: str = "prompt") -> PromptShape:
        """The shape of a (validated here) prompt."""
        checked = validate_prompt(prompt, name=name)
        if isinstance(checked, str):
            return cls("text", ("prompt",))
        if isinstance(checked, dict):
            return cls("dict", tuple(checked))
        return cls("chat", tuple(component_names(checked)), tuple(checked))

    @property
    def instruction(self) -> str:
        """The component that carries the instruction: the first system (or developer)
        message of a chat prompt, else its first message; the first component otherwise."""
        if self.kind == "chat":
            for label, m in zip(self.names, self.messages, strict=True):
                if m["role"] in _INSTRUCTION_ROLES:
                    return label
        return self.names[0]

    @property
    def turn_index(self) -> int:
        """Where demonstration turns go in a chat prompt: after the leading system messages."""
        index = 0
        while index < len(self.messages) and self.messages[index]["role"] in _INSTRUCTION_ROLES:
            index += 1
        return index

    def components(self, prompt: object) -> dict[str, str]:
        """The components (name -> text) of a prompt of this shape."""
        if self.kind == "text":
            return {"prompt": str(prompt)}
        if self.kind == "dict":
            return dict(prompt)  # type: ignore[call-overload]
        contents = [m["content"] for m in prompt]  # type: ignore[attr-defined]
        if len(contents) != len(self.names):
            raise ConfigError(
                f"A chat prompt of {len(contents)} messages does not have the seed's shape "
                f"({len(self.names)} messages: {', '.join(self.names)})."
            )
        return dict(zip(self.names, contents, strict=True))

    def shaped(
        self, components: Mapping[str, str], *, turns: Sequence[Mapping[str, str]] = ()
    ) -> str | dict[str, str] | list[Message]:
        """The prompt ``evaluate`` receives: the seed's shape with these component texts.

        ``turns`` (chat only) are extra messages, e.g. demonstrations as user/assistant turns,
        inserted after the leading system messages.
        """
        if turns and self.kind != "chat":
            raise ConfigError("demonstration turns need a chat-message prompt (a list of messages)")
        if self.kind == "text":
            return components["prompt"]
        if self.kind == "dict":
            return {k: components[k] for k in self.names}
        messages = [
            {**m, "content": components[label]}
            for label, m in zip(self.names, self.messages, strict=True)
        ]
        at = self.turn_index
        messages[at:at] = [dict(t) for t in turns]
        return messages
