"""Demonstrations: how they are made (bootstrapped or labeled) and how they enter a prompt.

A demo is an (input, output) pair of texts. Bootstrapped demos are training examples on which
the seed program's output scored at least ``metric_threshold`` (the output is ``Score.output``,
or ``program.run``'s when evaluate gives none); labeled demos pair an example's input with its
label field. Inline (``demo_placement="inline"``), the default formatter appends them to the
instruction as ``Input:``/``Output:`` blocks; pass your own ``demo_formatter(instruction, demos)
-> str`` to MIPRO to change that. As turns (``demo_placement="turns"``, the default for a
chat-message prompt), each demo becomes a user message (its input) and an assistant message (its
output), inserted after the prompt's leading system messages: :func:`demo_turns`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INPUT_KEYS",
    "LABEL_KEYS",
    "Demo",
    "DemoFormatter",
    "build_demo_sets",
    "demo_input",
    "demo_turns",
    "detect_label_key",
    "format_prompt",
]

logger = logging.getLogger("policyopt")

#: keys tried, in order, to find an example's label when ``label_key`` is not given
LABEL_KEYS = ("answer", "label", "output", "target", "expected", "answers")

#: field names read as an example's input (never its answer) when inferring ``label_key``
INPUT_KEYS = frozenset({"input", "inputs", "question", "query", "text", "sentence", "prompt"}) | {
    *("word", "noun", "verb", "context", "passage", "document", "source", "message", "x")
}


@dataclass(frozen=True)
class Demo:
    """One demonstration: what the program got and what a good answer is."""

    input: str
    output: str


DemoFormatter = Callable[[str, Sequence[Demo]], str]


def format_prompt(instruction: str, demos: Sequence[Demo]) -> str:
    """The default formatter: the instruction, then each demo as an Input/Output block."""
    if not demos:
        return instruction
    blocks = "\n\n".join(f"Input: {d.input}\nOutput: {d.output}" for d in demos)
    return f"{instruction}\n\nExamples:\n\n{blocks}"


def demo_turns(demos: Sequence[Demo]) -> list[dict[str, str]]:
    """Demos as earlier chat turns: a user message with the input, an assistant one with the
    output (small chat models use demos this way, not written inside one message)."""
    turns: list[dict[str, str]] = []
    for d in demos:
        turns += [{"role": "user", "content": d.input}, {"role": "assistant", "content": d.output}]
    return turns


def detect_label_key(examples: Sequence[Any]) -> str | None:
    """The field holding each (dict) example's answer: the first of :data:`LABEL_KEYS` that
    every example has, else the one field (besides ``id``) that is not an input name of
    :data:`INPUT_KEYS` (``{"noun": ..., "plural": ...}``: ``plural``), told in a warning. When no
    field is obvious, None, and a warning naming ``label_key``: demo inputs then show every
    field, the answer's too."""
    if not examples or not all(isinstance(e, Mapping) for e in examples):
        return None
    for key in LABEL_KEYS:
        if all(key in e for e in examples):
            return key
    shared = [k for k in examples[0] if k != "id" and all(k in e for e in examples)]
    answers = [k for k in shared if str(k).lower() not in INPUT_KEYS]
    if len(shared) >= 2 and len(answers) == 1:
        logger.warning(
            "MIPRO: label_key not given; using %r, the examples' one field that is not an "
            "input, as the answer (kept out of demo inputs). Pass label_key= to choose another.",
            answers[0],
        )
        return str(answers[0])
    if len(shared) >= 2:
        logger.warning(
            "MIPRO: label_key not given and no field of the examples (%s) is clearly the "
            "answer, so demo inputs show every field, the answer's too: pass label_key='...'.",
            ", ".join(map(str, shared)),
        )
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)


def demo_input(example: Any, label_key: str | None) -> str:
    """An example's input as text: its fields other than ``id`` and the label."""
    if not isinstance(example, Mapping):
        return _text(example)
    fields = {k: v for k, v in example.items() if k not in ("id", label_key)}
    if len(fields) == 1:
        return _text(next(iter(fields.values())))
    return _text(fields)


def labeled_demo(example: Any, label_key: str) -> Demo:
    """A demo pairing an example's input with its label."""
    label = example[label_key]
    if isinstance(label, list) and label:
        label = label[0]
    return Demo(demo_input(example, label_key), _text(label))


def build_demo_sets(
    n_sets: int,
    bootstrapped: Sequence[Demo],
    labeled: Sequence[Demo],
    *,
    max_bootstrapped: int,
    max_labeled: int,
    rng: random.Random,
) -> list[list[Demo]]:
    """Up to ``n_sets`` distinct demo sets: empty, labeled-only, then bootstrapped sets.

    The first bootstrapped set takes the first ``max_bootstrapped`` successes in order; later
    ones shuffle them and take 1..``max_bootstrapped``. Each bootstrapped set is topped up with
    labeled demos to ``max_labeled`` in all.
    """
    sets: list[list[Demo]] = [[]]
    if len(sets) < n_sets and labeled and max_labeled > 0:
        sets.append(rng.sample(list(labeled), min(max_labeled, len(labeled))))
    attempt = 0
    while len(sets) < n_sets and bootstrapped and max_bootstrapped > 0 and attempt < 4 * n_sets:
        pool = list(bootstrapped)
        if attempt > 0:
            rng.shuffle(pool)
        k = max_bootstrapped if attempt == 0 else rng.randint(1, max_bootstrapped)
        chosen = pool[:k]
        fill = [d for d in labeled if d not in chosen]
        rng.shuffle(fill)
        chosen += fill[: max(0, max_labeled - len(chosen))]
        if chosen not in sets:
            sets.append(chosen)
        attempt += 1
    return sets
