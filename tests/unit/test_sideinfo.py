"""policyopt.log: side information from inside evaluate, captured per rollout (issue 25).

Messages logged during one rollout join that rollout's feedback only: rollouts on parallel
threads, concurrent asyncio tasks and a rollout nested inside another never mix them.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time
from typing import Any

import pytest

import policyopt
from policyopt.errors import ScoreTypeError
from policyopt.rollout import RolloutEngine
from policyopt.sideinfo import Captured, CapturedAsync, captured
from policyopt.types import Score

EXAMPLES = [{"id": f"e{i}"} for i in range(8)]


def _feedback(evaluate: Any, n_jobs: int = 4, prompt: str = "p") -> dict[str, str | None]:
    with RolloutEngine(evaluate, n_jobs=n_jobs, max_errors=None) as engine:
        ids = engine.add_split("train", EXAMPLES)
        batch = engine.run([(prompt, i) for i in ids], split="train", label="t")
    return {str(r.example_id): r.score.feedback for r in batch.rollouts if r is not None}


def threaded(prompt: str, example: dict[str, Any]) -> Score:
    """Logs, sleeps (so that the threads interleave), logs again; returns its own feedback."""
    name = example["id"]
    policyopt.log("start", name)
    time.sleep(0.02 * (int(name[1:]) % 3))
    policyopt.log(f"end {name}")
    return Score(0.5, feedback=f"own {name}")


def test_threads_keep_their_messages_apart_after_the_evaluators_feedback() -> None:
    got = _feedback(threaded, n_jobs=4)
    assert got == {e["id"]: f"own {e['id']}\nstart {e['id']}\nend {e['id']}" for e in EXAMPLES}


def test_a_float_or_a_pair_gets_the_messages_as_its_feedback() -> None:
    def as_float(prompt: str, example: dict[str, Any]) -> float:
        policyopt.log("only", example["id"])
        return 1.0

    def as_pair(prompt: str, example: dict[str, Any]) -> tuple[float, str]:
        policyopt.log("logged")
        return 0.0, "returned"

    assert _feedback(as_float)["e3"] == "only e3"
    assert set(_feedback(as_pair).values()) == {"returned\nlogged"}


def test_nothing_logged_leaves_the_score_untouched() -> None:
    score = Score(0.25, feedback="kept", output={"x": 1})
    wrapped = captured(lambda prompt, example: score, is_async=False)
    assert wrapped("p", {}) is score


async def concurrent(prompt: str, example: dict[str, Any]) -> Score:
    name = example["id"]
    policyopt.log("a", name)
    await asyncio.sleep(0.01 * (int(name[1:]) % 4))
    policyopt.log("b", name)
    await asyncio.sleep(0)
    return Score(1.0)


def test_concurrent_asyncio_rollouts_keep_their_messages_apart() -> None:
    got = _feedback(concurrent, n_jobs=8)
    assert got == {e["id"]: f"a {e['id']}\nb {e['id']}" for e in EXAMPLES}


def test_tasks_gathered_by_hand_in_one_loop_do_not_mix() -> None:
    wrapped = captured(concurrent, is_async=True)
    assert isinstance(wrapped, CapturedAsync)

    async def main() -> list[Any]:
        return await asyncio.gather(*(wrapped("p", e) for e in EXAMPLES))

    # a loop of its own, never set as the thread's: asyncio.run() would drop (unclosed) a loop
    # that something earlier in the suite had made the main thread's
    loop = asyncio.new_event_loop()
    try:
        scores = loop.run_until_complete(main())
    finally:
        loop.close()
    assert [s.feedback for s in scores] == [f"a {e['id']}\nb {e['id']}" for e in EXAMPLES]


def test_a_nested_rollout_collects_its_own_messages_only() -> None:
    inner = captured(lambda prompt, example: policyopt.log("inner") or 1.0, is_async=False)

    def outer(prompt: str, example: dict[str, Any]) -> Score:
        policyopt.log("before")
        nested = inner(prompt, example)
        policyopt.log("after")
        return Score(0.0, feedback=f"nested said {nested.feedback!r}")  # type: ignore[union-attr]

    got = _feedback(outer, n_jobs=2)
    assert set(got.values()) == {"nested said 'inner'\nbefore\nafter"}


def test_a_thread_started_inside_evaluate_logs_only_in_a_copied_context() -> None:
    import contextvars

    def spawning(prompt: str, example: dict[str, Any]) -> float:
        plain = threading.Thread(target=policyopt.log, args=("lost",))
        plain.start()
        plain.join()
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=ctx.run, args=(policyopt.log, "kept"))
        copied.start()
        copied.join()
        return 1.0

    assert set(_feedback(spawning).values()) == {"kept"}


def test_outside_a_rollout_log_goes_to_the_library_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="policyopt"):
        policyopt.log("hello", 3, sep="-")
    assert "policyopt.log outside a rollout: hello-3" in caplog.text


def test_a_non_score_with_messages_is_still_reported_as_a_type_error() -> None:
    def wrong(prompt: str, example: dict[str, Any]) -> str:
        policyopt.log("x")
        return "not a score"

    with pytest.raises(ScoreTypeError):
        _feedback(wrong, n_jobs=1)


def module_level(prompt: str, example: dict[str, Any]) -> float:
    policyopt.log("shipped")
    return 1.0


def test_the_wrapper_pickles_for_process_backends() -> None:
    wrapped = captured(module_level, is_async=False)
    clone = pickle.loads(pickle.dumps(wrapped))
    assert isinstance(clone, Captured)
    assert clone("p", {}).feedback == "shipped"  # type: ignore[union-attr]
    assert captured(wrapped, is_async=False) is wrapped  # never wrapped twice
