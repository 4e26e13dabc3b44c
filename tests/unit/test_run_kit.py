"""What the run kit guarantees every optimizer: the optimizer-LM bill is bounded by the budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO, Score
from policyopt.protocol import Optimizer
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import CountingEvaluate, keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import (
    FailsOnSomeExamples,
    flaky_lm,
    keyword_meta_lm,
    keyword_proposer_lm,
    lenient_gepa_run,
)

#: (factory taking the LM and the shared settings, the LM factory)
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], Callable[[], ScriptedLM]]] = {
    "gepa": (lambda lm, **kw: GEPA(reflection_lm=lm, **kw), keyword_reflection_lm),
    "mipro": (
        lambda lm, **kw: MIPRO(proposer_lm=lm, num_candidates=4, num_trials=8, **kw),
        keyword_proposer_lm,
    ),
    "opro": (lambda lm, **kw: OPRO(meta_lm=lm, **kw), keyword_meta_lm),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_resumed_run_makes_no_lm_call_the_spent_budget_cannot_score(
    name: str, tmp_path: Path
) -> None:
    """Rollouts paid by an earlier segment that will not replay (failures) still count: the
    resumed run stops on "budget" instead of proposing children nobody can pay for."""
    make, make_lm = OPTIMIZERS[name]
    settings: dict[str, Any] = {
        "max_rollouts": 60,
        "progress": False,
        "run_dir": str(tmp_path / "run"),
        "max_error_rate": None,
        "quarantine_after": None,
        "n_jobs": 2,
    }
    first = FailsOnSomeExamples(broken=True)
    program, train, val = keyword_task(evaluate=first)
    make(make_lm(), **settings).optimize(program, train, val)
    fixed = FailsOnSomeExamples(broken=False)
    program, train, val = keyword_task(evaluate=fixed)
    lm = make_lm()
    result = make(lm, retry_failures=True, **settings).optimize(program, train, val)
    journal = (tmp_path / "run" / "journal.jsonl").read_text(encoding="utf-8")
    paid = journal.count('"type": "start"')
    assert paid <= 60, "the hard budget holds across segments"
    if paid == 60:  # spent: nothing more may be asked of the optimizer's LM once it is
        assert result.stop_reason == "budget"
    # every live call of the resumed segment was scored by at least one rollout
    live_keys = len(lm.prompts)
    assert live_keys <= max(0, fixed.total), (live_keys, fixed.total)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_no_run_makes_more_lm_calls_than_it_announced(name: str) -> None:
    """A flat task (no prompt beats another) and an LM whose every other answer is unusable:
    the worst case for the bill. The run keeps to the cap it announced, at most 3x its
    forecast, and says so in the estimate."""
    make, _ = OPTIMIZERS[name]
    program, train, val = keyword_task()
    program = type(program)(program.prompt, lambda prompt, example: Score(0.5, feedback="meh"))
    lm = flaky_lm()
    started: list[Any] = []
    result = make(lm, max_rollouts=150, progress=False, listeners=[started.append]).optimize(
        program, train, val
    )
    estimate = started[0].estimate
    assert estimate == result.details["estimate"]
    assert estimate["lm_calls_cap"] <= 3 * max(1, estimate["lm_calls"])
    assert estimate["lm_calls_max"] <= estimate["lm_calls_cap"]
    assert len(lm.prompts) <= estimate["lm_calls_cap"], (len(lm.prompts), estimate)


def test_the_users_max_lm_calls_is_the_cap() -> None:
    program, train, val = keyword_task()
    lm = flaky_lm()
    result = GEPA(reflection_lm=lm, max_rollouts=150, max_lm_calls=5, progress=False).optimize(
        program, train, val
    )
    assert result.details["estimate"]["lm_calls_cap"] == 5  # type: ignore[index]
    assert len(lm.prompts) <= 5 and result.stop_reason == "lm_call_limit"


def _journal(run_dir: Path) -> list[dict[str, Any]]:
    import json

    lines = (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


class Louder(CountingEvaluate):
    """The keyword task with other feedback wording: reflection prompts differ from a run with
    the plain wording, so a resumed run's path leaves the first segment's calls behind."""

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        score = super().__call__(prompt, example)
        feedback = None if score.feedback is None else score.feedback.upper()
        return Score(score.score, feedback=feedback, output=score.output)


def test_a_resumed_runs_bill_sums_every_segment(tmp_path: Path) -> None:
    """LM calls and tokens of every segment count in the result, also those the resumed run's
    path left behind (before: only the path's); so does every segment's wall time."""
    run_dir = tmp_path / "run"
    lenient_gepa_run(str(run_dir), FailsOnSomeExamples(broken=True), 60)  # reflections saw them
    first = _journal(run_dir)
    first_wall = max(r["wall_s"] for r in first if r["type"] == "segment")
    # resumed with evaluate fixed and retry_failures: the failures are paid again and succeed,
    # so the path asks other reflection prompts under the same keys, and some first-segment
    # calls are left behind
    result = lenient_gepa_run(
        str(run_dir), FailsOnSomeExamples(broken=False), 150, retry_failures=True
    )
    records = _journal(run_dir)
    proposals = [r for r in records if r["type"] == "proposal"]
    keys = [r["key"] for r in proposals]
    assert len(set(keys)) < len(keys), "the resumed path must leave calls behind"
    usage = result.lm_usage["reflection"]
    assert usage.calls == len(proposals)
    assert usage.prompt_tokens == sum(r["prompt_tokens"] for r in proposals)
    assert {r["segment"] for r in records if r["type"] == "segment"} == {1, 2}
    assert result.wall_time_s >= first_wall
    assert f'"calls": {usage.calls}' in (run_dir / "result.json").read_text(encoding="utf-8")


def test_a_crashed_segment_counts_its_time(tmp_path: Path) -> None:
    from policyopt.testing.conformance import _Crash

    run_dir = tmp_path / "run"

    def run(evaluate: CountingEvaluate) -> Any:
        program, train, val = keyword_task(evaluate=evaluate)
        return GEPA(
            reflection_lm=keyword_reflection_lm(),
            max_rollouts=150,
            n_jobs=1,
            progress=False,
            run_dir=str(run_dir),
        ).optimize(program, train, val)

    with pytest.raises(_Crash):
        run(CountingEvaluate(crash_after=60))
    first = _journal(run_dir)
    first_wall = max(r["wall_s"] for r in first if r["type"] == "segment")
    assert {r["segment"] for r in first if r["type"] == "segment"} == {1}
    result = run(CountingEvaluate())
    assert result.wall_time_s >= first_wall


def _gepa(run_dir: Path, **kwargs: Any) -> GEPA:
    return GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=40,
        progress=False,
        run_dir=str(run_dir),
        **kwargs,
    )


def test_a_run_dir_refuses_a_changed_evaluate_with_one_line(tmp_path: Path) -> None:
    """Cached scores belong to the evaluate that made them: resuming with another metric is
    refused, naming what changed and both ways on (another run_dir, or accept_changed)."""
    from policyopt.errors import StateError

    program, train, val = keyword_task()
    first = _gepa(tmp_path).optimize(program, train, val)
    louder, train, val = keyword_task(evaluate=Louder())
    with pytest.raises(StateError) as caught:
        _gepa(tmp_path).optimize(louder, train, val)
    message = str(caught.value)
    assert "\n" not in message and "evaluate: " in message and "Louder" in message
    assert "another run_dir" in message and "accept_changed=['evaluate']" in message
    assert "--accept-changed evaluate" in message
    # the same evaluate (another instance of the same code) resumes as before
    again, train, val = keyword_task()
    assert _gepa(tmp_path).optimize(again, train, val).n_rollouts == first.n_rollouts
    # accepted explicitly, the changed metric goes on from the journal
    result = _gepa(tmp_path, accept_changed=("evaluate",)).optimize(louder, train, val)
    assert result.n_rollouts >= first.n_rollouts


def test_a_run_dir_from_before_evaluate_was_recorded_still_resumes(tmp_path: Path) -> None:
    import json

    program, train, val = keyword_task()
    first = _gepa(tmp_path).optimize(program, train, val)
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    del config["identity"]["evaluate"]
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert _gepa(tmp_path).optimize(program, train, val).n_rollouts == first.n_rollouts


def test_the_evaluate_identity_follows_its_code() -> None:
    import functools

    from policyopt.state.rundir import callable_identity

    def metric(prompt: str, example: Any) -> float:
        return 1.0

    def other(prompt: str, example: Any) -> float:
        return 0.0

    assert callable_identity(metric) == callable_identity(metric)
    assert callable_identity(metric) != callable_identity(other)
    assert callable_identity(functools.partial(metric)) == callable_identity(metric)
    assert callable_identity(CountingEvaluate()) == callable_identity(CountingEvaluate())
    assert callable_identity(CountingEvaluate()) != callable_identity(Louder())
    assert callable_identity(len).startswith("builtins:len@")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_exact_is_true_only_when_the_resumed_path_can_be_the_same(
    name: str, tmp_path: Path
) -> None:
    """A run continued with a larger budget replays exactly (true), also when its earlier
    segment recorded failures (they replay as recorded); one whose earlier segment lost a
    rollout to a kill, or that pays the recorded failures again (retry_failures), says false."""
    from policyopt.testing.conformance import _Crash

    make, make_lm = OPTIMIZERS[name]

    def run(run_dir: Path, evaluate: CountingEvaluate, budget: int, **settings: Any) -> Any:
        program, train, val = keyword_task(evaluate=evaluate)
        return make(
            make_lm(),
            max_rollouts=budget,
            n_jobs=1,
            progress=False,
            run_dir=str(run_dir),
            max_error_rate=None,
            **settings,
        ).optimize(program, train, val)

    assert run(tmp_path / "a", CountingEvaluate(), 40).details["resume_exact"] is True
    assert run(tmp_path / "a", CountingEvaluate(), 80).details["resume_exact"] is True
    with pytest.raises(_Crash):
        run(tmp_path / "b", CountingEvaluate(crash_after=20), 80)
    resumed = run(tmp_path / "b", CountingEvaluate(), 80)
    assert resumed.details["lost_rollouts"] == 1 and resumed.details["resume_exact"] is False
    run(tmp_path / "c", FailsOnSomeExamples(broken=True), 40)
    replayed = run(tmp_path / "c", FailsOnSomeExamples(broken=True), 80)
    assert replayed.details["replayed_failures"] > 0 and replayed.details["resume_exact"] is True
    run(tmp_path / "d", FailsOnSomeExamples(broken=True), 40)
    retried = run(tmp_path / "d", FailsOnSomeExamples(False), 80, retry_failures=True)
    assert retried.details["retried_failures"] > 0 and retried.details["resume_exact"] is False


def test_callable_identity_reads_source_one_thread_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.11's getsource parses a class's module with ``ast``, whose builder fails with a
    SystemError when two threads parse at once (seen as a failed bench cell under
    parallel_cells=2): identities computed in parallel must not overlap there."""
    import inspect
    import threading
    import time

    from policyopt.state import rundir

    inside, overlaps = [0], [0]
    real = inspect.getsource

    def slow_getsource(obj: Any) -> str:
        inside[0] += 1
        overlaps[0] += inside[0] > 1
        time.sleep(0.01)
        inside[0] -= 1
        return real(obj)

    monkeypatch.setattr(rundir.inspect, "getsource", slow_getsource)
    classes = [type(f"Evaluate{i}", (CountingEvaluate,), {}) for i in range(8)]
    threads = [threading.Thread(target=rundir.callable_identity, args=(cls(),)) for cls in classes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps[0] == 0
