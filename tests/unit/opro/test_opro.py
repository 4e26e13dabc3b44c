"""OPRO with a scripted meta LM: improvement, meta-prompt content, stops, settings, registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from policyopt.errors import ConfigError
from policyopt.events import CandidateEvaluated, Event, NewBest, RunFinished, RunStarted
from policyopt.opro import OPRO, OPROSettings, estimate
from policyopt.opro.meta import Exemplar, Scored, parse_answer, render_exemplars, render_history
from policyopt.registry import get_spec
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import CountingEvaluate, keyword_task
from policyopt.types import Program

_ENTRY = re.compile(r"text: (.*)\nscore: (\d+)")


def keyword_meta_lm(words: int = 1) -> ScriptedLM:
    """A meta LM for the keyword task: the best instruction shown (the last, in ascending
    order) plus ``words`` keywords it lacks, read from the exemplars' feedback or fields."""

    def answer(text: str) -> str:
        entries = _ENTRY.findall(text)
        best = entries[-1][0] if entries else ""
        named = re.findall(r"lacks the word (\w+)|\"need\": \"(\w+)\"", text)
        missing = [w for w in dict.fromkeys(a or b for a, b in named) if w not in best.split()]
        extra = " ".join(missing[:words]) or "carefully"
        return f"Here is a better one.\n```\n{best} {extra}\n```"

    return ScriptedLM(answer)


def opro(**kwargs: Any) -> OPRO:
    kwargs.setdefault("meta_lm", keyword_meta_lm())
    kwargs.setdefault("max_rollouts", 300)
    return OPRO(progress=False, **kwargs)


def test_improves_on_the_seed_within_budget() -> None:
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    events: list[Event] = []
    result = opro(listeners=[events.append]).optimize(program, train, val)
    seed = result.candidates[0]
    assert seed.origin == "seed" and seed.parents == [] and seed.val_score == 0.0
    assert result.best_score > seed.val_score and result.best_score == 1.0
    assert result.stop_reason == "perfect_score"
    assert result.n_rollouts == evaluate.total <= 300
    for c in result.candidates[1:]:
        assert c.origin == "opro" and len(c.parents) == 1 and c.parents[0] < c.index
        assert len(c.val_scores) == len(val) and 0 < c.found_at_rollout <= result.n_rollouts
    assert result.lm_usage["meta"].calls >= result.details["steps"]  # type: ignore[operator]
    details = result.details
    assert details["proposals_made"] == details["proposals_scored"] > 0
    assert details["promoted"] == len(result.candidates) - 1
    # every scored instruction is logged; promoted ones carry their full valset score
    history = details["history"]
    assert isinstance(history, list) and history[0]["text"] == "Solve the task."  # type: ignore[index]
    assert sum(1 for h in history if h.get("candidate") is not None) == len(result.candidates)  # type: ignore[union-attr]
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished and NewBest in kinds
    started = events[0]
    assert isinstance(started, RunStarted) and started.estimate == details["estimate"]
    assert any(isinstance(e, CandidateEvaluated) and e.split == "minibatch" for e in events)


def test_meta_prompt_shows_ascending_scores_and_exemplars() -> None:
    lm = keyword_meta_lm()
    program, train, val = keyword_task()
    opro(meta_lm=lm, max_history=3, n_exemplars=2).optimize(program, train, val)
    assert len(lm.prompts) >= 8
    for prompt in lm.prompts:
        scores = [int(s) for _, s in _ENTRY.findall(prompt)]
        assert 1 <= len(scores) <= 3 and scores == sorted(scores)
        assert all(0 <= s <= 100 for s in scores)
        assert prompt.count("input: ") == 2 and prompt.count("feedback: ") <= 2
        assert '"id"' not in prompt  # example ids mean nothing to the LM
    first = lm.prompts[0]
    assert "text: Solve the task.\nscore: 0" in first
    assert "answer: unsure\nscore: 0\nfeedback: The prompt lacks the word" in first
    # a later prompt shows the improved instructions, best last
    last = _ENTRY.findall(lm.prompts[-1])
    assert last[-1][0] != "Solve the task." and int(last[-1][1]) > 0


def test_without_exemplar_feedback_no_training_rollout_is_paid() -> None:
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    lm = keyword_meta_lm()
    result = opro(meta_lm=lm, exemplar_feedback=False).optimize(program, train, val)
    assert not [key for key in evaluate.calls if key[1].startswith("t")]
    assert all("feedback:" not in p and "answer:" not in p for p in lm.prompts)
    assert '"need": ' in lm.prompts[0]  # the example's own fields: its expected output
    assert result.best_score > result.candidates[0].val_score


