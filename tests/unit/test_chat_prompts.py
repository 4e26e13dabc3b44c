"""Chat-message prompts: validation, component names, get/set round trips, cache keys, and the
shape through GEPA, MIPRO (demos as turns or inline) and OPRO, resume and ``policyopt show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from policyopt import GEPA, MIPRO, Program, Score
from policyopt.cli import app
from policyopt.errors import ConfigError
from policyopt.opro import OPRO
from policyopt.prompts import MESSAGE_ROLES, PromptShape, component_names, prompt_text
from policyopt.runview.load import load_run
from policyopt.testing.conformance import (
    CHAT_SEED,
    ChatEvaluate,
    comparable,
    keyword_reflection_lm,
    keyword_task,
)
from policyopt.testing.fake_lm import ScriptedLM
from policyopt.types import OptimizationResult, prompt_key

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Question follows."}


# ---------------------------------------------------------------------- validation and names
@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ([], "empty list"),
        (["hi"], "Message 0 of the 'prompt' is str 'hi'; each message must be a dict"),
        ([{"role": "bot", "content": "x"}], "role 'bot'; use one of system, user"),
        ([SYSTEM, {"role": "user", "content": ["a"]}], "Message 1 .* content of list.*a str"),
        ([{"role": "user"}], "has no 'content'"),
        ([{"content": "x"}], "has no 'role'"),
        ([{"role": "user", "content": "x", "tool": 1}], "key 'tool'; a message takes only"),
        ([{"role": "user", "content": "x", "name": ""}], "non-empty str"),
        (
            [{**SYSTEM, "name": "rules"}, {**USER, "name": "rules"}],
            "Messages 0 and 1 .* both named 'rules'; give one of them a distinct 'name'",
        ),
        ([{**USER, "name": "user"}, USER], "both named 'user'"),
        (("a",), "Message 0"),
        (3, "must be a str, a dict.* or a list of chat messages"),
    ],
)
def test_malformed_messages_are_one_clear_error(prompt: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        Program(prompt, lambda p, e: 1.0)
    assert "\n" not in str(info.value)


def test_components_are_named_by_name_key_else_role_and_rank() -> None:
    assert component_names([SYSTEM, USER]) == ["system", "user"]
    few_shot = [SYSTEM, USER, {"role": "assistant", "content": "A."}, USER]
    assert component_names(few_shot) == ["system", "user_1", "assistant", "user_2"]
    named = [{**SYSTEM, "name": "rules"}, USER, {"role": "developer", "content": "d"}]
    assert component_names(named) == ["rules", "user", "developer"]
    assert Program(few_shot, lambda p, e: 1.0).components == list(PromptShape.of(few_shot).names)
    # the instruction-bearing component: the system message if any, else the first
    assert PromptShape.of([USER, SYSTEM]).instruction == "system"
    assert PromptShape.of(few_shot[1:]).instruction == "user_1"
    assert PromptShape.of("text").instruction == "prompt"


def test_cache_keys_are_stable_and_distinct_from_other_shapes() -> None:
    text = "Question follows."
    chat = [dict(USER)]
    assert prompt_key(chat) == prompt_key([{"content": text, "role": "user"}])  # key order
    keys = {
        prompt_key(text),
        prompt_key({"prompt": text}),
        prompt_key({"user": text}),
        prompt_key(chat),
        prompt_key([{"role": "system", "content": text}]),
        prompt_key([{**USER, "name": "q"}]),
    }
    assert len(keys) == 6


def test_prompt_text_shows_roles_and_names() -> None:
    shown = prompt_text([SYSTEM, {**USER, "name": "q"}])
    assert shown == "[system] Be brief.\n[user q] Question follows."


# ---------------------------------------------------------------------- get/set round trip
_texts = st.text(max_size=20)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(MESSAGE_ROLES), "content": _texts},
    optional={
        "name": st.sampled_from(["user", "user_1", "system", "assistant_2"])
        | st.text(alphabet="abcxyz_", min_size=1, max_size=6)
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_message, min_size=1, max_size=8), st.data())
def test_component_get_set_round_trips_on_random_message_lists(
    messages: list[dict[str, str]], data: st.DataObject
) -> None:
    try:
        shape = PromptShape.of(messages)
    except ConfigError as exc:  # only duplicate names are refused
        assert "both named" in str(exc)
        return
    parts = shape.components(messages)
    assert list(parts) == list(shape.names) and len(parts) == len(messages)
    assert shape.shaped(parts) == messages  # get then set: the same prompt
    new = {name: data.draw(_texts) for name in parts}
    rebuilt = shape.shaped(new)
    assert shape.components(rebuilt) == new  # set then get: the new texts
    assert [{k: v for k, v in m.items() if k != "content"} for m in rebuilt] == [
        {k: v for k, v in m.items() if k != "content"} for m in messages
    ]
    turns = [{"role": "user", "content": "in"}, {"role": "assistant", "content": "out"}]
    with_turns = shape.shaped(new, turns=turns)
    at = shape.turn_index
    assert with_turns[at : at + 2] == turns
    assert with_turns[:at] + with_turns[at + 2 :] == rebuilt
    assert all(m["role"] in ("system", "developer") for m in with_turns[:at])


# ---------------------------------------------------------------------- optimizers
def _gepa(**kwargs: Any) -> GEPA:
    kwargs.setdefault("reflection_lm", keyword_reflection_lm())
    kwargs.setdefault("n_jobs", 2)
    kwargs.setdefault("max_rollouts", 120)
    return GEPA(progress=False, **kwargs)


def test_gepa_reflection_sees_component_names_and_contents() -> None:
    lm = keyword_reflection_lm()
    program, train, val = keyword_task(evaluate=ChatEvaluate(), prompt=CHAT_SEED)
    result = _gepa(reflection_lm=lm).optimize(program, train, val)
    asked = "\n".join(lm.prompts)
    assert '(the "system" part' in asked and "Solve the task." in asked
    assert '(the "user" part' in asked and "Here is the input." in asked
    best = result.best_prompt
    assert isinstance(best, list) and [m["role"] for m in best] == ["system", "user"]
    assert best[0]["content"] != "Solve the task." and best[1]["content"] != "Here is the input."


def test_gepa_chat_run_killed_and_resumed_pays_nothing_twice(tmp_path: Path) -> None:
    def run(evaluate: ChatEvaluate, path: Path) -> OptimizationResult:
        program, train, val = keyword_task(evaluate=evaluate, prompt=CHAT_SEED)
        return _gepa(run_dir=str(path), n_jobs=1).optimize(program, train, val)

    whole = ChatEvaluate()
    reference = run(whole, tmp_path / "whole")
    broken = ChatEvaluate(crash_after=whole.total // 2)
    with pytest.raises(BaseException, match="simulated crash"):
        run(broken, tmp_path / "broken")
    rest = ChatEvaluate()
    resumed = run(rest, tmp_path / "broken")
    assert broken.total + rest.total == whole.total
    assert not set(broken.calls) & set(rest.calls)
    assert comparable(resumed) == comparable(reference)
    assert not (whole.problems or broken.problems or rest.problems)


def test_show_and_result_json_keep_the_chat_shape(tmp_path: Path) -> None:
    program, train, val = keyword_task(evaluate=ChatEvaluate(), prompt=CHAT_SEED)
    result = _gepa(run_dir=str(tmp_path / "run")).optimize(program, train, val)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["best_prompt"] == result.best_prompt
    assert saved["candidates"][0]["prompt"] == CHAT_SEED
    view = load_run(tmp_path / "run")
    assert [c.prompt for c in view.candidates] == [c.prompt for c in result.candidates]
    shown = CliRunner().invoke(app, ["show", str(tmp_path / "run"), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["best"]["prompt"] == result.best_prompt
    text = CliRunner().invoke(app, ["show", str(tmp_path / "run")], env={"COLUMNS": "200"})
    assert "[system] Solve the task." in text.stdout and "[user] Here is the input." in text.stdout


def _demo_task() -> tuple[Program, list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Scores 1 only when the answer to the example's word appears as an earlier assistant turn
    or inside the system text (a stand-in for a model that learns from demos)."""
    seen: list[Any] = []
    pairs = [("hot", "cold"), ("up", "down"), ("big", "small"), ("wet", "dry")]
    data = [{"id": w, "word": w, "answer": a} for w, a in pairs]

    def evaluate(prompt: Any, example: dict[str, Any]) -> Score:
        seen.append(prompt)
        texts = " ".join(m["content"] for m in prompt if m["role"] != "user")
        return Score(float("Input:" in texts or "assistant" in [m["role"] for m in prompt]))

    seed = [{"role": "system", "content": "Give the opposite."}, {"role": "user", "content": "?"}]
    return Program(seed, evaluate), data, data, seen


