"""optimize_anything (issue 25): single-task, multi-task and train/val search through the same
optimizers, a target-score stop, objective and background in every proposal prompt and in the
run's identity, and side information from policyopt.log reaching the reflection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import policyopt
from policyopt import optimize_anything
from policyopt.errors import ConfigError, StateError
from policyopt.testing import ScriptedLM

OBJECTIVE = "Make the text contain four x characters."
BACKGROUND = "Each x is worth a quarter point."


def grows() -> ScriptedLM:
    """Proposes the best text shown (GEPA's current version, OPRO's best) plus one ' x'."""

    def answer(prompt: str) -> str:
        current = re.search(r"Current version:\n```\n(.*?)\n```", prompt, re.S)
        if current is not None:
            best = current.group(1)
        else:
            entries = re.findall(r"text: (.*)\nscore: (\d+)", prompt)
            best = entries[-1][0] if entries else "start"
        return f"```\n{best} x\n```"

    return ScriptedLM(answer)


def quarters(candidate: str) -> float:
    return min(1.0, candidate.count("x") / 4)


def run(optimizer: str = "gepa", **kwargs: Any) -> tuple[policyopt.OptimizationResult, ScriptedLM]:
    lm = kwargs.pop("lm", None) or grows()
    options: dict[str, Any] = {
        "lm": lm,
        "optimizer": optimizer,
        "max_rollouts": 40,
        "progress": False,
        "n_jobs": 1,
    }
    options.update(kwargs)
    evaluate = options.pop("evaluate", quarters)
    return optimize_anything("start", evaluate, **options), lm


@pytest.mark.parametrize("optimizer", ["gepa", "opro"])
def test_single_task_search_stops_at_the_target_score(optimizer: str) -> None:
    result, _ = run(optimizer, target_score=0.5)
    assert result.details["search"] == "single_task"
    assert result.stop_reason == "perfect_score"
    assert result.best_score == 0.5  # stopped at the target, below the top of score_range
    assert result.best_prompt.count("x") == 2  # type: ignore[union-attr]
    assert all(list(c.val_scores) == ["0"] for c in result.candidates)  # the one task


@pytest.mark.parametrize("optimizer", ["gepa", "opro"])
def test_single_task_search_without_a_target_runs_to_the_top(optimizer: str) -> None:
    result, _ = run(optimizer)
    assert result.stop_reason == "perfect_score" and result.best_score == 1.0


def test_single_task_search_stops_at_the_budget_when_the_target_is_out_of_reach() -> None:
    result, _ = run("gepa", evaluate=lambda c: 0.1, max_rollouts=6)
    assert result.stop_reason in {"budget", "stalled", "lm_call_limit"}
    assert result.n_rollouts <= 6 and result.best_score == 0.1


def test_an_async_single_task_evaluate() -> None:
    async def scored(candidate: str) -> float:
        return quarters(candidate)

    result, _ = run("gepa", evaluate=scored, target_score=0.75)
    assert result.best_score == 0.75


def test_multi_task_search_validates_on_its_problems() -> None:
    problems = [{"id": f"q{i}", "need": i} for i in range(1, 5)]

    def solved(candidate: str, problem: dict[str, Any]) -> float:
        return float(candidate.count("x") >= problem["need"])

    # every problem in each minibatch: the scripted LM's one-step proposals always improve
    result, _ = run("gepa", evaluate=solved, dataset=problems, max_rollouts=80, minibatch_size=4)
    assert result.details["search"] == "multi_task"
    assert set(result.candidates[0].val_scores) == {"q1", "q2", "q3", "q4"}
    assert result.best_score == 1.0


def test_train_val_search_chooses_on_the_valset() -> None:
    train = [{"id": f"t{i}", "need": 1} for i in range(3)]
    val = [{"id": f"v{i}", "need": 2} for i in range(2)]

    def solved(candidate: str, problem: dict[str, Any]) -> float:
        return float(candidate.count("x") >= problem["need"])

    result, _ = run("opro", evaluate=solved, dataset=train, valset=val, max_rollouts=60)
    assert result.details["search"] == "generalization"
    assert set(result.candidates[0].val_scores) == {"v0", "v1"}


def test_mipro_refuses_single_task_search_in_one_line_and_stops_at_a_target() -> None:
    with pytest.raises(ConfigError, match=r"^mipro cannot search a single task \(it needs"):
        run("mipro")
    # a multi-task search stops at the target (MIPRO's perfect_score) before any proposal
    result, lm = run("mipro", evaluate=lambda c, e: 0.5, dataset=[{"id": "a"}], target_score=0.5)
    assert (result.stop_reason, result.best_score, result.n_rollouts) == ("perfect_score", 0.5, 1)
    assert lm.usage.calls == 0


def test_the_evaluator_arity_must_fit_the_search() -> None:
    with pytest.raises(ConfigError, match=r"single-task search.*needs 2 arguments"):
        run(evaluate=lambda candidate, example: 1.0)
    with pytest.raises(ConfigError, match=r"multi-task search.*takes 1 positional"):
        run(evaluate=quarters, dataset=[{"id": "a"}])
    with pytest.raises(ConfigError, match="A valset needs a dataset"):
        run(valset=[{"id": "a"}])
    with pytest.raises(ConfigError, match="'evaluate' parameter must be callable"):
        run(evaluate="quarters")

    def optional_example(candidate: str, example: Any = None) -> float:
        return quarters(candidate)

    result, _ = run(evaluate=optional_example, target_score=0.25)  # callable with one argument
    assert result.best_score == 0.25


@pytest.mark.parametrize("optimizer", ["gepa", "opro", "mipro"])
def test_objective_and_background_head_every_proposal_prompt(optimizer: str) -> None:
    problems = [{"id": f"q{i}", "need": 1 + i % 2} for i in range(6)]

    def solved(candidate: str, problem: dict[str, Any]) -> float:
        return float(candidate.count("x") >= problem["need"])

    lm = ScriptedLM(lambda prompt: "```\nstart x x\n```")
    run(
        optimizer,
        lm=lm,
        evaluate=solved,
        dataset=problems,
        objective=OBJECTIVE,
        background=BACKGROUND,
        max_rollouts=60,
    )
    proposals = [p for p in lm.prompts if "describe what this dataset" not in p]
    assert proposals
    head = f"Objective: {OBJECTIVE}\n\nBackground:\n{BACKGROUND}\n\n"
    assert all(p.startswith(head) for p in proposals), proposals[0][:300]


def test_without_objective_the_prompts_are_unchanged() -> None:
    _, lm = run("gepa", target_score=0.25)
    assert lm.prompts and not any("Objective:" in p for p in lm.prompts)


def test_a_resume_with_another_objective_is_a_changed_identity(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    first, _ = run("gepa", objective=OBJECTIVE, run_dir=run_dir, target_score=0.5)
    again, _ = run("gepa", objective=OBJECTIVE, run_dir=run_dir, target_score=0.5)
    assert again.best_prompt == first.best_prompt
    with pytest.raises(StateError, match="objective"):
        run("gepa", objective="Something else.", run_dir=run_dir, target_score=0.5)
    with pytest.raises(StateError, match="background"):
        run("gepa", objective=OBJECTIVE, background="New.", run_dir=run_dir, target_score=0.5)


def test_logged_side_information_reaches_the_reflection() -> None:
    def noisy(candidate: str) -> float:
        policyopt.log(f"the text has {candidate.count('x')} x characters")
        return quarters(candidate)

    _, lm = run("gepa", evaluate=noisy, target_score=0.5)
    assert "Feedback: the text has 0 x characters" in lm.prompts[0]


def test_the_same_seed_gives_the_same_run() -> None:
    one, _ = run("opro", seed=3, target_score=0.75)
    two, _ = run("opro", seed=3, target_score=0.75)
    assert [c.prompt for c in one.candidates] == [c.prompt for c in two.candidates]
    assert one.n_rollouts == two.n_rollouts


def test_a_program_objective_must_be_text() -> None:
    with pytest.raises(ConfigError, match="'objective' parameter of Program must be a non-empty"):
        policyopt.Program("p", lambda p, e: 1.0, objective="  ")


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (
            "```python\ndef f():\n    return 1\n```\n\nThis returns one. ```python\nf(",
            "def f():\n    return 1",
        ),
        ("```\nfirst\n```\nthen ```\nsecond\n```\nand ```", "second"),
        ("no fence at all", "no fence at all"),
    ],
)
def test_an_artifact_keeps_its_last_complete_block_of_a_cut_off_answer(
    answer: str, text: str
) -> None:
    from policyopt.proposals import parse_complete

    parsed = parse_complete({"text": answer, "finish_reason": "length"})
    if "```" in answer:
        assert (parsed.text, parsed.balanced, parsed.truncated) == (text, True, False)
    else:  # nothing complete to keep: still cut off
        assert parsed.truncated


@pytest.mark.parametrize("optimizer", ["gepa", "opro"])
def test_a_rambling_cut_off_answer_still_proposes_its_block(optimizer: str) -> None:
    lm = ScriptedLM(lambda prompt: "```\nstart x x\n```\n\nThis adds two x. ```\nstart")
    lm.finish_reason = "length"
    result, _ = run(optimizer, lm=lm, target_score=0.5)
    assert result.best_prompt == "start x x" and result.stop_reason == "perfect_score"


def test_the_readme_example_runs_as_printed_with_a_scripted_lm() -> None:
    from policyopt.tasks.code import PALINDROME_REFERENCE

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Any text artifact (`optimize_anything`)\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    code = match.group(1)
    assert 'lm="openai/gpt-4o-mini"' in code
    fixed = ScriptedLM(lambda prompt: f"```python\n{PALINDROME_REFERENCE}```")
    space: dict[str, Any] = {"SCRIPTED": fixed}
    exec(code.replace('lm="openai/gpt-4o-mini"', "lm=SCRIPTED, progress=False"), space)
    result = space["result"]
    assert result.details["search"] == "single_task" and result.best_score == 1.0
    assert "# got False" in fixed.prompts[0]  # the logged assertions reached the reflection
