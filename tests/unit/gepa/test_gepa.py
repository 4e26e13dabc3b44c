"""GEPA end to end on synthetic tasks with a scripted reflection LM."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyopt import GEPA, OptimizationResult, Program, Score
from policyopt.errors import ConfigError, StateError
from policyopt.events import BatchDone, CandidateProposed, Event
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import (
    CountingEvaluate,
    keyword_reflection_lm,
    keyword_task,
)


def gepa(**kwargs: Any) -> GEPA:
    kwargs.setdefault("reflection_lm", keyword_reflection_lm())
    kwargs.setdefault("max_rollouts", 300)
    return GEPA(progress=False, **kwargs)


def test_reaches_the_best_possible_score_well_inside_the_budget() -> None:
    program, train, val = keyword_task()
    result = gepa(max_rollouts=400).optimize(program, train, val)
    assert result.best_score == 1.0
    assert result.stop_reason == "perfect_score"
    assert result.n_rollouts <= 300  # well inside the 400 budget
    assert all(word in result.best_prompt for word in ("alpha", "beta", "gamma", "delta"))
    best = result.candidates[result.best_candidate]
    assert best.val_score == 1.0 and best.found_at_rollout <= result.n_rollouts
    # lineage: every non-seed candidate has parents that exist and were found earlier
    for cand in result.candidates[1:]:
        assert cand.parents and all(p < cand.index for p in cand.parents)


def test_the_seed_is_scored_first_and_never_lost() -> None:
    program, train, val = keyword_task()
    result = gepa(max_rollouts=12).optimize(program, train, val)  # exactly the valset
    assert result.n_rollouts == 12 and result.stop_reason == "budget"
    assert result.best_prompt == "Solve the task." and len(result.candidates) == 1


def test_a_budget_below_the_valset_is_a_clear_error() -> None:
    program, train, val = keyword_task()
    with pytest.raises(ConfigError, match=r"cannot even score the seed prompt on the valset"):
        gepa(max_rollouts=5).optimize(program, train, val)


def two_part_task() -> tuple[Program, list[dict[str, str]], list[dict[str, str]]]:
    """Component 'rules' must hold the keyword of kind-A examples, 'facts' that of kind B."""

    def evaluate(prompt: dict[str, str], example: dict[str, str]) -> Score:
        part = prompt["rules"] if example["kind"] == "A" else prompt["facts"]
        ok = example["need"] in part
        return Score(float(ok), feedback=None if ok else f"lacks the word {example['need']}")

    words_a, words_b = ["red", "green"], ["cat", "dog"]
    data = [{"kind": "A", "need": w} for w in words_a] + [{"kind": "B", "need": w} for w in words_b]
    val = [{"id": f"v{i}", **ex} for i, ex in enumerate(data * 2)]
    return Program({"rules": "Be brief.", "facts": "Know things."}, evaluate), data * 2, val


def component_lm() -> ScriptedLM:
    """Adds every missing word of the component it is asked about, and nothing else."""

    def reflect(text: str) -> str:
        name = re.search(r'the "(\w+)" part', text).group(1)  # type: ignore[union-attr]
        current = re.search(r"```\n(.*?)\n```", text, re.S).group(1)  # type: ignore[union-attr]
        wanted = {"rules": {"red", "green"}, "facts": {"cat", "dog"}}[name]
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text)) & wanted)
        return f"```\n{current} {' '.join(missing) or 'more'}\n```"

    return ScriptedLM(reflect)


def test_merge_combines_parents_that_fixed_different_examples() -> None:
    program, train, val = two_part_task()
    optimizer = gepa(
        reflection_lm=component_lm(),
        max_rollouts=200,
        minibatch_size=4,
        proposals_per_iteration=2,
        max_accepted_per_iteration=2,
        n_jobs=2,
    )
    result = optimizer.optimize(program, train, val)
    merges = [c for c in result.candidates if c.origin == "merge"]
    assert merges, result.details["counts"]
    merged = merges[0]
    first, second = (result.candidates[p] for p in merged.parents)
    # each parent fixed different examples; the merge is at least as good as both
    fixed_first = {k for k, v in first.val_scores.items() if v == 1.0}
    fixed_second = {k for k, v in second.val_scores.items() if v == 1.0}
    assert fixed_first - fixed_second and fixed_second - fixed_first
    assert merged.val_score > max(first.val_score, second.val_score)
    assert result.best_score == 1.0


def test_merge_works_with_a_tiny_valset_and_a_zero_scoring_ancestor() -> None:
    """The reference never merges below 5 val examples and crashes on a 0-score ancestor."""
    program, train, val = two_part_task()
    result = gepa(
        reflection_lm=component_lm(),
        max_rollouts=200,
        minibatch_size=4,
        proposals_per_iteration=2,
        max_accepted_per_iteration=2,
        n_jobs=2,
    ).optimize(program, train, val[:3])
    assert result.candidates[0].val_score == 0.0  # the seed (the ancestor) scores 0
    assert result.details["counts"]["merges_tried"] >= 1  # type: ignore[index]


def test_emits_events_for_every_candidate() -> None:
    program, train, val = keyword_task()
    seen: list[Event] = []
    result = gepa(listeners=[seen.append]).optimize(program, train, val)
    proposed = [e for e in seen if isinstance(e, CandidateProposed)]
    assert [e.candidate for e in proposed] == [c.index for c in result.candidates]
    assert proposed[0].origin == "seed" and proposed[0].prompt == "Solve the task."
    kinds = [e.kind for e in seen]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and "new_best" in kinds


@pytest.mark.parametrize("strategy", ["pareto", "current_best", "epsilon_greedy"])
@pytest.mark.parametrize("components", ["round_robin", "all"])
def test_every_selection_strategy_solves_the_task(strategy: str, components: str) -> None:
    program, train, val = keyword_task()
    result = gepa(
        max_rollouts=500, candidate_selection=strategy, component_selection=components
    ).optimize(program, train, val)
    assert result.best_score == 1.0


def test_rejects_empty_unchanged_and_cut_off_proposals_without_spending_rollouts() -> None:
    program, train, val = keyword_task(evaluate=CountingEvaluate())
    answers = ["```\n\n```", "```\nSolve the task.\n```", "```\nHalf an instr", "no fences here"]
    lm = ScriptedLM(answers, default="```\nSolve the task.\n```")
    result = gepa(
        reflection_lm=lm, max_rollouts=60, proposals_per_iteration=1, n_jobs=1, patience=3
    ).optimize(program, train, val)
    rejections = result.details["rejections"]
    # counted by reason code: empty, the current text again, an unclosed fence
    assert {"empty", "unchanged", "unparsable"} <= set(rejections)  # type: ignore[arg-type]
    # "no fences here" is a valid (whole-answer) proposal and is the only child evaluated
    assert result.details["counts"]["proposed"] == 1  # type: ignore[index]


def test_stops_on_a_stop_file(tmp_path: Path) -> None:
    program, train, val = keyword_task()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "STOP").touch()
    result = gepa(run_dir=str(tmp_path / "run")).optimize(program, train, val)
    assert result.stop_reason == "stop_file" and len(result.candidates) == 1


def test_stops_on_time_cost_and_patience() -> None:
    program, train, val = keyword_task()
    slow_lm = ScriptedLM(lambda text: (time.sleep(0.3), "```\nx\n```")[1])
    result = gepa(reflection_lm=slow_lm, max_time_s=0.5).optimize(program, train, val)
    assert result.stop_reason == "time_limit"
    stuck = ScriptedLM(lambda text: "```\nSolve the task. maybe\n```")
    result = gepa(reflection_lm=stuck, patience=2).optimize(program, train, val)
    assert result.stop_reason == "no_improvement"


def test_ctrl_c_ends_cleanly_with_a_valid_result() -> None:
    calls = {"n": 0}

    def evaluate(prompt: str, example: dict[str, str]) -> float:
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return float(example["need"] in prompt)

    _, train, val = keyword_task()
    result = gepa(n_jobs=1).optimize(Program("Solve the task.", evaluate), train, val)
    assert result.stop_reason == "interrupted"
    assert OptimizationResult.from_json(result.to_json()) == result


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    program, train, val = keyword_task()
    gepa(run_dir=str(tmp_path), max_rollouts=40).optimize(program, train, val)
    with pytest.raises(StateError, match="minibatch_size: 3 -> 5"):
        gepa(run_dir=str(tmp_path), minibatch_size=5).optimize(program, train, val)
    # a bigger budget is fine: the run goes on from where it stopped
    more = gepa(run_dir=str(tmp_path), max_rollouts=400).optimize(program, train, val)
    assert more.best_score == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"candidate_selection": "random"}, "candidate_selection"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"reflection_template": "no placeholders"}, "placeholders"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        gepa(**kwargs)


def test_an_unknown_setting_is_a_type_error_that_mypy_also_catches() -> None:
    with pytest.raises(TypeError, match="unknown_knob"):
        gepa(unknown_knob=1)


def test_bad_reflection_lm_and_program() -> None:
    with pytest.raises(ConfigError, match="reflection_lm"):
        GEPA(reflection_lm=42, max_rollouts=10)
    with pytest.raises(ConfigError, match="policyopt.Program"):
        gepa().optimize("a prompt", [1])  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 1000),
    budget=st.integers(12, 120),
    minibatch=st.integers(1, 5),
    proposals=st.integers(1, 3),
    merge=st.booleans(),
)
def test_rollout_count_adds_up(
    seed: int, budget: int, minibatch: int, proposals: int, merge: bool
) -> None:
    """Paid rollouts = evaluate calls = sum of every batch's new rollouts <= budget."""
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    batches: list[Event] = []
    result = gepa(
        max_rollouts=budget,
        seed=seed,
        minibatch_size=minibatch,
        merge=merge,
        proposals_per_iteration=proposals,
        listeners=[batches.append],
    ).optimize(program, train, val)
    paid = sum(e.n_run for e in batches if isinstance(e, BatchDone))
    assert result.n_rollouts == evaluate.total == paid <= budget
    assert max(evaluate.calls.values()) == 1
    assert result.best_score == max(c.val_score for c in result.candidates)
    found = [c.found_at_rollout for c in result.candidates]
    assert found == sorted(found) and found[-1] <= result.n_rollouts


