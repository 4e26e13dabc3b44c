"""Events: the bus, the JSONL log and the progress display, all consumers of one stream."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from policyopt import RolloutEngine
from policyopt.events import (
    BatchDone,
    Event,
    EventBus,
    JSONLEventLog,
    NewBest,
    RunFinished,
    RunStarted,
)
from policyopt.progress import ProgressDisplay


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("display bug")

    bus = EventBus([broken, seen.append])
    with caplog.at_level(logging.ERROR, logger="policyopt"):
        bus.emit(NewBest(candidate=1, score=0.5, rollouts_used=3))
    assert len(seen) == 1 and "display bug" in caplog.text


def test_jsonl_log_writes_one_parseable_line_per_event(tmp_path: Path) -> None:
    log = JSONLEventLog(tmp_path / "events.jsonl")
    engine = RolloutEngine(lambda p, e: 1.0, events=EventBus([log]))
    ids = engine.add_split("val", [1, 2, 3])
    engine.run([("p", i) for i in ids], split="val", label="seed")
    log(NewBest(candidate=0, score=1.0, rollouts_used=3))
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["batch_done", "new_best"]
    assert lines[0]["n_run"] == 3 and lines[0]["label"] == "seed"


def run_display(display: ProgressDisplay, events: list[Any]) -> None:
    for event in events:
        display(event)


STREAM = [
    RunStarted(optimizer="x", max_rollouts=100, n_train=5, n_val=5),
    BatchDone(
        label="",
        n_requested=40,
        n_run=40,
        n_cached=0,
        n_failed=0,
        n_cut=0,
        rollouts_used=40,
        max_rollouts=100,
        duration_s=1.0,
    ),
    NewBest(candidate=2, score=0.75, rollouts_used=40),
    RunFinished(
        best_score=0.75, best_candidate=2, n_rollouts=60, stop_reason="budget", wall_time_s=2.0
    ),
]


def test_progress_in_a_log_file_is_plain_lines() -> None:
    out = io.StringIO()
    run_display(ProgressDisplay(stream=out, live=False, interval=0.0), STREAM)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("[policyopt] 60/100 rollouts, best 0.750")
    # one batch is too little to extrapolate from: no time-left estimate yet
    assert any("40/100 rollouts" in line and "left" not in line for line in lines)


def test_progress_live_bar_renders() -> None:
    out = io.StringIO()
    run_display(ProgressDisplay(stream=out, live=True), STREAM)
    assert "60/100" in out.getvalue() and "best 0.750" in out.getvalue()
