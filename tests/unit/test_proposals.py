"""The shared proposal loop: echoes of the proposal prompt are rejected for every optimizer."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO
from policyopt.feedback import ADVICE_TEMPLATE
from policyopt.gepa.reflection import DEFAULT_TEMPLATE
from policyopt.proposals import ECHOES_PROMPT, FAILED, ProposalLoop, find_echo
from policyopt.state.memo import JournaledLM
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import keyword_task

#: what a 0.5B reflection model answered in the issue's run: the template's request, echoed
LEAK = (
    "The new instruction that should follow the assistant is to state the general rule the "
    "assistant must follow, add any task-specific facts the feedback reveals, and keep what "
    "already works."
)


def test_find_echo_catches_the_templates_own_words_and_headings() -> None:
    assert find_echo(LEAK, DEFAULT_TEMPLATE) is not None
    assert find_echo("Advice on its answers: give the opposite.", ADVICE_TEMPLATE) is not None
    assert find_echo("Give the opposite of the word below.", DEFAULT_TEMPLATE) is None
    # ordinary words of the template are not an echo, nor a heading's words without its colon
    assert find_echo("Follow the current instruction and answer.", DEFAULT_TEMPLATE) is None
    # what the parent prompt already said is not the proposal's echo
    assert find_echo(LEAK, DEFAULT_TEMPLATE, parent=LEAK) is None


def test_find_echo_names_the_same_phrase_in_every_process() -> None:
    # the phrase goes into the retry prompt; picked from a set, it followed the process's string
    # hashing, and the same demo run asked the reflection model different retry prompts
    code = (
        "from policyopt.gepa.reflection import DEFAULT_TEMPLATE as T\n"
        "from policyopt.proposals import find_echo\n"
        f"print(find_echo({LEAK!r}, T))"
    )
    named = set()
    for hash_seed in ("0", "1", "2", "3", "4", "5"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        named.add(done.stdout.strip())
    # the first run of the template's words that the answer repeats, in the template's order
    assert named == {find_echo(LEAK, DEFAULT_TEMPLATE)}
    assert named == {"state the general rule the assistant must follow"}


def test_the_loop_retries_an_echo_and_counts_it() -> None:
    lm = ScriptedLM([f"```\n{LEAK}\n```", "```\nGive the opposite of the word.\n```"])
    loop = ProposalLoop(JournaledLM(lm, journal=None), max_retries=2, max_chars=2000)
    from policyopt.proposals import echo_guard

    text = loop.propose(
        "1/0",
        lambda attempt, reason: f"attempt {attempt}: {reason}",
        current="Answer.",
        guards=[echo_guard(DEFAULT_TEMPLATE, "Answer.")],
    )
    assert text == "Give the opposite of the word."
    assert loop.rejections == {ECHOES_PROMPT: 1}
    assert "repeats the request's own words" in lm.prompts[1]
    failing = ProposalLoop(
        JournaledLM(ScriptedLM([], fail_with=RuntimeError("down")), journal=None, on_error=print),
        max_retries=1,
        max_chars=100,
    )
    assert failing.propose("k", lambda *_: "p") is FAILED


def echoing_lm(*_: Any) -> ScriptedLM:
    """Answers every request with its own last words (the request's instructions, echoed)."""

    def answer(text: str) -> str:
        words = text.replace("`", "").split()[-14:]
        return "```\n" + " ".join(words) + "\n```"

    return ScriptedLM(answer)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GEPA(reflection_lm=echoing_lm(), max_rollouts=60, progress=False),
        lambda: OPRO(meta_lm=echoing_lm(), max_rollouts=60, progress=False),
        lambda: MIPRO(
            proposer_lm=echoing_lm(),
            max_rollouts=120,
            num_candidates=3,
            num_trials=4,
            progress=False,
        ),
    ],
    ids=["gepa", "opro", "mipro"],
)
def test_no_optimizer_returns_or_scores_an_echo(make: Any) -> None:
    program, train, val = keyword_task()
    result = make().optimize(program, train, val)
    assert len(result.candidates) == 1 and result.best_prompt == "Solve the task."
    assert result.details["rejections"][ECHOES_PROMPT] > 0  # type: ignore[index]


def test_the_kit_guards_reject_repeats_and_copied_examples() -> None:
    from policyopt.feedback import make_records
    from policyopt.proposals import DUPLICATE, copy_guard, repeat_guard

    seen = ["Answer the question."]
    repeat = repeat_guard(seen)
    assert (repeat("Answer  the\nquestion.") or ("",))[0] == DUPLICATE  # whitespace aside
    assert repeat("Answer briefly.") is None
    seen.append("Answer briefly.")  # read at each call: the optimizer keeps adding to it
    assert repeat("Answer briefly.") is not None
    records = make_records([({"id": 1, "word": "hot"}, "warm", 0.0, "It should be 'cold'.")])
    copies = copy_guard("Give the opposite.", records)
    code, retry = copies("Give the opposite: hot becomes cold.") or ("", "")
    assert code == "copies_example" and "state the general rule" in retry
    assert copies("Give the opposite of the word.") is None
    # what the parent already says is not a copy
    assert copy_guard("Say cold for hot.", records)("Say cold for hot, always.") is None