def test_objectives_get_fronts_of_their_own() -> None:
    def evaluate(prompt: str, example: dict[str, str]) -> Score:
        ok = example["need"] in prompt
        return Score(
            float(ok),
            feedback=None if ok else f"The prompt lacks the word {example['need']}.",
            objectives={"brevity": 1.0 / len(prompt)},
        )

    _, train, val = keyword_task()
    result = gepa(max_rollouts=150).optimize(Program("Solve the task.", evaluate), train, val)
    front = result.details["pareto_front"]
    assert "v0" in front and "v0::brevity" in front  # type: ignore[operator]
    # the short seed is best on brevity everywhere, so it stays on the front
    assert 0 in front["v0::brevity"]["candidates"]  # type: ignore[index]
    assert 0 in result.details["non_dominated"]  # type: ignore[operator]


def test_run_dir_holds_json_state_with_rng_and_sampler(tmp_path: Path) -> None:
    from policyopt.gepa.config import RESUMABLE_CHANGES
    from policyopt.state.rundir import RunDir

    program, train, val = keyword_task()
    result = gepa(run_dir=str(tmp_path), max_rollouts=80).optimize(program, train, val)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.json",
        "journal.jsonl",
        "state.json",
        "events.jsonl",
        "result.json",
    }
    state = RunDir.read_state(tmp_path)
    assert state is not None and state["stop_reason"] == result.stop_reason
    # the kit's step loop writes the run's part, GEPA its own (counts, merges, sampler, RNGs)
    assert (state["step"], state["best"]) == (result.details["iterations"], result.best_candidate)
    assert state["counts"] == result.details["counts"] and "merges_due" in state
    assert set(state["rng"]) == {"parent", "sampler", "merge"}
    assert {"epoch", "position", "order"} <= set(state["sampler"])
    assert len(state["candidates"]) == len(result.candidates)
    assert "max_rollouts" in RESUMABLE_CHANGES
