"""MIPRO from a budget alone: the plan, its cap and checks, and runs that keep within it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyopt import MIPRO
from policyopt.errors import ConfigError
from policyopt.events import RunStarted
from policyopt.mipro.budget import plan_for_budget, smallest_budget, spend
from policyopt.progress import describe_estimate
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import CountingEvaluate, keyword_task


def proposer() -> ScriptedLM:
    """Distinct instructions, one keyword each (so trials differ and some score)."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    count = {"n": 0}

    def answer(text: str) -> str:
        if "describe what this dataset" in text:
            return "Each example needs a keyword."
        count["n"] += 1
        return f"```\nSolve the task, {words[count['n'] % 6]} {count['n']}.\n```"

    return ScriptedLM(answer)


def run(budget: int, n_train: int, n_val: int, **kwargs: Any) -> tuple[Any, CountingEvaluate]:
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(n_train=n_train, n_val=n_val, evaluate=evaluate)
    optimizer = MIPRO(proposer_lm=proposer(), max_rollouts=budget, progress=False, **kwargs)
    return optimizer.optimize(program, train, val), evaluate


@settings(max_examples=300, deadline=None)
@given(
    budget=st.integers(1, 2000),
    n_train=st.integers(1, 60),
    n_val=st.integers(1, 60),
    auto=st.sampled_from([None, "light", "medium", "heavy"]),
)
def test_a_budget_only_or_auto_plan_fits_or_names_the_smallest_budget(
    budget: int, n_train: int, n_val: int, auto: str | None
) -> None:
    sizes = {"n_train": n_train, "n_val": n_val}
    try:
        plan = plan_for_budget({"auto": auto}, budget=budget, **sizes)
    except ConfigError as exc:
        smallest = smallest_budget(auto=auto, **sizes)
        assert budget < smallest and f"at least {smallest} rollouts" in str(exc)
        plan_for_budget({"auto": auto}, budget=smallest, **sizes)  # the number is right
        return
    assert plan.num_trials >= 1 and plan.rollouts["total"] <= budget
    assert plan.rollouts_min <= plan.rollouts["total"] <= plan.rollouts_max <= budget
    assert plan.source == ("budget" if auto is None else "auto")
    if auto is None:  # as many trials as fit: one more would not
        more = {k: v for k, v in plan.settings().items() if k != "num_trials"}
        shape = {
            "minibatch": more["minibatch_size"],
            "full_eval_every": more["full_eval_every"],
            "trials_per_batch": 2,
            "bootstrap": plan.bootstrap,
            "n_val": n_val,
        }
        if plan.num_trials < 1000:
            assert spend(num_trials=plan.num_trials + 1, **shape)["total"] > budget


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(budget=st.integers(10, 260), n_train=st.integers(2, 16), n_val=st.integers(2, 16))
def test_mipro_from_a_budget_alone_never_exceeds_it_and_runs_a_trial(
    budget: int, n_train: int, n_val: int
) -> None:
    smallest = smallest_budget(n_train, n_val)
    if budget < smallest:
        evaluate = CountingEvaluate()
        program, train, val = keyword_task(n_train=n_train, n_val=n_val, evaluate=evaluate)
        lm = proposer()
        optimizer = MIPRO(proposer_lm=lm, max_rollouts=budget, progress=False)
        with pytest.raises(ConfigError, match=f"at least {smallest} rollouts"):
            optimizer.optimize(program, train, val)
        assert evaluate.total == 0 and not lm.prompts  # refused before any call
        return
    result, evaluate = run(budget, n_train, n_val)
    assert result.n_rollouts == evaluate.total <= budget
    assert max(evaluate.calls.values()) == 1
    assert len(result.details["trials"]) >= 1  # type: ignore[arg-type]
    plan = result.details["plan"]
    assert plan["source"] == "budget" and plan["rollouts"]["total"] <= budget  # type: ignore[index]


@pytest.mark.parametrize("budget", [60, 90, 150, 300])
def test_counting_evaluate_over_several_budgets_on_the_demo_sizes(budget: int) -> None:
    """The issue's case: 38 train, 39 val. Below the smallest budget, an error that names it."""
    if budget < smallest_budget(38, 39):
        with pytest.raises(ConfigError, match="at least 87 rollouts"):
            run(budget, 38, 39)
        return
    result, evaluate = run(budget, 38, 39)
    assert result.n_rollouts == evaluate.total <= budget
    assert len(result.details["trials"]) >= 1  # type: ignore[arg-type]
    estimate = result.details["estimate"]
    # within 2x of the low end of the forecast (cache hits lower it), never above its top
    assert estimate["rollouts_min"] / 2 <= evaluate.total <= estimate["rollouts_max"]  # type: ignore[index]
    assert estimate["rollouts"] / 2 <= evaluate.total  # type: ignore[index]


def test_auto_with_a_budget_too_small_for_a_trial_is_an_error_not_a_silent_seed() -> None:
    with pytest.raises(ConfigError) as info:
        run(60, 38, 39, auto="light")
    message = str(info.value)
    assert "auto='light'" in message and "max_rollouts=60" in message
    assert "at least 103 rollouts" in message and "\n" not in message


