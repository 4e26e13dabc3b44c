"""Unusable answers become rare: a proposal prompt asks for what fits the LM's token limit, and a
reason whose re-asks keep failing the same way is not re-asked again in the run (issue 22)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO
from policyopt.feedback import answer_words, length_note
from policyopt.lm.base import Completion, Messages, as_messages
from policyopt.proposals import ECHOES_PROMPT, GIVE_UP_AFTER, ProposalLoop, echo_guard
from policyopt.runtime import call_all
from policyopt.state.memo import JournaledLM
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import (
    CountingEvaluate,
    _Crash,
    comparable,
    keyword_reflection_lm,
    keyword_task,
)

ADVICE = "Give the opposite of the word."


class CutLM(ScriptedLM):
    """A ScriptedLM whose answers ending in ``...`` stop at the token limit (finish "length")."""

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        done = super().complete(prompt, **kwargs)
        return replace(done, finish_reason="length") if done.text.endswith("...") else done


def loop_of(lm: ScriptedLM, **kwargs: Any) -> ProposalLoop:
    return ProposalLoop(JournaledLM(lm, journal=None), max_retries=2, max_chars=2000, **kwargs)


def propose(loop: ProposalLoop, key: str, **kwargs: Any) -> Any:
    return loop.propose(key, lambda attempt, reason: f"{key} attempt {attempt}: {reason}", **kwargs)


# ---------------------------------------------------------------- asking for what fits


def test_the_length_asked_for_comes_from_the_lms_token_limit() -> None:
    from policyopt.lm.local import LocalLM

    # the small-model preset's reflection LM answers at most 48 tokens: 24 words are asked for
    local = JournaledLM(LocalLM.for_reflection(), journal=None)
    assert local.answer_tokens == 48
    assert ProposalLoop(local, max_retries=2, max_chars=300).length == ", in at most 24 words"
    assert JournaledLM(ScriptedLM([], max_tokens=96), journal=None).answer_tokens == 96
    # no known limit: nothing is stated (the prompts are as they were)
    assert loop_of(ScriptedLM([])).length == ""
    assert answer_words(None) is None and length_note(None) == ""
    assert answer_words(1) == 1


def optimizers(lm: ScriptedLM) -> list[Any]:
    return [
        GEPA(reflection_lm=lm, max_rollouts=40, reflection_template="advice", progress=False),
        GEPA(reflection_lm=lm, max_rollouts=40, reflection_template="compact", progress=False),
        GEPA(reflection_lm=lm, max_rollouts=40, progress=False),
        OPRO(meta_lm=lm, max_rollouts=40, meta_template="compact", progress=False),
        OPRO(meta_lm=lm, max_rollouts=40, progress=False),
        MIPRO(proposer_lm=lm, max_rollouts=60, num_candidates=2, num_trials=2, progress=False),
        MIPRO(
            proposer_lm=lm,
            max_rollouts=60,
            num_candidates=2,
            num_trials=2,
            instruction_proposer="advice",
            progress=False,
        ),
    ]


@pytest.mark.parametrize(
    "index",
    range(7),
    ids=["gepa-advice", "gepa-compact", "gepa", "opro-compact", "opro", "mipro", "mipro-advice"],
)
def test_every_short_answer_prompt_states_the_length_the_limit_fits(index: int) -> None:
    lm = ScriptedLM(lambda _: f"```\nSolve the task with alpha {len(_)}.\n```", max_tokens=48)
    program, train, val = keyword_task()
    optimizers(lm)[index].optimize(program, train, val)
    asks = [p for p in lm.prompts if "describe what this dataset" not in p]
    assert asks and all("in at most 24 words" in p for p in asks)


def test_a_cut_off_answer_is_re_asked_for_one_that_fits() -> None:
    lm = CutLM(["Give the opposite of the word, and then explain it at length...", ADVICE])
    lm.max_tokens = 48
    loop = loop_of(lm)
    assert propose(loop, "1") == ADVICE
    retry = lm.prompts[1]
    assert "cut off at the token limit" in retry and "write at most 24 words" in retry
    # without a known limit the retry still says why, and asks for no length
    bare = CutLM(["Give the opposite of the word, and then...", ADVICE])
    assert propose(loop_of(bare), "1") == ADVICE
    assert "cut off at the token limit" in bare.prompts[1] and "words" not in bare.prompts[1]


# ---------------------------------------------------------------- giving up on a reason


def test_a_model_that_always_answers_cut_off_stops_being_re_asked() -> None:
    lm = CutLM([], default="Give the opposite of the word and then...")
    loop = loop_of(lm)
    calls = []
    for key in "abcde":
        before = lm.calls
        assert propose(loop, key) is None
        calls.append(lm.calls - before)
    # two proposals re-ask twice each (4 re-asks cut off again >= GIVE_UP_AFTER); then none
    assert GIVE_UP_AFTER == 3
    assert calls == [3, 3, 1, 1, 1]
    assert loop.given_up == {"cut_off"}
    assert loop.reasks_skipped == {"cut_off": 3}
    assert loop.rejections == {"cut_off": 9}


def test_a_model_that_always_echoes_stops_being_re_asked_for_echoes_only() -> None:
    template = "Rewrite the advice as one instruction to the assistant, please.\nInstruction:"
    echo = "Rewrite the advice as one instruction to the assistant."
    lm = ScriptedLM([echo] * 6 + [echo, "", ADVICE])
    loop = loop_of(lm)
    guard = echo_guard(template, "Answer.")
    for key in "ab":
        assert propose(loop, key, current="Answer.", guards=[guard]) is None
    assert loop.given_up == set() and lm.calls == 6  # settled when the next proposal starts
    # given up on echoes: the echo is dropped at once ...
    assert propose(loop, "c", current="Answer.", guards=[guard]) is None
    assert lm.calls == 7 and loop.reasks_skipped == {ECHOES_PROMPT: 1}
    # ... while another reason is still re-asked (the empty answer is, and mended)
    assert propose(loop, "d", current="Answer.", guards=[guard]) == ADVICE
    assert lm.calls == 9 and loop.given_up == {ECHOES_PROMPT}


def test_a_model_that_re_asks_rescue_keeps_being_re_asked() -> None:
    cut = "Give the opposite of the word and then..."
    # every first answer cut off and every re-ask mended, but for one proposal (two in a row)
    script = [cut, ADVICE] * 3 + [cut, cut, cut] + [cut, ADVICE] * 3
    lm = CutLM(script)
    loop = loop_of(lm)
    got = [propose(loop, key) for key in "abcdefg"]
    assert got == [ADVICE] * 3 + [None] + [ADVICE] * 3
    loop.settle()
    assert lm.calls == len(script) and loop.given_up == set() and loop.reasks_skipped == {}


def test_the_rule_can_be_turned_off() -> None:
    lm = CutLM([], default="Give the opposite of the word and then...")
    loop = loop_of(lm, give_up_after=None)
    for key in "abcd":
        propose(loop, key)
    assert lm.calls == 12 and loop.reasks_skipped == {}


class OrderedLM(CutLM):
    """Answers by proposal key and attempt (``script[key][attempt]``), each after a delay set per
    key: the test picks which proposal of a batch finishes first."""

    def __init__(self, script: dict[str, list[str]], delays: dict[str, float]) -> None:
        super().__init__(lambda prompt: script[prompt.split()[0]][int(prompt.split()[2][:-1])])
        self.delays = delays

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        text = "\n\n".join(m["content"] for m in as_messages(prompt))
        time.sleep(self.delays[text.split()[0]])
        return super().complete(prompt, **kwargs)


def run_batches(delays: dict[str, float]) -> tuple[Any, ...]:
    cut, ok = "Give the opposite of the word and then...", ADVICE
    script = {
        "a": [cut, cut, ok],  # a re-ask cut off again, then one rescued
        "b": [cut, ok],  # rescued
        "c": [cut, cut, cut],  # two re-asks cut off again
        "d": [cut, cut, ok],
        "e": [cut, ok],
        "f": [cut, ok],
    }
    lm = OrderedLM(script, delays)
    loop = loop_of(lm)
    seen: list[Any] = []
    with loop.batch():
        seen += call_all([lambda k=k: propose(loop, k) for k in "abc"], 3)
        assert loop.given_up == set()  # the rule stays as it was while the batch runs
    # in key order: a (again, rescued), b (rescued), c (again, again): a streak of 2. Counted as
    # they ended, c's two and then a's first would have made 3, and cut_off given up
    after_first = dict(loop._streaks)
    with loop.batch():
        seen += call_all([lambda k=k: propose(loop, k) for k in "de"], 2)
    seen.append(propose(loop, "f"))  # d's first re-ask made 3 in a row: f is not re-asked
    return seen, after_first, sorted(loop.given_up), dict(loop.reasks_skipped), lm.calls


def test_concurrent_proposals_give_the_same_run_whichever_ends_first() -> None:
    orders = [
        {key: 0.0 for key in "abcdef"},
        {"a": 0.05, "b": 0.0, "c": 0.0, "d": 0.0, "e": 0.05, "f": 0.0},  # c before a
        {"a": 0.0, "b": 0.05, "c": 0.1, "d": 0.05, "e": 0.0, "f": 0.0},  # a before c
    ]
    runs = [run_batches(delays) for delays in orders]
    assert runs[0] == runs[1] == runs[2]
    seen, after_first, given_up, skipped, calls = runs[0]
    assert seen == [ADVICE, ADVICE, None, ADVICE, ADVICE, None]
    assert after_first == {"cut_off": 2}
    assert given_up == ["cut_off"] and skipped == {"cut_off": 1}
    assert calls == 3 + 2 + 3 + 3 + 2 + 1


class HalfCutLM(ScriptedLM):
    """The keyword reflection LM, with the answers to two prompts in three cut off."""

    def __init__(self) -> None:
        super().__init__(keyword_reflection_lm().script, max_tokens=48)

    def complete(self, prompt: str | Messages, /, **kwargs: Any) -> Completion:
        done = super().complete(prompt, **kwargs)
        text = "\n\n".join(m["content"] for m in as_messages(prompt))
        cut = sum(map(ord, text)) % 3 != 0
        return replace(done, finish_reason="length") if cut else done


def gepa_run(run_dir: Path, evaluate: CountingEvaluate, lm: ScriptedLM) -> Any:
    program, train, val = keyword_task(evaluate=evaluate)
    gepa = GEPA(
        reflection_lm=lm,
        max_rollouts=150,
        n_jobs=3,
        proposals_per_reflection=3,
        progress=False,
        run_dir=str(run_dir),
    )
    return gepa.optimize(program, train, val)


def test_a_resumed_run_gives_up_where_the_unbroken_one_did(tmp_path: Path) -> None:
    whole_lm = HalfCutLM()
    whole = gepa_run(tmp_path / "whole", CountingEvaluate(), whole_lm)
    assert whole.details["reasks_skipped"].get("cut_off", 0) > 0  # the rule fired in this run
    assert comparable(gepa_run(tmp_path / "again", CountingEvaluate(), HalfCutLM())) == (
        comparable(whole)
    )
    broken = CountingEvaluate(crash_after=whole.n_rollouts // 2)
    with pytest.raises(_Crash):
        gepa_run(tmp_path / "broken", broken, HalfCutLM())
    resumed = gepa_run(tmp_path / "broken", CountingEvaluate(), HalfCutLM())
    assert comparable(resumed) == comparable(whole)
    assert resumed.details["reasks_skipped"] == whole.details["reasks_skipped"]


def test_show_says_how_many_re_asks_were_skipped_and_why(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from policyopt.cli import app

    result = gepa_run(tmp_path / "run", CountingEvaluate(), HalfCutLM())
    skipped = result.details["reasks_skipped"]["cut_off"]
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "run")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert f"re-asks skipped (the LM kept failing that way): cut_off {skipped}" in shown.stdout
    data = CliRunner().invoke(app, ["show", str(tmp_path / "run"), "--json"])
    assert json.loads(data.stdout)["reasks_skipped"] == {"cut_off": skipped}
