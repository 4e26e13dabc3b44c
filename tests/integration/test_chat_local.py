"""On the real local model: demonstrations as earlier chat turns change SmolLM2's answers, the
same demonstrations written inside one message do not help.

The probe is MIPRO's two demo placements, built by the library's own code
(:meth:`PromptShape.shaped` with :func:`demo_turns`, and :func:`format_prompt` into the system
message), on 12 antonyms at temperature 0 with 4 demos. Measured (loaded 2-core machine): no
demos 0/12, inline demos 0/12 (long sentences, or a copied demo answer: "The answer is: \"dry\""),
demos as turns 4/12 (one-word answers: open -> closed, early -> late, young -> old, alive ->
dead).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from policyopt import LocalLM
from policyopt.mipro.demos import Demo, demo_turns, format_prompt
from policyopt.prompts import PromptShape
from policyopt.tasks.antonyms import POOL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMOS = [Demo("hot", "cold"), Demo("up", "down"), Demo("big", "small"), Demo("wet", "dry")]
WORDS = ("fast", "happy", "open", "full", "early", "rich")
WORDS += ("strong", "clean", "young", "push", "buy", "alive")
ANSWERS = {word: answers for word, answers in POOL if word in WORDS}
SEED = [
    {"role": "system", "content": "Answer the question."},
    {"role": "user", "content": "{word}"},
]


def _ask(lm: LocalLM, prompt: list[dict[str, str]]) -> dict[str, str]:
    """The model's answer to every word, the word filled into the last (user) message."""

    def one(word: str) -> str:
        messages = [*prompt[:-1], {"role": "user", "content": word}]
        return lm(messages, max_tokens=8).strip()

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(WORDS, pool.map(one, WORDS), strict=True))


def _correct(answers: dict[str, str]) -> int:
    return sum(any(a in answers[w].lower() for a in ANSWERS[w]) for w in WORDS)


# 36 short calls of at most 8 tokens; 767 s measured under a load average of 20-27 on the
# 2-core machine (the session's model start included)
@pytest.mark.timeout(1500)
def test_demos_help_the_local_model_only_as_earlier_chat_turns(local_lm: LocalLM) -> None:
    shape = PromptShape.of(SEED)
    parts: dict[str, Any] = shape.components(SEED)
    zero = _ask(local_lm, shape.shaped(parts))  # type: ignore[arg-type]
    inline_prompt = shape.shaped({**parts, "system": format_prompt(parts["system"], DEMOS)})
    assert len(inline_prompt) == 2 and "Input: wet\nOutput: dry" in inline_prompt[0]["content"]
    inline = _ask(local_lm, inline_prompt)  # type: ignore[arg-type]
    turns_prompt = shape.shaped(parts, turns=demo_turns(DEMOS))
    assert [m["role"] for m in turns_prompt] == ["system", *["user", "assistant"] * 4, "user"]
    turns = _ask(local_lm, turns_prompt)  # type: ignore[arg-type]
    scores = {name: _correct(a) for name, a in (("zero", zero), ("inline", inline))}
    scores["turns"] = _correct(turns)
    # measured: zero 0, inline 0, turns 4 of 12
    assert scores["turns"] >= 3, (scores, turns)
    assert scores["inline"] <= scores["zero"] + 1, (scores, inline)
    assert scores["turns"] >= scores["inline"] + 3, scores
    # as turns the model answers in the demos' form (a word or two), not in sentences
    assert sum(len(a.split()) <= 2 for a in turns.values()) >= 10, turns
    assert sum(len(a.split()) <= 2 for a in inline.values()) <= 3, inline
