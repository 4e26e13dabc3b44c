"""Reflective mutation: show the reflection LM what happened and parse its new instruction.

The reflective dataset is one record per minibatch rollout: the example's input, the program's
output and the ``feedback`` of its :class:`~policyopt.Score`. The reflection LM gets the current
text, the records and the task of diagnosing the failures; its new text is the last fenced block
of its answer (or the whole answer without fences). Empty, unchanged or cut-off proposals are
rejected, and the retry prompt says why. When the data has a label set
(:func:`~policyopt.feedback.output_space`), the prompt says which answers the data holds, so an
instruction can cover them all instead of fixing the one a minibatch happened to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policyopt.errors import MissingDependencyError
from policyopt.feedback import (
    ADVICE_TEMPLATE,
    common_advice,
    make_records,
    output_space_note,
    retry_note,
)
from policyopt.lm.parsing import check_proposal, extract_instruction
from policyopt.templates import render_template

__all__ = [
    "ADVICE_TEMPLATE",
    "ARTIFACT_TEMPLATE",
    "COMPACT_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "check_proposal",
    "common_advice",
    "extract_instruction",
    "gepa_lib_template",
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

Reply with the new instruction inside one ``` fenced block{length}."""

#: For any text artifact (code, a config, a prompt: ``policyopt.optimize_anything``'s default):
#: the whole text is rewritten, not an instruction to an assistant.
ARTIFACT_TEMPLATE = """\
Below is the current version of a text (the "{component}" part of a candidate) and how it was \
evaluated. Your job is to write a better version.

Current version:
```
{current}
```

Evaluations (the input, the result, and feedback on it):

{records}

Read the feedback carefully and work out why the text fell short. Then write an improved version \
of the whole text that fixes those problems and keeps what already works.{retry}

Reply with the complete new version inside one ``` fenced block."""

#: For very small reflection models (e.g. the embedded SmolLM2-135M): short, feedback lines only
#: (measured: full records gave no better proposals from SmolLM2), one sentence out.
COMPACT_TEMPLATE = """\
An assistant followed the instruction "{current}" and got this feedback:
{feedback}{retry}

Improved instruction (one sentence{length}):"""


def gepa_lib_template() -> str:
    """The ``gepa`` library's default reflection prompt in this module's placeholders
    (``<curr_param>`` -> ``{current}``, ``<side_info>`` -> ``{records}``, ``{retry}`` after it,
    empty on a first attempt): policyopt's GEPA with gepa's meta-prompt, for equal-template
    comparisons (``reflection_template="gepa-lib"``). The records keep policyopt's layout."""
    try:
        from gepa.strategies.instruction_proposal import InstructionProposalSignature
    except ImportError as exc:
        raise MissingDependencyError(
            "reflection_template='gepa-lib' reads the gepa library's own template: "
            "pip install 'policyopt[peers]'."
        ) from exc
    text = InstructionProposalSignature.default_prompt_template
    return text.replace("<curr_param>", "{current}").replace("<side_info>", "{records}") + "{retry}"


def render_prompt(
    template: str,
    component: str,
    current: str,
    records: Sequence[Mapping[str, str]],
    retry_reason: str | None = None,
    outputs: Sequence[str] = (),
    length: str = "",
) -> str:
    """The reflection LM's prompt: ``template`` filled in.

    Placeholders: ``{component}``, ``{current}`` (the text to improve), ``{records}`` (every
    record in full), ``{feedback}`` (the distinct feedback lines only), ``{advice}`` (the
    feedback sentences records share, :func:`common_advice`), ``{retry}`` (why the previous
    proposal was rejected, or empty), ``{outputs}`` (the label set ``outputs``, as a
    sentence) and ``{length}`` (the length the LM's token limit fits, ``length``: see
    :func:`~policyopt.feedback.length_note`). A template without ``{outputs}`` gets that
    sentence as the last line of its ``{records}``, ``{feedback}`` and ``{advice}``.
    """
    blocks = []
    for number, record in enumerate(records, start=1):
        lines = [f"### Example {number}"]
        lines += [f"{key}: {value}" for key, value in record.items()]
        blocks.append("\n".join(lines))
    feedback = list(dict.fromkeys(r.get("Feedback", "") for r in records if r.get("Feedback")))
    note = output_space_note(outputs)
    inline = bool(note) and "{outputs}" not in template
    advice = common_advice(records)
    values = {
        "component": component,
        "current": current,
        "records": "\n\n".join(blocks + ([note] if inline else [])),
        "feedback": "\n".join(
            [f"- {line}" for line in feedback] + ([f"- {note}"] if inline else [])
        ),
        "advice": "\n".join(advice + ([note] if inline else [])),
        "retry": retry_note(retry_reason),
        "outputs": note,
        "length": length,
    }
    return render_template(template, values)
