"""The kit's step loop (policyopt.steps): one order of stop rules, one stall and no-new-best
count, one snapshot, and the same stops (perfect score, limits, patience, stalls) for every
optimizer; and the candidate book that loop reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO, Program, Score
from policyopt.book import NewCandidate
from policyopt.events import CandidateEvaluated, CandidateProposed, NewBest
from policyopt.protocol import Optimizer
from policyopt.runtime import RESUMABLE, RunContext, RunSettings
from policyopt.steps import STALL_LIMIT, StepLoop, perfect_score_field, stop_at_perfect_field
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import keyword_meta_lm, keyword_proposer_lm
from policyopt.types import LMUsage


class _Settings(RunSettings):
    perfect_score: float | None = perfect_score_field()
    stop_at_perfect: bool = stop_at_perfect_field()
    patience: int | None = None


def _scored(prompt: str, example: Any) -> Score:
    """A prompt scores the number it ends with."""
    return Score(float(prompt.split()[-1]))


def _context(score: float, tmp_path: Path | None = None, **settings: Any) -> RunContext:
    """A run context on four examples, its seed scored ``score`` on each."""
    data = [{"id": f"e{i}"} for i in range(4)]
    program = Program(f"seed {score}", _scored)
    ctx = RunContext(
        optimizer="test",
        settings=_Settings(
            progress=False,
            run_dir=None if tmp_path is None else str(tmp_path),
            **{"max_rollouts": 100, **settings},
        ),
        resumable=RESUMABLE,
        identity={},
        program=program,
        trainset=data,
        valset=data,
    )
    assert ctx.book.add(f"seed {score}", parents=[], origin="seed") is not None
    return ctx


def _loop(ctx: RunContext, **kwargs: Any) -> StepLoop:
    return StepLoop(ctx, usage=LMUsage, state=lambda: {"own": 1}, **kwargs)


def test_the_perfect_score_comes_first_then_the_optimizers_own_end() -> None:
    ctx = _context(1.0)
    try:
        assert _loop(ctx, end=lambda: "max_steps").reason() == "perfect_score"
    finally:
        ctx.close()
    ctx = _context(1.0, stop_at_perfect=False)
    try:
        assert _loop(ctx, end=lambda: "max_steps").reason() == "max_steps"
    finally:
        ctx.close()
    ctx = _context(0.6, perfect_score=0.5)  # a lower target counts as solved
    try:
        assert _loop(ctx).reason() == "perfect_score"
    finally:
        ctx.close()


def test_steps_that_pay_and_make_nothing_stall_the_run() -> None:
    ctx = _context(0.5)
    try:
        loop = _loop(ctx)
        assert loop.run(lambda: None) == "stalled"
        assert loop.steps == loop.stalled == loop.since_best == STALL_LIMIT
        made = {"n": 0}

        def make() -> None:
            made["n"] += 1

        fresh = _loop(ctx, end=lambda: "max_steps" if fresh.steps >= 15 else None)
        assert fresh.run(make, made=lambda: made["n"]) == "max_steps"
        assert (fresh.steps, fresh.stalled, fresh.since_best) == (15, 0, 15)
        off = _loop(ctx, stall_limit=None, end=lambda: "done" if off.steps >= 12 else None)
        assert off.run(lambda: None) == "done" and off.stalled == 12
    finally:
        ctx.close()


def test_patience_counts_steps_without_a_new_best_and_a_step_may_end_the_run() -> None:
    ctx = _context(0.5, patience=3)
    try:
        scores = iter([0.75, 0.25, 0.5, 0.75])  # one new best, then three steps without

        def step() -> str | None:
            ctx.book.add(f"step {loop.steps} {next(scores)}", parents=[0], origin="test")
            return None

        loop = _loop(ctx)
        assert loop.run(step) == "no_improvement"
        assert (loop.steps, loop.since_best) == (4, 3)
        assert _loop(ctx).run(lambda: "budget") == "budget"
    finally:
        ctx.close()


def test_the_snapshot_holds_the_runs_part_then_the_optimizers(tmp_path: Path) -> None:
    ctx = _context(0.5, tmp_path)
    try:
        loop = _loop(ctx, end=lambda: "max_steps" if loop.steps >= 2 else None)
        assert loop.run(lambda: None) == "max_steps"
        state = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
        assert (state["step"], state["rollouts_used"], state["best"]) == (2, 4, 0)
        assert state["stop_reason"] is None and state["own"] == 1
        assert [c["index"] for c in state["candidates"]] == [0]
        result = loop.finish("max_steps", best=ctx.book.best, role="lm", details={"x": 2})
        state = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
        assert state["stop_reason"] == result.stop_reason == "max_steps"
        assert result.optimizer == "test" and result.best_score == 0.5
        assert result.details["x"] == 2 and "estimate" in result.details
        assert "resume_exact" in result.details and set(result.lm_usage) == {"lm"}
    finally:
        ctx.close()


def test_the_book_scores_what_the_budget_pays_for_in_one_batch_and_announces_each() -> None:
    ctx = _context(0.5, max_rollouts=14)  # the seed paid 4: two more candidates fit, not three
    seen: list[Any] = []
    ctx.events.subscribe(seen.append)
    try:
        new = [NewCandidate(f"c {score}", [0], "test") for score in (0.75, 0.25, 1.0)]
        kept = ctx.book.add_all(new, label="several")
        assert kept is not None and [k.candidate.index for k in kept] == [1, 2]
        assert [len(k.rollouts) for k in kept] == [4, 4] and ctx.engine.rollouts_spent == 12
        announced = [
            (type(e).__name__, e.candidate)
            for e in seen
            if isinstance(e, CandidateProposed | CandidateEvaluated | NewBest)
        ]
        assert announced == [
            ("CandidateProposed", 1),
            ("CandidateProposed", 2),
            ("CandidateEvaluated", 1),
            ("NewBest", 1),
            ("CandidateEvaluated", 2),
        ]
        assert ctx.book.best.index == 1 and ctx.book.add_all(new[2:]) == []
        assert ctx.book.final_choice("mean", 1.0) == {
            "rule": "mean",
            "chosen": 1,
            "highest_mean": 1,
        }
    finally:
        ctx.close()


#: each optimizer with its scripted LM
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], Callable[[], ScriptedLM]]] = {
    "gepa": (lambda lm, **kw: GEPA(reflection_lm=lm, **kw), keyword_reflection_lm),
    "mipro": (
        lambda lm, **kw: MIPRO(proposer_lm=lm, num_candidates=3, num_trials=4, **kw),
        keyword_proposer_lm,
    ),
    "opro": (lambda lm, **kw: OPRO(meta_lm=lm, **kw), keyword_meta_lm),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_stops_at_a_perfect_seed_by_default(name: str) -> None:
    make, make_lm = OPTIMIZERS[name]
    program, train, val = keyword_task()
    solved = Program(program.prompt, lambda prompt, example: Score(1.0))
    lm = make_lm()
    result = make(lm, max_rollouts=200, progress=False).optimize(solved, train, val)
    assert (result.stop_reason, result.n_rollouts, lm.usage.calls) == ("perfect_score", 12, 0)
    lm = make_lm()
    result = make(lm, max_rollouts=200, progress=False, stop_at_perfect=False).optimize(
        solved, train, val
    )
    assert result.stop_reason != "perfect_score" and result.n_rollouts > 12  # it went on


def test_mipro_stops_when_a_promoted_configuration_is_perfect() -> None:
    program, train, val = keyword_task()
    settings: dict[str, Any] = {"num_candidates": 5, "num_trials": 10, "minibatch_size": 6}
    stopped = MIPRO(
        proposer_lm=keyword_proposer_lm(), max_rollouts=300, progress=False, **settings
    ).optimize(program, train, val)
    full = MIPRO(
        proposer_lm=keyword_proposer_lm(),
        max_rollouts=300,
        progress=False,
        stop_at_perfect=False,
        **settings,
    ).optimize(program, train, val)
    assert stopped.stop_reason == "perfect_score" and stopped.best_score == 1.0
    assert full.stop_reason == "trials_done" and full.best_prompt == stopped.best_prompt
    assert stopped.n_rollouts < full.n_rollouts
    assert len(stopped.details["trials"]) < len(full.details["trials"]) == 10


def _repeating() -> ScriptedLM:
    """An optimizer LM that answers every prompt with the same instruction, no better than the
    seed: nothing new after its first answer."""
    return ScriptedLM(lambda text: "```\nSolve the task carefully.\n```")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize(
    ("limit", "reason"),
    [({"max_lm_calls": 2}, "lm_call_limit"), ({"max_time_s": 1e-9}, "time_limit")],
)
def test_every_optimizer_stops_at_the_runs_limits(
    name: str, limit: dict[str, Any], reason: str
) -> None:
    make, make_lm = OPTIMIZERS[name]
    program, train, val = keyword_task()
    lm = make_lm()
    result = make(lm, max_rollouts=300, progress=False, **limit).optimize(program, train, val)
    assert result.stop_reason == reason and lm.usage.calls <= limit.get("max_lm_calls", 0)


#: the optimizers that run the kit's patience and stall rules (MIPRO ends by its trial plan: it
#: has no patience setting, and a batch of trials that pays nothing is no stall)
STEPPED = {"gepa": ("iterations", "reflection"), "opro": ("steps", "meta")}


@pytest.mark.parametrize("name", sorted(STEPPED))
def test_a_repeating_lm_ends_every_run_by_patience_or_the_stall_rule(
    name: str, tmp_path: Path
) -> None:
    make, _ = OPTIMIZERS[name]
    steps, role = STEPPED[name]
    program, train, val = keyword_task()
    result = make(_repeating(), max_rollouts=300, progress=False, patience=3).optimize(
        program, train, val
    )
    assert (result.stop_reason, result.details[steps]) == ("no_improvement", 3)
    assert result.best_candidate == 0  # nothing beat the seed
    result = make(
        _repeating(), max_rollouts=300, progress=False, max_lm_calls=1000, run_dir=str(tmp_path)
    ).optimize(program, train, val)
    assert result.stop_reason == "stalled" and result.lm_usage[role].calls < 1000
    state = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert (state["step"], state["stop_reason"], state["best"]) == (
        result.details[steps],
        "stalled",
        0,
    )
