"""Reflective mutation: show the reflection LM what happened and parse its new instruction.

The reflective dataset is one record per minibatch rollout: the example's input, the program's
output and the ``feedback`` of its :class:`~policyopt.Score`. The reflection LM gets the current
text, the records and the task of diagnosing the failures; its new text is the last fenced block
of its answer (or the whole answer without fences). Empty, unchanged or cut-off proposals are
rejected, and the retry prompt says why.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.lm.parsing import check_proposal, extract_instruction

__all__ = [
    "ADVICE_TEMPLATE",
    "COMPACT_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "check_proposal",
    "common_advice",
    "extract_instruction",
    "make_records",
    "render_prompt",
]

DEFAULT_TEMPLATE = """\
An AI assistant was given the instruction below (the "{component}" part of its prompt) and then \
the inputs that follow. Your job is to write a better instruction.

Current instruction:
```
{current}
```

What the assistant received, what it answered, and feedback on each answer:

{records}

Read every answer and its feedback. Work out what the task really is and why answers went wrong. \
Then write a new instruction that fixes those failures: state the general rule the assistant must \
follow, add any task-specific facts the feedback reveals, and keep what already works.{retry}

Reply with the new instruction inside one ``` fenced block."""

#: For very small reflection models (e.g. the embedded SmolLM2-135M): short, feedback lines only
#: (measured: full records gave no better proposals from SmolLM2), one sentence out.
COMPACT_TEMPLATE = """\
An assistant followed the instruction "{current}" and got this feedback:
{feedback}{retry}

Improved instruction (one sentence):"""


#: For very small reflection models: only the advice the feedback repeats (see
#: :func:`common_advice`), to be rewritten as an instruction. Measured on SmolLM2-135M
#: (antonyms, seed prompt's failures): 0 of 36 proposals from :data:`COMPACT_TEMPLATE` scored
#: above 0.03 on val, against 2 of 6 samples from this one (0.20 and 0.60); the model copies
#: instance details (words, answers) from full feedback lines into its proposals.
ADVICE_TEMPLATE = """\
An assistant followed the instruction "{current}". Advice on its answers:
{advice}{retry}

Rewrite the advice as one instruction to the assistant.
Instruction:"""

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


def render_prompt(
    template: str,
    component: str,
    current: str,
    records: Sequence[Mapping[str, str]],
    retry_reason: str | None = None,
) -> str:
    """The reflection LM's prompt: ``template`` filled in.

    Placeholders: ``{component}``, ``{current}`` (the text to improve), ``{records}`` (every
    record in full), ``{feedback}`` (the distinct feedback lines only), ``{advice}`` (the
    feedback sentences records share, :func:`common_advice`) and ``{retry}`` (why the previous
    proposal was rejected, or empty).
    """
    blocks = []
    for number, record in enumerate(records, start=1):
        lines = [f"### Example {number}"]
        lines += [f"{key}: {value}" for key, value in record.items()]
        blocks.append("\n".join(lines))
    retry = (
        f"\n\nYour previous proposal was rejected ({retry_reason}); write a different one."
        if retry_reason
        else ""
    )
    feedback = list(dict.fromkeys(r.get("Feedback", "") for r in records if r.get("Feedback")))
    return template.format(
        component=component,
        current=current,
        records="\n\n".join(blocks),
        feedback="\n".join(f"- {line}" for line in feedback),
        advice="\n".join(common_advice(records)),
        retry=retry,
    )