def test_history_rendering_and_answer_parsing() -> None:
    scored = [Scored("b", 0.5, True, 0), Scored("a", 0.25, False, 1), Scored("c", 0.5, True, 2)]
    assert render_history(scored, 2, (0.0, 1.0)) == "text: b\nscore: 50\n\ntext: c\nscore: 50"
    assert render_history(scored, 5, (0.0, 2.0)).splitlines()[1] == "score: 12"
    block = render_exemplars(
        [Exemplar({"id": "x", "q": "2+2"}, answer="5", score=0.0, feedback="expected 4")],
        40,
        (0.0, 1.0),
    )
    assert block == 'input: {"q": "2+2"}\nanswer: 5\nscore: 0\nfeedback: expected 4'

    def parse(text: str, finish: str = "stop", **extra: Any) -> tuple[str | None, str | None]:
        return parse_answer({"text": text, "finish_reason": finish, **extra}, {"old one"}, 30)

    assert parse("Sure:\n```\nfirst\n```\nor\n```text\nsecond\n```") == ("second", None)
    assert parse('"Give the opposite."') == ("Give the opposite.", None)
    assert parse("text: [Give the opposite.]") == ("Give the opposite.", None)
    assert parse("old   one")[1] == "the instruction was proposed before"
    assert parse("")[1] == "the new instruction is empty"
    assert "token limit" in str(parse("half an instr", finish="length")[1])
    assert "unclosed" in str(parse("```\nhalf"))
    assert "longer than 30" in str(parse("x" * 31)[1])
    assert parse("fine", capped=10**6)[1] == "answer_too_long"


def test_stops_on_max_steps_patience_and_a_repeating_lm() -> None:
    program, train, val = keyword_task()
    result = opro(max_steps=2).optimize(program, train, val)
    assert result.stop_reason == "max_steps" and result.details["steps"] == 2
    same = ScriptedLM(lambda text: "```\nSolve the task carefully.\n```")
    result = opro(meta_lm=same, patience=3).optimize(program, train, val)
    assert result.stop_reason == "no_improvement" and result.details["steps"] == 3
    result = opro(meta_lm=same, max_lm_calls=1000).optimize(program, train, val)
    assert result.stop_reason == "stalled" and result.details["proposals_scored"] == 1
    assert result.details["proposals_rejected"] == 4 * result.details["steps"] - 1  # type: ignore[operator]
    # by default a repeating LM spends less than the calls the run announced: after
    # GIVE_UP_AFTER re-asks repeated again, a repeat is no longer re-asked, and the run stalls
    result = opro(meta_lm=same).optimize(program, train, val)
    cap = result.details["estimate"]["lm_calls_cap"]  # type: ignore[index]
    assert result.stop_reason == "stalled" and result.lm_usage["meta"].calls < cap
    assert result.details["reasks_skipped"]["duplicate"] > 0  # type: ignore[index]


def test_a_step_the_budget_cannot_pay_is_not_started() -> None:
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    # seed 12 + one step of 4 x 10 minibatch + 3 exemplars + 2 for a promotion = 57
    result = opro(max_rollouts=40).optimize(program, train, val)
    assert result.stop_reason == "budget" and evaluate.total <= 40
    # fewer proposals fit: 12 + (2 x 10 + 2 + up to 6 exemplar runs) <= 40
    assert 1 <= result.details["proposals_made"] <= 2  # type: ignore[operator]


def test_estimate_is_a_forecast_of_the_spend() -> None:
    settings = OPROSettings(max_rollouts=300)
    plan = estimate(settings, 12, 12)
    assert plan["minibatch"] == 10 and plan["rollouts_per_step_max"] == 4 * 10 + 4 * 3 + 2
    assert plan["steps"] == (300 - 12) // (40 + 12 + 1) and plan["meta_calls"] == 4 * plan["steps"]
    assert estimate(OPROSettings(max_rollouts=300, max_steps=2), 12, 12)["steps"] == 2
    whole = estimate(OPROSettings(max_rollouts=300, minibatch_size=None), 12, 12)
    assert whole["minibatch"] == 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"proposals_per_step": 0}, "proposals_per_step"),
        ({"max_history": 0}, "max_history"),
        ({"meta_template": "Write one."}, r"meta_template.*\{history\}"),
        ({"meta_template": "{history} {shots}"}, "only the placeholders"),
        ({"meta_lm": "a/b", "lm": "a/b"}, "not both"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        opro(**kwargs)
    assert "pydantic.dev" not in str(info.value)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="An LM is required: pass meta_lm="):
        OPRO(max_rollouts=10)
    program, train, val = keyword_task()
    with pytest.raises(ConfigError, match="must be a str"):
        opro().optimize(Program({"a": "x", "b": "y"}, program.evaluate), train, val)
    with pytest.raises(ConfigError, match="cannot even score the seed"):
        opro(max_rollouts=5).optimize(program, train, val)


def test_lm_alias_and_the_registry_entry(tmp_path: Path) -> None:
    spec = get_spec("opro")
    assert (spec.cls, spec.lm_param, spec.lm_role) == (OPRO, "meta_lm", "meta")
    plan = spec.plan({}, budget=100, n_train=10, n_val=10, small_model=True)
    assert "{history}" in plan["meta_template"] and plan["max_history"] == 5
    optimizer = spec.build(lm=keyword_meta_lm(), max_rollouts=120, progress=False, **plan)
    program, train, val = keyword_task()
    result = optimizer.optimize(program, train, val)
    assert result.optimizer == "opro" and result.n_rollouts <= 120
    assert result.best_score > result.candidates[0].val_score
    alias = OPRO(lm=keyword_meta_lm(), max_rollouts=60, progress=False, run_dir=str(tmp_path))
    assert alias.optimize(program, train, val).n_rollouts <= 60
    assert (tmp_path / "state.json").exists() and (tmp_path / "journal.jsonl").exists()
