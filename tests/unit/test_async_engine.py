"""An ``async def evaluate`` runs on policyopt's event loop with the thread path's bookkeeping:
order, budget, cache, journal, timeout, error policy, stops and Ctrl-C, in the engine and
through GEPA, MIPRO and OPRO (same result as the same evaluate written sync)."""

from __future__ import annotations

import _thread
import asyncio
import functools
import threading
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, RolloutEngine, Score
from policyopt.errors import StopRequested
from policyopt.rollout.aio import Blocking, call_blocking, is_async_callable
from policyopt.state import Journal
from policyopt.testing.conformance import CountingEvaluate, comparable, keyword_task

pytestmark = pytest.mark.waits  # see tests/conftest.py

EXAMPLES = [{"x": i} for i in range(40)]


def expected(prompt: Any, x: int) -> float:
    return float((len(str(prompt)) * 7 + x * 3) % 11) / 10


class AsyncCounting:
    """An async evaluate that counts calls and the coroutines in flight at once."""

    def __init__(self, delay: float = 0.01, fail: set[int] | None = None) -> None:
        self.calls: Counter[tuple[str, int]] = Counter()
        self.delay = delay
        self.fail = fail or set()
        self.inflight = 0
        self.peak = 0
        self.cancelled = 0

    async def __call__(self, prompt: Any, example: dict[str, int]) -> Score:
        self.calls[(str(prompt), example["x"])] += 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            # finishing out of input order: later examples often finish first
            await asyncio.sleep(self.delay * ((example["x"] * 7) % 5))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1
        if example["x"] in self.fail:
            raise RuntimeError(f"boom on {example['x']}")
        return Score(expected(prompt, example["x"]), feedback=f"fb{example['x']}")

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def make(evaluate: Any, **kwargs: Any) -> tuple[RolloutEngine, list[str]]:
    engine = RolloutEngine(evaluate, **kwargs)
    return engine, engine.add_split("val", EXAMPLES)


def test_async_callables_are_detected() -> None:
    async def fn(prompt: Any, example: Any) -> float:
        return 1.0

    def sync(prompt: Any, example: Any) -> float:
        return 1.0

    assert is_async_callable(fn) and is_async_callable(AsyncCounting())
    assert is_async_callable(functools.partial(fn, "p"))
    assert not is_async_callable(sync) and not is_async_callable(AsyncCounting)
    assert not is_async_callable(CountingEvaluate())


def test_results_in_input_order_with_concurrency_bounded_by_n_jobs() -> None:
    evaluate = AsyncCounting()
    engine, ids = make(evaluate, n_jobs=8)
    requests = [(p, i) for p in ("p0", "p1") for i in ids] + [("p0", ids[3])]  # one repeat
    result = engine.run(requests, split="val")
    assert result.complete and len(result) == len(requests)
    for (prompt, example_id), rollout in zip(requests, result.rollouts, strict=True):
        assert rollout is not None and rollout.example_id == example_id
        assert rollout.value == expected(prompt, int(example_id))
    assert evaluate.total == engine.rollouts_used == 80  # the repeat was not paid twice
    assert evaluate.peak == 8  # n_jobs coroutines in flight, no more
    again = engine.run(requests, split="val")
    assert evaluate.total == 80 and all(r is not None and r.cached for r in again.rollouts)
    engine.close()


@pytest.mark.parametrize("budget", [1, 7, 39])
def test_budget_is_exact(budget: int) -> None:
    evaluate = AsyncCounting(delay=0.001)
    engine, ids = make(evaluate, n_jobs=5, max_rollouts=budget)
    result = engine.run([("p", i) for i in ids], split="val")
    assert engine.rollouts_used == evaluate.total == budget
    assert result.n_cut == 40 - budget == sum(r is None for r in result.rollouts)
    assert engine.run([("q", ids[0])], split="val").n_cut == 1
    assert evaluate.total == budget
    engine.close()