def test_auto_is_capped_by_the_budget_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="policyopt"):
        result, evaluate = run(150, 20, 20, auto="light")
    plan = result.details["plan"]
    assert plan["source"] == "auto" and plan["requested_trials"] == 10  # type: ignore[index]
    assert 1 <= plan["num_trials"] < 10 and evaluate.total <= 150  # type: ignore[index]
    assert len(result.details["trials"]) == plan["num_trials"]  # type: ignore[arg-type,index]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("asks for 10 trials; the budget pays for" in m for m in warned), warned


def test_explicit_counts_win_and_are_checked_against_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="policyopt"):
        result, evaluate = run(100, 12, 30, num_candidates=3, num_trials=40, minibatch_size=4)
    plan = result.details["plan"]
    assert (plan["num_candidates"], plan["num_trials"]) == (3, 40)  # type: ignore[index]
    assert evaluate.total <= 100 and result.stop_reason == "budget"
    assert 1 <= len(result.details["trials"]) < 40  # type: ignore[arg-type]
    assert any("num_trials=40 needs about" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="these counts cannot run a single trial"):
        run(30, 12, 12, num_candidates=3, num_trials=4)


def test_the_plan_is_announced_in_the_run_started_event_and_its_line() -> None:
    seen: list[RunStarted] = []
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(evaluate=evaluate)
    optimizer = MIPRO(
        proposer_lm=proposer(),
        max_rollouts=120,
        progress=False,
        listeners=[lambda e: seen.append(e) if isinstance(e, RunStarted) else None],
    )
    optimizer.optimize(program, train, val)
    (event,) = seen
    assert event.estimate["plan"] == "budget" and event.estimate["num_trials"] >= 1
    assert event.settings["num_trials"] == event.estimate["num_trials"]
    line = describe_estimate(event)
    assert "candidates" in line and "trials" in line and "rollouts" in line


def test_a_budget_only_search_runs_on_while_cache_hits_leave_budget() -> None:
    # labeled examples give demo sets; repeated configurations on overlapping minibatches are
    # cache hits the plan counted as paid, so the search runs past its planned trials
    evaluate = CountingEvaluate()
    program, train, val = keyword_task(n_train=12, n_val=12, evaluate=evaluate)
    for example in train + val:
        example["answer"] = example["need"]
    result = MIPRO(proposer_lm=proposer(), max_rollouts=250, progress=False).optimize(
        program, train, val
    )
    plan = result.details["plan"]
    assert len(result.details["trials"]) > plan["num_trials"]  # type: ignore[arg-type,index]
    assert evaluate.total <= 250


def test_known_configurations_are_not_spent_as_trials() -> None:
    """A minibatch covering the whole valset: a repeated configuration would teach nothing."""
    result, evaluate = run(400, 6, 6, num_candidates=3, num_trials=6, max_labeled_demos=0)
    params = [tuple(sorted(t["params"].items())) for t in result.details["trials"]]  # type: ignore[union-attr]
    # 3 instructions, no demos: the seed is known, so at most 2 distinct trials pay anything
    assert len(set(params)) <= 2 and evaluate.total <= 6 + 6 + 2 * 6


def test_the_demo_cli_refuses_a_budget_too_small_for_a_trial_before_loading_a_model() -> None:
    from typer.testing import CliRunner

    from policyopt.cli import app

    out = CliRunner().invoke(app, ["demo", "--algorithm", "mipro", "--budget", "80"])
    assert out.exit_code == 2
    assert "cannot run a single trial" in out.output and "at least 87 rollouts" in out.output


def _spend_by_loop(num_trials: int, trials_per_batch: int, full_eval_every: int) -> int:
    """The search loop's schedule, step by step: the full evaluations it promotes."""
    done, since, promotions = 0, 0, 0
    while done < num_trials:
        k = min(trials_per_batch, num_trials - done)
        done, since = done + k, since + k
        if since >= full_eval_every:
            since, promotions = 0, promotions + 1
    return promotions + 1


@settings(max_examples=400, deadline=None)
@given(
    num_trials=st.integers(0, 300),
    trials_per_batch=st.integers(1, 12),
    full_eval_every=st.integers(-3, 30),
)
def test_the_closed_form_spend_follows_the_search_loops_schedule(
    num_trials: int, trials_per_batch: int, full_eval_every: int
) -> None:
    got = spend(
        num_trials=num_trials,
        minibatch=3,
        full_eval_every=full_eval_every,
        trials_per_batch=trials_per_batch,
        bootstrap=5,
        n_val=7,
    )
    promotions = _spend_by_loop(num_trials, trials_per_batch, full_eval_every)
    assert got["full_evaluations"] == 7 * promotions
    assert got["total"] == 7 + 5 + 3 * num_trials + 7 * promotions


def test_a_plan_with_a_billion_trials_is_computed_at_once() -> None:
    """A job server checks this plan on submit: it used to loop num_trials times (1e6 trials
    cost 0.28 s, 1e9 never returned and hung the server's event loop)."""
    import time

    started = time.perf_counter()
    plan = plan_for_budget(
        {"num_trials": 10**9, "num_candidates": 3}, budget=200, n_train=10, n_val=10
    )
    assert plan.num_trials == 10**9 and plan.rollouts["total"] <= 200
    assert time.perf_counter() - started < 1.0
    with pytest.raises(ConfigError, match="trials_per_batch must be >= 1"):
        plan_for_budget({"num_trials": 5, "trials_per_batch": 0}, budget=200, n_train=10, n_val=10)
