"""The rollout engine: order, budget, cache, error policy, timeouts, journal, events."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from typing import Any
from unittest.mock import ANY

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyopt import RolloutEngine, Score
from policyopt.errors import ConfigError, DatasetError, EvaluationError, ScoreTypeError
from policyopt.events import BatchDone, EventBus
from policyopt.state import Journal
from tests.strategies import batches

PROMPTS = ["p0", "p1", {"a": "x", "b": "y"}, "p3"]
EXAMPLES = [{"x": i} for i in range(6)]


class Counting:
    """An evaluate that records every call (the ground truth of money spent)."""

    def __init__(self, fail: set[int] | None = None, jitter: float = 0.0) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.fail = fail or set()
        self.jitter = jitter
        self.lock = threading.Lock()

    def __call__(self, prompt: Any, example: dict[str, int]) -> Score:
        with self.lock:
            self.calls[(str(prompt), example["x"])] += 1
        if self.jitter:
            time.sleep(random.random() * self.jitter)
        if example["x"] in self.fail:
            raise RuntimeError(f"boom on {example['x']}")
        return Score(expected(prompt, example["x"]), feedback=f"fb{example['x']}")

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def expected(prompt: Any, x: int) -> float:
    return float((len(str(prompt)) * 7 + x * 3) % 11) / 10


def make(evaluate: Any, **kwargs: Any) -> tuple[RolloutEngine, list[str]]:
    engine = RolloutEngine(evaluate, **kwargs)
    return engine, engine.add_split("val", EXAMPLES)


@given(batch=batches, n_jobs=st.sampled_from([1, 4]))
def test_results_come_back_in_input_order(batch: list[tuple[int, int]], n_jobs: int) -> None:
    evaluate = Counting(jitter=0.002)
    engine, ids = make(evaluate, n_jobs=n_jobs)
    result = engine.run([(PROMPTS[p], ids[e]) for p, e in batch], split="val")
    assert result.complete and len(result) == len(batch)
    for (p, e), rollout in zip(batch, result.rollouts, strict=True):
        assert rollout is not None
        assert rollout.example_id == ids[e]
        assert rollout.value == expected(PROMPTS[p], e)


@given(
    batch_list=st.lists(batches, min_size=1, max_size=4),
    budget=st.integers(1, 30),
    n_jobs=st.sampled_from([1, 3]),
)
def test_budget_is_never_exceeded_and_cache_hits_are_free(
    batch_list: list[list[tuple[int, int]]], budget: int, n_jobs: int
) -> None:
    evaluate = Counting()
    engine, ids = make(evaluate, max_rollouts=budget, n_jobs=n_jobs)
    paid: set[tuple[str, int]] = set()
    for batch in batch_list:
        before = engine.rollouts_used
        requests = [(PROMPTS[p], ids[e]) for p, e in batch]
        new = {(str(PROMPTS[p]), e) for p, e in batch} - paid
        result = engine.run(requests, split="val")
        # the ledger equals the instrumented truth and never passes the budget
        assert engine.rollouts_used == evaluate.total <= budget
        # exactly the affordable number of new rollouts was paid
        assert engine.rollouts_used - before == min(len(new), budget - before)
        # cut positions are exactly the missing ones
        assert result.n_cut == sum(r is None for r in result.rollouts)
        paid |= {k for k, n in evaluate.calls.items() if n}
    # nothing was ever paid twice
    assert max(evaluate.calls.values(), default=1) == 1


@given(batch=batches)
def test_a_repeated_batch_costs_nothing(batch: list[tuple[int, int]]) -> None:
    evaluate = Counting()
    engine, ids = make(evaluate)
    requests = [(PROMPTS[p], ids[e]) for p, e in batch]
    first = engine.run(requests, split="val")
    used = engine.rollouts_used
    second = engine.run(requests, split="val")
    assert engine.rollouts_used == used == evaluate.total
    assert all(r is not None and r.cached for r in second.rollouts)
    assert [r.value for r in first.done()] == [r.value for r in second.done()]


@given(batch=batches, fail=st.sets(st.integers(0, 5)), n_jobs=st.sampled_from([1, 4]))
def test_failures_are_recorded_and_counted(
    batch: list[tuple[int, int]], fail: set[int], n_jobs: int
) -> None:
    evaluate = Counting(fail=fail)
    engine, ids = make(
        evaluate, n_jobs=n_jobs, max_error_rate=None, quarantine_after=None, failure_score=-1.0
    )
    result = engine.run([(PROMPTS[p], ids[e]) for p, e in batch], split="val")
    failed_keys = {(str(PROMPTS[p]), e) for p, e in batch if e in fail}
    assert len(engine.failures) == len(failed_keys)
    for (_, e), rollout in zip(batch, result.rollouts, strict=True):
        assert rollout is not None
        assert rollout.failed == (e in fail)
        if rollout.failed:
            assert rollout.value == -1.0
            assert rollout.error is not None and f"boom on {e}" in rollout.error
            assert rollout.score.feedback is not None and "boom" in rollout.score.feedback


def test_max_errors_stops_the_run_naming_examples_and_causes() -> None:
    engine, ids = make(Counting(fail={1, 2, 3}), max_errors=1)
    with pytest.raises(EvaluationError) as info:
        engine.run([("p", i) for i in ids], split="val")
    message = str(info.value)
    assert "more than max_errors=1" in message
    assert "val/1: RuntimeError: boom on 1" in message and "val/2" in message
    assert [where for where, _ in info.value.failures] == ["val/1", "val/2"]


def test_non_number_from_evaluate_is_a_clear_error() -> None:
    engine, ids = make(lambda p, e: "yes")
    with pytest.raises(ScoreTypeError, match=r"example '0' of split 'val'.*got str 'yes'"):
        engine.run([("p", ids[0])], split="val")


def test_nan_is_a_recorded_failure_not_a_score() -> None:
    engine, ids = make(lambda p, e: float("nan"))
    rollout = engine.run([("p", ids[0])], split="val")[0]
    assert rollout is not None and rollout.failed and "non-finite" in (rollout.error or "")


def test_timeout_turns_a_hung_rollout_into_a_failure() -> None:
    def slow(prompt: str, example: dict[str, int]) -> float:
        time.sleep(2.0 if example["x"] == 0 else 0.0)
        return 1.0

    engine, ids = make(slow, timeout=0.2, n_jobs=2)
    start = time.perf_counter()
    result = engine.run([("p", ids[0]), ("p", ids[1])], split="val")
    assert time.perf_counter() - start < 1.5
    first, second = result.rollouts
    assert first is not None and first.failed and "timeout" in (first.error or "")
    assert second is not None and not second.failed and second.value == 1.0


def test_dict_prompts_are_copied_for_each_call() -> None:
    def mutating(prompt: dict[str, str], example: dict[str, int]) -> float:
        prompt["a"] = "changed"
        return 1.0

    prompt = {"a": "orig"}
    engine, ids = make(mutating)
    engine.run([(prompt, ids[0]), (prompt, ids[1])], split="val")
    assert prompt == {"a": "orig"}


def test_each_batch_emits_one_event() -> None:
    events: list[Any] = []
    engine, ids = make(Counting(), max_rollouts=3, events=EventBus([events.append]))
    engine.run([("p", i) for i in ids[:2]], split="val", label="seed")
    engine.run([("p", i) for i in ids[:4]], split="val")
    assert [type(e) for e in events] == [BatchDone, BatchDone]
    first, second = events
    assert (first.label, first.n_run, first.n_cached, first.rollouts_used) == ("seed", 2, 0, 2)
    assert (second.n_run, second.n_cached, second.n_cut, second.rollouts_used) == (1, 2, 1, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_rollouts": 0}, "max_rollouts.*>= 1"),
        ({"max_rollouts": 2.5}, "max_rollouts"),
        ({"max_rollouts": True}, "max_rollouts"),
        ({"n_jobs": 0}, "n_jobs"),
        ({"backend": "spark-on-toasters"}, "registered joblib backend.*'threading'"),
        ({"backend": 3}, "backend"),
        ({"timeout": -1}, "timeout"),
        ({"max_errors": -1}, "max_errors"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RolloutEngine(lambda p, e: 1.0, **kwargs)


def test_unknown_split_or_example_is_an_error() -> None:
    engine, _ids = make(Counting())
    with pytest.raises(DatasetError, match="Unknown split 'train'"):
        engine.run([("p", "0")], split="train")
    with pytest.raises(DatasetError, match="No example '99'"):
        engine.run([("p", "99")], split="val")


def test_splits_do_not_share_positional_ids() -> None:
    engine = RolloutEngine(lambda p, e: float(e["v"]))
    train = engine.add_split("train", [{"v": 1}])
    val = engine.add_split("val", [{"v": 0}])
    assert engine.run([("p", train[0])], split="train").scores() == [1.0]
    assert engine.run([("p", val[0])], split="val").scores() == [0.0]


@pytest.mark.parametrize("backend", ["threading", "loky", "sequential"])
def test_joblib_backends_by_name(backend: str) -> None:
    engine, ids = make(_module_level_evaluate, n_jobs=2, backend=backend)
    result = engine.run([("pp", i) for i in ids], split="val")
    assert result.scores() == [float(i) for i in range(6)]


def _module_level_evaluate(prompt: str, example: dict[str, int]) -> float:
    return float(example["x"])


def test_journal_resume_pays_nothing_twice(tmp_path: Any) -> None:
    path = tmp_path / "rollouts.jsonl"
    evaluate = Counting(fail={5})
    engine, ids = make(evaluate, journal=Journal(path), max_errors=None, failure_score=0.25)
    first = engine.run([("p", i) for i in ids], split="val")
    assert evaluate.total == 6
    engine.close()

    again = Counting()
    resumed, _ = make(again, journal=Journal(path), max_errors=None, failure_score=0.25)
    assert resumed.rollouts_used == 6 and resumed.resumed_rollouts == 6
    second = resumed.run([("p", i) for i in ids], split="val")
    # every rollout comes from the journal, the failure too, as it was recorded
    assert again.total == 0 and resumed.failures == engine.failures
    assert [(r.value, r.error, r.score.feedback) for r in second.done()] == [
        (r.value, r.error, r.score.feedback) for r in first.done()
    ]
    assert second[5] is not None and second[5].failed and second[5].value == 0.25
    assert second[0] is not None and second[0].score.feedback == "fb0"
    resumed.close()

    # asked to, a resume pays the failure again (the successes still come from the journal)
    retried, _ = make(again, journal=Journal(path), max_errors=None, retry_failures=True)
    third = retried.run([("p", i) for i in ids], split="val")
    assert again.total == 1 and again.calls[("p", 5)] == 1
    assert third[5] is not None and not third[5].failed
    assert (retried.account.replayed, retried.account.retried) == (0, 1)
    retried.close()


def test_a_failure_is_remembered_within_a_process(tmp_path: Any) -> None:
    """Asked again in the same process, a failed rollout answers from the cache: one result
    per key in the journal, which is what a resume replays."""
    path = tmp_path / "rollouts.jsonl"
    evaluate = Counting(fail={2})
    engine, ids = make(evaluate, journal=Journal(path), max_errors=None, quarantine_after=None)
    engine.run([("p", ids[2])], split="val")
    again = engine.run([("p", ids[2]), ("p", ids[2])], split="val")
    assert evaluate.calls[("p", 2)] == 1 and all(r is not None and r.failed for r in again)
    engine.close()
    assert [r["type"] for r in Journal(path).read()] == ["start", "rollout"]


def test_torn_journal_tail_is_dropped_and_repaired(tmp_path: Any) -> None:
    path = tmp_path / "rollouts.jsonl"
    engine, ids = make(Counting(), journal=Journal(path))
    engine.run([("p", i) for i in ids[:3]], split="val")
    engine.close()
    with path.open("ab") as handle:
        handle.write(b'{"type": "rollout", "prompt": "tor')  # killed mid-write
    journal = Journal(path)
    assert [r["type"] for r in journal.read()] == ["start", "rollout"] * 3
    resumed, _ = make(Counting(), journal=journal)
    resumed.run([("p", ids[3])], split="val")
    resumed.close()
    records = Journal(path).read()
    assert [r["type"] for r in records] == ["start", "rollout"] * 4
    assert [r["n"] for r in records] == [1, 1, 2, 2, 3, 3, 4, 4]


def test_process_backends_need_a_picklable_evaluate() -> None:
    lock = threading.Lock()

    def holds_a_lock(prompt: str, example: dict[str, int]) -> float:
        with lock:
            return 1.0

    with pytest.raises(ConfigError, match="'loky' backend.*must be picklable.*threading"):
        RolloutEngine(holds_a_lock, n_jobs=2, backend="loky")
    RolloutEngine(holds_a_lock, n_jobs=2, backend="threading").close()  # threads share it
    RolloutEngine(_module_level_evaluate, n_jobs=2, backend="loky").close()


@pytest.mark.parametrize("retry", [False, True])
def test_each_count_keeps_one_meaning_across_a_resume(tmp_path: Any, retry: bool) -> None:
    """Paid (rollouts_used), the run's clock (rollouts_spent), what can still be started
    (payable) and what a step may plan with (budget_left), before and after a resume whose
    journal holds a failure (replayed, or paid again with ``retry_failures``) and a start
    without a result (a kill)."""
    path = tmp_path / "rollouts.jsonl"
    engine, ids = make(Counting(fail={5}), journal=Journal(path), max_rollouts=20, max_errors=None)
    engine.run([("p", i) for i in ids], split="val")
    assert (engine.rollouts_used, engine.rollouts_spent, engine.payable) == (6, 6, 14)
    assert engine.budget_left == 14
    engine.close()
    killed = Journal(path)
    killed.append({"type": "start", "n": 7, "prompt": "lost", "split": "val", "example": "0"})
    killed.close()

    resumed, _ = make(
        Counting(), journal=Journal(path), max_rollouts=20, max_errors=None, retry_failures=retry
    )
    assert (resumed.rollouts_used, resumed.resumed_rollouts, resumed.lost_rollouts) == (7, 7, 1)
    assert (resumed.journal_failures, resumed.rollouts_spent, resumed.payable) == (1, 0, 13)
    # by the clock 20 are left, but only 13 can be paid plus the journaled results to come
    # (6 with the failure, 5 when it is paid again)
    assert resumed.budget_left == (18 if retry else 19)
    resumed.run([("p", i) for i in ids], split="val")
    # 5 results (6 with the failure) reached again for free, or the failure paid again: the
    # clock reads what the uninterrupted run read after this batch
    paid = 8 if retry else 7
    assert (resumed.rollouts_used, resumed.rollouts_spent, resumed.payable) == (paid, 6, 20 - paid)
    assert resumed.budget_left == 20 - paid
    resumed.close()


def test_replayed_failures_pass_through_the_error_policy_again(tmp_path: Any) -> None:
    """A resumed engine feeds the journaled results to the error policy in journal order: an
    example quarantined by the original run is quarantined at the same point, at no cost."""
    path = tmp_path / "rollouts.jsonl"
    batches = [[("a", 0), ("a", 5)], [("b", 5)], [("c", 5), ("c", 1)]]

    def run(engine: RolloutEngine, ids: list[str]) -> list[Any]:
        return [engine.run([(p, ids[i]) for p, i in batch], split="val") for batch in batches]

    engine, ids = make(Counting(fail={5}), journal=Journal(path), quarantine_after=2)
    first = run(engine, ids)
    engine.close()
    again = Counting()
    resumed, _ = make(again, journal=Journal(path), quarantine_after=2)
    second = run(resumed, ids)
    resumed.close()
    assert again.total == 0 and resumed.quarantined == engine.quarantined == {"val/5": ANY}

    def seen(batches: list[Any]) -> list[Any]:
        return [(r.example_id, r.value, r.error, r.score.feedback) for b in batches for r in b]

    assert seen(second) == seen(first)
    assert second[2][0] is not None and "quarantined" in str(second[2][0].error)


def test_a_breach_is_journaled_and_the_failures_before_it_are_paid_again(tmp_path: Any) -> None:
    """The failures are why the run stopped: a resume pays them again (the user fixed evaluate).
    A journal cut before the breach record (killed at once) replays the breach instead."""
    path = tmp_path / "rollouts.jsonl"
    policy = {"max_error_rate": 0.5, "error_window": 4}
    engine, ids = make(Counting(fail={4, 5}), journal=Journal(path), **policy)
    engine.run([("p", ids[0]), ("p", ids[1])], split="val")
    with pytest.raises(EvaluationError):
        engine.run([("p", ids[4]), ("p", ids[5])], split="val")
    engine.close()
    records = Journal(path).read()
    assert records[-1] == {"type": "stop", "reason": "evaluate_errors"}

    fixed = Counting()
    (tmp_path / "cut.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records[:-1]), encoding="utf-8"
    )
    replayed, _ = make(fixed, journal=Journal(tmp_path / "cut.jsonl"), **policy)
    replayed.run([("p", ids[0]), ("p", ids[1])], split="val")
    with pytest.raises(EvaluationError):
        replayed.run([("p", ids[4]), ("p", ids[5])], split="val")
    replayed.close()
    assert fixed.total == 0

    retried, _ = make(fixed, journal=Journal(path), **policy)
    retried.run([("p", ids[0]), ("p", ids[1])], split="val")
    batch = retried.run([("p", ids[4]), ("p", ids[5])], split="val")
    retried.close()
    assert fixed.total == 2 and not any(r.failed for r in batch.done())
    assert (retried.account.retried, retried.account.replayed) == (2, 0)