def test_same_results_as_the_sync_evaluate() -> None:
    async_engine, ids = make(AsyncCounting(fail={4}), n_jobs=4, max_rollouts=30)
    sync_engine, _ = make(CountingSync(fail={4}), n_jobs=4, max_rollouts=30)
    requests = [(p, i) for p in ("a", "bb") for i in ids[:20]]
    first = async_engine.run(requests, split="val")
    second = sync_engine.run(requests, split="val")
    assert _strip(first) == _strip(second)
    assert first.n_cut == second.n_cut == 10
    assert [w for w, _ in async_engine.failures] == [w for w, _ in sync_engine.failures]
    async_engine.close()
    sync_engine.close()


def _strip(result: Any) -> list[Any]:
    return [(r.value, r.error and r.error.split(" (at ")[0]) if r else None for r in result]


class CountingSync:
    """The sync twin of :class:`AsyncCounting` (same scores, same failures)."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail

    def __call__(self, prompt: Any, example: dict[str, int]) -> Score:
        if example["x"] in self.fail:
            raise RuntimeError(f"boom on {example['x']}")
        return Score(expected(prompt, example["x"]), feedback=f"fb{example['x']}")


def test_a_hanging_coroutine_times_out_and_is_cancelled() -> None:
    state = {"cancelled": 0}

    async def evaluate(prompt: Any, example: dict[str, int]) -> float:
        if example["x"] == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                state["cancelled"] += 1
                raise
        return 0.5

    engine, ids = make(evaluate, n_jobs=4, timeout=0.5, max_error_rate=None)
    start = time.perf_counter()
    result = engine.run([("p", i) for i in ids[:6]], split="val")
    assert time.perf_counter() - start < 5
    assert [r.value for r in result.done()] == [0.5, 0.0, 0.5, 0.5, 0.5, 0.5]
    assert result[1] is not None and "within the 0.5 s rollout timeout" in str(result[1].error)
    time.sleep(0.2)
    assert state["cancelled"] == 1
    assert engine.rollouts_used == 6
    engine.close()


def test_coroutines_that_ignore_cancellation_hold_their_slots() -> None:
    """Past the timeout a coroutine that swallows CancelledError keeps its slot; once every
    slot is held so, the rest of the batch fails at once without being paid."""
    cancels = Counter[int]()

    async def stubborn(prompt: Any, example: dict[str, int]) -> float:
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:  # a badly written evaluate: gives up the 2nd time
                cancels[example["x"]] += 1
                if cancels[example["x"]] >= 2:
                    raise

    engine, ids = make(stubborn, n_jobs=2, timeout=0.3, max_error_rate=None, quarantine_after=None)
    start = time.perf_counter()
    result = engine.run([("p", i) for i in ids[:5]], split="val")
    assert time.perf_counter() - start < 5
    errors = [r.error or "" for r in result.done()]
    assert sum("rollout timeout" in e for e in errors) == 2
    assert sum("rollout slots are held" in e for e in errors) == 3
    assert engine.rollouts_used == 2  # the refused ones cost nothing
    engine.close()  # cancels them again: now they end
    time.sleep(0.3)
    assert cancels == Counter({0: 2, 1: 2})


def test_exceptions_are_recorded_failures_and_the_error_policy_applies() -> None:
    evaluate = AsyncCounting(delay=0.0, fail={2, 3})
    engine, ids = make(evaluate, n_jobs=4, max_error_rate=None, failure_score=-1.0)
    result = engine.run([("p", i) for i in ids[:6]], split="val")
    assert [r.value for r in result.done()][2:4] == [-1.0, -1.0]
    assert result[2] is not None and "RuntimeError: boom on 2" in str(result[2].error)
    assert len(engine.failures) == 2
    engine.close()

    # a little delay: with none, all 40 can finish in one loop turn before the breaker looks
    broken = AsyncCounting(delay=0.02, fail=set(range(40)))
    engine, ids = make(broken, n_jobs=4, error_window=10, max_error_rate=0.5)
    from policyopt.errors import EvaluationError

    with pytest.raises(EvaluationError, match="looks broken"):
        engine.run([("p", i) for i in ids], split="val")
    assert broken.total < 40  # the batch was cut short
    engine.close()


def test_non_scores_are_a_clear_error() -> None:
    from policyopt.errors import ScoreTypeError

    async def evaluate(prompt: Any, example: Any) -> Any:
        return "yes"

    engine, ids = make(evaluate, n_jobs=2)
    with pytest.raises(ScoreTypeError, match="must return a float"):
        engine.run([("p", ids[0])], split="val")
    engine.close()


def test_a_stop_request_cancels_the_coroutines_in_flight() -> None:
    evaluate = AsyncCounting(delay=20.0)  # example 0 returns at once; the others sleep
    stop_at = time.monotonic() + 0.5
    engine, ids = make(
        evaluate,
        n_jobs=10,
        stop_check=lambda: "stop_file" if time.monotonic() > stop_at else None,
    )
    start = time.perf_counter()
    with pytest.raises(StopRequested, match="stop_file"):
        engine.run([("p", i) for i in ids], split="val")
    assert time.perf_counter() - start < 3
    time.sleep(0.2)
    assert evaluate.inflight == 0 and evaluate.cancelled >= 8
    # started rollouts are paid; the finished ones are cached
    assert engine.rollouts_used == evaluate.total
    assert engine.cached("p", "val", ids[0]) is not None
    engine.close()


@pytest.mark.usefixtures("sigint_raises")
def test_ctrl_c_ends_an_async_batch_at_once() -> None:
    evaluate = AsyncCounting(delay=20.0)
    engine, ids = make(evaluate, n_jobs=10)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.run([("p", i) for i in ids], split="val")
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 3
    time.sleep(0.2)
    assert evaluate.inflight == 0
    engine.close()


def test_journal_resume_pays_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.jsonl"
    evaluate = AsyncCounting(delay=0.001, fail={5})
    engine, ids = make(evaluate, n_jobs=4, journal=Journal(path), max_errors=None)
    first = engine.run([("p", i) for i in ids[:8]], split="val")
    engine.close()
    records = Journal(path).read()
    assert [r["type"] for r in records].count("start") == 8
    assert [r["type"] for r in records].count("rollout") == 8

    again = AsyncCounting(delay=0.001)
    resumed, _ = make(again, n_jobs=4, journal=Journal(path), max_errors=None)
    assert resumed.rollouts_used == 8 and resumed.resumed_rollouts == 8
    second = resumed.run([("p", i) for i in ids[:8]], split="val")
    assert again.total == 0  # the failure too comes back as it was recorded
    assert [(r.value, r.error) for r in second.done()] == [(r.value, r.error) for r in first.done()]
    resumed.close()

    retried, _ = make(again, n_jobs=4, journal=Journal(path), max_errors=None, retry_failures=True)
    third = retried.run([("p", i) for i in ids[:8]], split="val")
    assert again.total == 1 and again.calls[("p", 5)] == 1  # only the failure is paid again
    assert [r.value for r in third.done()] == [
        r.value if i != 5 else expected("p", 5) for i, r in enumerate(first.done())
    ]
    retried.close()


def _sum_async(prompt: Any, example: dict[str, int]) -> Any:
    async def go() -> float:
        await asyncio.sleep(0.001)
        return float(example["x"]) / 100

    return go()


async def module_level_async(prompt: str, example: dict[str, int]) -> float:
    await asyncio.sleep(0.001)
    return float(example["x"]) / 100


def test_sync_callers_await_on_policyopts_loop() -> None:
    """A sync wrapper returning a coroutine, and Blocking() for sync-only callers, just work."""
    engine, ids = make(_sum_async, n_jobs=3)
    assert engine.run([("p", i) for i in ids[:5]], split="val").scores() == [
        0.0,
        0.01,
        0.02,
        0.03,
        0.04,
    ]
    engine.close()
    assert Blocking(module_level_async)("p", {"x": 7}) == 0.07
    assert call_blocking(module_level_async, "p", {"x": 3}) == 0.03


def test_a_process_backend_runs_an_async_evaluate_in_its_workers() -> None:
    engine, ids = make(module_level_async, n_jobs=2, backend="loky", timeout=30)
    assert engine.run([("p", i) for i in ids[:4]], split="val").scores() == [
        0.0,
        0.01,
        0.02,
        0.03,
    ]
    engine.close()


# ---------------------------------------------------------------------- through the optimizers
class AsyncKeyword(CountingEvaluate):
    """The conformance suite's keyword evaluate, async, finishing in a scrambled order."""

    async def __call__(self, prompt: Any, example: dict[str, str]) -> Score:  # type: ignore[override]
        await asyncio.sleep(0.002 * (zlib.crc32(example["id"].encode()) % 4))
        return super().__call__(prompt, example)


