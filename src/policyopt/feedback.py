"""Feedback records: what an optimizer shows its LM about rollouts, and the advice they share.

Both GEPA's reflection and MIPRO's ``advice`` instruction proposer read a metric's textual
feedback through these: one record per rollout (input, answer, feedback), and the feedback
sentences that several records repeat (a metric's general lesson, as opposed to the details of
one example).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ADVICE_TEMPLATE",
    "ANSWER_FIELDS",
    "RETRY_NOTE",
    "TOKENS_PER_WORD",
    "answer_words",
    "common_advice",
    "cut_off_reason",
    "length_note",
    "make_records",
    "output_space",
    "output_space_note",
    "retry_note",
]

#: For very small reflection models: only the advice the feedback repeats (see
#: :func:`common_advice`), to be rewritten as an instruction (GEPA's ``reflection_template=
#: "advice"``, MIPRO's ``instruction_proposer="advice"``). Measured on SmolLM2-135M (antonyms,
#: seed prompt's failures): 0 of 36 proposals from GEPA's compact template scored above 0.03 on
#: val, against 2 of 6 samples from this one (0.20 and 0.60); the model copies instance details
#: (words, answers) from full feedback lines into its proposals.
ADVICE_TEMPLATE = """\
An assistant followed the instruction "{current}". Advice on its answers:
{advice}{retry}

Rewrite the advice as one instruction to the assistant{length}.
Instruction:"""


#: the ``{retry}`` text of a proposal prompt (see :func:`retry_note`)
RETRY_NOTE = "\n\nYour previous proposal was rejected ({reason}); write a different one."


def retry_note(reason: str | None) -> str:
    """The ``{retry}`` text of a proposal prompt: why the previous proposal was rejected."""
    if not reason:
        return ""
    return RETRY_NOTE.format(reason=reason)


#: tokens per word assumed where a token limit becomes the length a proposal prompt asks for:
#: English runs about 1.3 tokens a word in common tokenizers, and 2 leaves room for punctuation,
#: quotes, a fence or label around the answer, and a small model that overshoots a stated length
TOKENS_PER_WORD = 2


def answer_words(max_tokens: int | None) -> int | None:
    """The most words a proposal prompt asks for from an LM answering at most ``max_tokens``
    tokens (None when the limit is unknown): an answer asked to fit is not cut off."""
    if not max_tokens or max_tokens <= 0:
        return None
    return max(1, max_tokens // TOKENS_PER_WORD)


def length_note(words: int | None) -> str:
    """The ``{length}`` text of a proposal prompt, after its request for the answer:
    ``", in at most N words"`` (empty when no limit is known)."""
    return f", in at most {words} words" if words else ""


def cut_off_reason(words: int | None) -> str:
    """Why an answer cut off at the token limit was rejected, as its retry says it: with a known
    limit it asks for an answer that fits (see :func:`answer_words`)."""
    reason = "the answer was cut off at the token limit"
    return f"{reason}; write at most {words} words" if words else reason


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def common_advice(records: Sequence[Mapping[str, str]]) -> list[str]:
    """Feedback sentences that two or more records share, in first-seen order.

    A metric's feedback usually mixes instance details (this word, that expected answer) with a
    general lesson written the same way for every example; the repeated sentences are the
    lesson. With fewer than two records, or no sentence repeated, every distinct feedback line.
    """
    lines = [r.get("Feedback", "") for r in records if r.get("Feedback")]
    per_record = [
        dict.fromkeys(s.strip() for s in _SENTENCE_END.split(f) if s.strip()) for f in lines
    ]
    counts = Counter(s for sentences in per_record for s in sentences)
    shared = [s for s in dict.fromkeys(s for p in per_record for s in p) if counts[s] >= 2]
    return shared or list(dict.fromkeys(lines))


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 15] + " ...[truncated]"


def make_records(
    rows: Sequence[tuple[Any, Any, float, str | None]], *, max_chars: int = 1500
) -> list[dict[str, str]]:
    """Records from ``(example, output, score, feedback)`` rows, each field cut to ``max_chars``.

    Example ``"id"`` keys are dropped (they mean nothing to the LM); a missing feedback becomes a
    plain statement of the score.
    """
    records = []
    for example, output, score, feedback in rows:
        inputs = (
            {k: v for k, v in example.items() if k != "id"}
            if isinstance(example, Mapping)
            else example
        )
        records.append(
            {
                "Input": _text(inputs, max_chars),
                "Answer": _text("" if output is None else output, max_chars),
                "Feedback": _text(
                    feedback if feedback else f"This answer scored {score:g}.", max_chars
                ),
            }
        )
    return records


#: field names that hold an example's expected answer, in order of preference (a categorical
#: field by another name may be an input: a label set is only read from these)
ANSWER_FIELDS = (
    "label",
    "labels",
    "answer",
    "answers",
    "output",
    "target",
    "expected",
    "gold",
    "category",
    "class",
    "intent",
    "sentiment",
)


def output_space(examples: Sequence[Any], *, max_labels: int = 12) -> list[str]:
    """The label set seen in the data, sorted: the values of the first of
    :data:`ANSWER_FIELDS` that looks like a class label in every example (strings of at most
    40 characters, 2 to ``max_labels`` distinct values, each seen about twice or more). Empty
    when none does (free-form answers, or no answer field by those names)."""
    rows = [e for e in examples if isinstance(e, Mapping)]
    if len(rows) < 4:
        return []
    for name in ANSWER_FIELDS:
        values = [row.get(name) for row in rows]
        if not all(isinstance(v, str) and 0 < len(v.strip()) <= 40 for v in values):
            continue
        distinct = sorted({str(v).strip() for v in values})
        if 2 <= len(distinct) <= max_labels and len(distinct) * 2 <= len(rows):
            return distinct
    return []


def output_space_note(labels: Sequence[str]) -> str:
    """One line for a proposal prompt: the answers seen in the data (empty without a set)."""
    if len(labels) < 2:
        return ""
    return (
        "The right answer depends on the input; the answers seen in the data are: "
        + ", ".join(labels)
        + "."
    )
