"""Reading an LM's answer: the instruction in its last fenced block, and whether it is usable.

Shared by the optimizers that ask an LM for a new prompt (GEPA's reflection, MIPRO's proposer).
"""

from __future__ import annotations

import re

__all__ = ["check_proposal", "extract_instruction", "proposal_problem"]

_FENCE = re.compile(r"```")
_INFO = re.compile(r"^[a-z0-9_+.-]{0,20}$")  # a fence's language tag, e.g. ```text


def extract_instruction(answer: str) -> tuple[str, bool]:
    """``(text, balanced)``: the last fenced block's content (minus its info string), or the
    whole answer when it has no fence. ``balanced`` is False for an odd number of fences."""
    positions = [m.start() for m in _FENCE.finditer(answer)]
    if not positions:
        return answer.strip(), True
    balanced = len(positions) % 2 == 0
    if len(positions) < 2:
        return answer.replace("```", "").strip(), balanced
    pairs = positions if balanced else positions[:-1]
    start, end = pairs[-2], pairs[-1]
    inner = answer[start + 3 : end]
    first_newline = inner.find("\n")
    if first_newline >= 0 and _INFO.match(inner[:first_newline].strip()):
        inner = inner[first_newline + 1 :]  # drop an info string such as ```text
    return inner.strip(), balanced


def check_proposal(
    new: str, current: str, *, balanced: bool, truncated: bool, max_chars: int
) -> str | None:
    """Why the proposal must be rejected, or None when it is usable."""
    problem = proposal_problem(
        new, current, balanced=balanced, truncated=truncated, max_chars=max_chars
    )
    return None if problem is None else problem[1]


def proposal_problem(
    new: str, current: str, *, balanced: bool, truncated: bool, max_chars: int
) -> tuple[str, str] | None:
    """``(code, why)`` when the proposal must be rejected (a code of
    :data:`~policyopt.events.REASONS`, and the words a retry tells the model), else None."""
    if truncated:
        return "cut_off", "the answer was cut off at the token limit"
    if not balanced:
        return "unparsable", "the answer has an unclosed ``` fence, so it was probably cut off"
    if not new.strip():
        return "empty", "the new instruction is empty"
    if " ".join(new.split()) == " ".join(current.split()):
        return "unchanged", "the new instruction is the same as the current one"
    if len(new) > max_chars:
        return "too_long", f"the new instruction is longer than {max_chars} characters"
    return None