def _optimizers() -> list[tuple[str, Any]]:
    from tests.unit.gepa.test_conformance import factory as gepa
    from tests.unit.mipro.test_mipro import factory as mipro
    from tests.unit.opro.test_conformance import factory as opro

    return [("gepa", gepa), ("mipro", mipro), ("opro", opro)]


@pytest.mark.parametrize(("name", "factory"), _optimizers())
def test_optimizers_give_the_same_result_with_an_async_evaluate(name: str, factory: Any) -> None:
    results = {}
    for kind, evaluate in (("sync", CountingEvaluate()), ("async", AsyncKeyword())):
        program, train, val = keyword_task(evaluate=evaluate)
        optimizer = factory(max_rollouts=60, seed=2, run_dir=None, max_errors=10, n_jobs=4)
        results[kind] = (optimizer.optimize(program, train, val), evaluate)
    (sync, sync_eval), (aio, aio_eval) = results["sync"], results["async"]
    assert comparable(sync) == comparable(aio), name
    assert sync_eval.calls == aio_eval.calls and aio.n_rollouts == aio_eval.total <= 60


def test_gepa_with_an_async_evaluate_resumes_from_its_run_dir(tmp_path: Path) -> None:
    from tests.unit.gepa.test_conformance import factory

    first_eval = AsyncKeyword()
    program, train, val = keyword_task(evaluate=first_eval)
    run_dir = str(tmp_path / "run")
    first = factory(max_rollouts=50, seed=1, run_dir=run_dir, max_errors=10, n_jobs=4).optimize(
        program, train, val
    )
    again = AsyncKeyword()
    program, train, val = keyword_task(evaluate=again)
    second = factory(max_rollouts=50, seed=1, run_dir=run_dir, max_errors=10, n_jobs=4).optimize(
        program, train, val
    )
    assert again.total == 0  # everything came from the journal
    assert comparable(first) == comparable(second)
    assert isinstance(first, type(second)) and GEPA is not None


def test_the_task_app_serves_an_async_evaluate() -> None:
    import httpx

    from policyopt import Program
    from policyopt.remote._serving import serve_in_thread
    from policyopt.remote.taskapp.app import task_app
    from policyopt.tasks import get_task

    async def evaluate(prompt: str, example: dict[str, Any]) -> Score:
        await asyncio.sleep(0.01)
        return Score(1.0 if example["id"] == "hot" else 0.5, feedback=f"saw {prompt}")

    program = Program("p", evaluate)
    with (
        serve_in_thread(task_app(program, get_task("antonyms"))) as url,
        httpx.Client(timeout=10) as http,
    ):
        answer = http.post(f"{url}/rollout", json={"example_id": "hot", "prompt": "q"}).json()
    assert answer["score"] == 1.0 and answer["feedback"] == "saw q"
