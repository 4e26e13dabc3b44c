"""OPRO's meta-prompt: scored instructions in ascending order, exemplars, and reading the answer.

The history is rendered as the paper does, ``text: ...`` / ``score: ...`` with scores as 0-100
integers, worst first, so the best instructions sit next to the request for a new one (a text of
several lines, such as code, keeps its lines in a fenced block). An
exemplar is a training example (its fields, which hold the expected output when the example
has one) and, when the run looks at feedback, what the best prompt so far answered on it and
the ``feedback`` of that answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policyopt.lm.parsing import check_proposal, extract_instruction
from policyopt.proposals import Parsed
from policyopt.templates import render_template

__all__ = [
    "ARTIFACT_TEMPLATE",
    "COMPACT_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "RETRY",
    "Exemplar",
    "Scored",
    "normalize",
    "parse_answer",
    "percent",
    "read_answer",
    "render_exemplars",
    "render_history",
    "render_meta_prompt",
]

DEFAULT_TEMPLATE = """\
Your task is to write an instruction for an AI assistant. Below are instructions written so far \
with their scores (0 to 100). They are arranged in ascending order of score: higher scores are \
better.

{history}

The assistant reads the instruction, then one input, and answers. Here are examples of inputs, \
with how the best instruction so far did on them:

{exemplars}

Write a new instruction that is different from all the instructions above and has a higher \
score than all of them. Reply with the new instruction only, inside one ``` fenced \
block{length}."""

#: For very small meta models (e.g. the embedded SmolLM2-135M): short, one line out.
COMPACT_TEMPLATE = """\
Instructions for an assistant, with scores (higher is better):
{history}

Examples:
{exemplars}

Write a better instruction, in one sentence{length}:"""

#: For any text artifact (code, a config, a prompt: ``policyopt.optimize_anything``'s default).
ARTIFACT_TEMPLATE = """\
Your task is to write a new version of a text. Below are versions written so far with their \
scores (0 to 100), in ascending order of score: higher scores are better.

{history}

Here is how the best version so far did:

{exemplars}

Write a new version that is different from all the versions above and scores higher than all of \
them. Reply with the complete new version only, inside one ``` fenced block."""

_LABEL = re.compile(r"^(?:new\s+)?(?:text|instruction)\s*:\s*", re.I)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019[]<>"


@dataclass(frozen=True)
class Scored:
    """An instruction with its score and how that score was measured (full valset or not)."""

    text: str
    score: float
    full: bool
    order: int  # when it was scored: ties in score keep this order


@dataclass(frozen=True)
class Exemplar:
    """A training example for the meta-prompt; answer, score and feedback when it was run."""

    example: Any
    answer: str | None = None
    score: float | None = None
    feedback: str | None = None


def percent(score: float, score_range: tuple[float, float] | None) -> int:
    """``score`` as an integer from 0 to 100 (the paper's format) over ``score_range``."""
    low, high = score_range if score_range is not None else (0.0, 1.0)
    return round(100 * (score - low) / (high - low))


def render_history(
    scored: Sequence[Scored], max_history: int, score_range: tuple[float, float] | None
) -> str:
    """The best ``max_history`` instructions, worst first (ascending score)."""
    top = sorted(scored, key=lambda s: (s.score, s.order))[-max_history:]
    return "\n\n".join(
        f"text: {_shown(s.text)}\nscore: {percent(s.score, score_range)}" for s in top
    )


def _shown(text: str) -> str:
    """An instruction on one line; a text of several lines (code, a config) fenced, as is."""
    if "\n" not in text.strip():
        return " ".join(text.split())
    return f"\n```\n{text.strip()}\n```"


def _field(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_exemplars(
    exemplars: Sequence[Exemplar], max_chars: int, score_range: tuple[float, float] | None
) -> str:
    """One compact block per exemplar: input (minus its ``id``), then answer, score, feedback."""
    if not exemplars:
        return "(none)"
    blocks = []
    for ex in exemplars:
        example = ex.example
        if isinstance(example, Mapping):
            example = {k: v for k, v in example.items() if k != "id"}
        lines = [f"input: {_field(example, max_chars)}"]
        if ex.answer is not None:
            lines.append(f"answer: {_field(ex.answer, max_chars)}")
        if ex.score is not None:
            lines.append(f"score: {percent(ex.score, score_range)}")
        if ex.feedback:
            lines.append(f"feedback: {_field(ex.feedback, max_chars)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def render_meta_prompt(
    template: str, history: str, exemplars: str, retry: str | None, length: str = ""
) -> str:
    """The template filled in; a retry says why the last answer was rejected. ``length`` is
    the ``{length}`` text (:func:`~policyopt.feedback.length_note`)."""
    values = {"history": history, "exemplars": exemplars, "length": length}
    prompt = render_template(template, values)
    if retry:
        prompt += RETRY.format(retry=retry)
    return prompt


#: what a retry adds to the meta prompt
RETRY = "\n\n(Your last answer was rejected: {retry}. Try again.)"


def read_answer(record: Mapping[str, Any]) -> Parsed:
    """The instruction in a journaled LM answer: the last fenced block, or, without a fence,
    the whole answer minus a ``text:`` label and surrounding quotes or brackets."""
    raw = str(record["text"])
    text, balanced = extract_instruction(raw)
    if "```" not in raw:
        text = _LABEL.sub("", text).strip().strip(_QUOTES).strip()
    return Parsed(text, balanced, record.get("finish_reason") == "length")


#: why a proposal equal to an instruction already scored is rejected
REPEATED = "the instruction was proposed before"


def parse_answer(
    record: Mapping[str, Any], seen: set[str], max_chars: int
) -> tuple[str | None, str | None]:
    """``(instruction, None)`` or ``(None, why rejected)`` from a journaled LM answer
    (:func:`read_answer`). ``seen`` holds the normalized texts already scored: a proposal equal
    to one of them is a duplicate."""
    parsed = read_answer(record)
    reason = "answer_too_long" if record.get("capped") else None
    reason = reason or check_proposal(
        parsed.text, "", balanced=parsed.balanced, truncated=parsed.truncated, max_chars=max_chars
    )
    if reason is None and normalize(parsed.text) in seen:
        reason = REPEATED
    return (None, reason) if reason else (parsed.text, None)


def normalize(text: str) -> str:
    """Whitespace-insensitive identity of an instruction."""
    return " ".join(text.split())