def _proposer() -> ScriptedLM:
    return ScriptedLM(lambda text: "```\nName the opposite word.\n```")


@pytest.mark.parametrize("placement", [None, "turns", "inline"])
def test_mipro_places_demos_as_turns_or_inline(placement: str | None) -> None:
    program, train, val, seen = _demo_task()
    result = MIPRO(
        proposer_lm=_proposer(),
        max_rollouts=80,
        num_candidates=3,
        num_trials=6,
        minibatch_size=4,
        label_key="answer",
        demo_placement=placement,  # type: ignore[arg-type]
        progress=False,
    ).optimize(program, train, val)
    assert result.best_score == 1.0
    best = result.best_prompt
    assert isinstance(best, list) and all(isinstance(p, list) for p in seen)
    assert best[0]["role"] == "system" and best[-1] == {"role": "user", "content": "?"}
    if placement == "inline":
        assert len(best) == 2 and "Input: " in best[0]["content"]
    else:  # turns (the default for a chat prompt): user/assistant pairs after the system one
        middle = best[1:-1]
        assert middle and [m["role"] for m in middle] == ["user", "assistant"] * (len(middle) // 2)
        pairs = {
            (u["content"], a["content"]) for u, a in zip(middle[::2], middle[1::2], strict=True)
        }
        assert pairs <= {(e["word"], e["answer"]) for e in train}
        assert "Input:" not in best[0]["content"]
    # the instruction went into the system message; the user message was never touched
    assert all(p[-1] == {"role": "user", "content": "?"} for p in seen)


def test_mipro_turns_need_a_chat_prompt() -> None:
    program, train, val = keyword_task()
    with pytest.raises(ConfigError, match="demo_placement='turns' needs a chat-message prompt"):
        MIPRO(
            proposer_lm=_proposer(),
            max_rollouts=80,
            num_candidates=2,
            num_trials=2,
            demo_placement="turns",
            progress=False,
        ).optimize(program, train, val)


def test_opro_rewrites_the_system_message_and_still_refuses_dicts() -> None:
    from tests.unit.opro.test_opro import keyword_meta_lm

    evaluate = ChatEvaluate()
    program, train, val = keyword_task(evaluate=evaluate, prompt=CHAT_SEED)
    result = OPRO(meta_lm=keyword_meta_lm(), max_rollouts=120, progress=False).optimize(
        program, train, val
    )
    assert not evaluate.problems and result.best_score > result.candidates[0].val_score
    assert all(c.prompt[1] == CHAT_SEED[1] for c in result.candidates)  # type: ignore[index]
    dict_program = Program({"a": "x", "b": "y"}, evaluate)
    with pytest.raises(ConfigError, match="str or chat messages; got a dict"):
        OPRO(meta_lm=keyword_meta_lm(), max_rollouts=50, progress=False).optimize(
            dict_program, train, val
        )


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_evaluate_that_edits_its_messages_changes_nothing_else(kind: str) -> None:
    inner = ChatEvaluate()

    def edit(messages: Any) -> None:
        messages.append({"role": "user", "content": "the input"})  # the common pattern
        messages[0]["content"] += " (edited)"

    def sync_evaluate(messages: Any, example: dict[str, str]) -> Score:
        score = inner(messages, example)
        edit(messages)
        return score

    async def async_evaluate(messages: Any, example: dict[str, str]) -> Score:
        return sync_evaluate(messages, example)

    evaluate = sync_evaluate if kind == "sync" else async_evaluate
    _, train, val = keyword_task(prompt=CHAT_SEED)
    from tests.unit.opro.test_opro import keyword_meta_lm

    # OPRO hands one list object to every rollout of a candidate (GEPA builds one per rollout)
    opro = OPRO(meta_lm=keyword_meta_lm(), max_rollouts=120, progress=False)
    result = opro.optimize(Program(CHAT_SEED, evaluate), train, val)
    assert inner.total > 0 and not inner.problems, inner.problems[:3]
    assert all("(edited)" not in json.dumps(c.prompt) for c in result.candidates)
    assert all(len(c.prompt) == 2 for c in result.candidates)
    assert result.best_score > result.candidates[0].val_score


def test_gepa_merges_chat_prompts_by_component() -> None:
    """Two lineages that fixed different messages merge into one chat prompt (named messages)."""
    from tests.unit.gepa.test_gepa import component_lm, two_part_task

    dict_program, train, val = two_part_task()
    seed = [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "user", "content": "Know things.", "name": "facts"},
    ]

    def evaluate(messages: Any, example: dict[str, str]) -> Any:
        assert isinstance(messages, list), type(messages)
        return dict_program.evaluate({m["name"]: m["content"] for m in messages}, example)

    result = _gepa(
        reflection_lm=component_lm(),
        max_rollouts=200,
        minibatch_size=4,
        proposals_per_iteration=2,
        max_accepted_per_iteration=2,
    ).optimize(Program(seed, evaluate), train, val)
    merges = [c for c in result.candidates if c.origin == "merge"]
    assert merges, result.details["counts"]
    merged = merges[0]
    assert [(m["role"], m["name"]) for m in merged.prompt] == [
        ("system", "rules"),
        ("user", "facts"),
    ]  # type: ignore[index,union-attr]
    first, second = (result.candidates[p] for p in merged.parents)
    assert merged.val_score > max(first.val_score, second.val_score)
    assert result.best_score == 1.0


def test_a_task_app_on_loopback_receives_chat_messages() -> None:
    """Over HTTP (a real task app on 127.0.0.1) the prompt stays a list of message dicts."""
    from policyopt.remote._serving import serve_in_thread
    from policyopt.remote.taskapp.app import task_app
    from policyopt.remote.taskapp.client import TaskAppClient
    from tests.unit.remote.conftest import API_KEY, DATASET, Scripted

    scripted = Scripted()
    messages = [{"role": "system", "content": "Give the opposite."}, {**USER, "name": "q"}]
    app = task_app(Program(messages, scripted), DATASET, api_key=API_KEY, name="chat")
    with serve_in_thread(app) as url, TaskAppClient(url, API_KEY, retries=1) as client:
        assert client.rollout("hot", messages).score == 1.0
        program = client.program(messages)
        assert program.prompt == messages and program.components == ["system", "q"]
        assert program.evaluate(messages[:1], {"id": "big"}).score == 1.0
    assert [call[0] for call in scripted.calls] == [messages, messages[:1]]
