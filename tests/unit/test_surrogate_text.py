"""Text no UTF-8 file can hold (a lone surrogate, e.g. from an exception's message or a
server's ``\\ud800`` escape) in evaluate's errors, feedback and output: the run ends with its
result written, its events readable, and a resume equal to the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, OptimizationResult, Score
from policyopt.testing.conformance import CountingEvaluate, keyword_reflection_lm, keyword_task
from policyopt.types import encodable

ODD = "bad \ud800 text"


class OddText(CountingEvaluate):
    """The keyword task, with a lone surrogate in every feedback and output, and (``fail``) in
    one example's error."""

    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.fail = fail

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        if self.fail and example["id"] == "t1":
            raise RuntimeError(ODD)
        score = super().__call__(prompt, example)
        return Score(score.score, feedback=f"{score.feedback} {ODD}", output={"said": ODD})


def _run(run_dir: Path, *, fail: bool) -> OptimizationResult:
    program, train, val = keyword_task(n_train=6, n_val=6, evaluate=OddText(fail))
    gepa = GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=40,
        seed=0,
        run_dir=str(run_dir),
        max_error_rate=1.0,
    )
    return gepa.optimize(program, train, val)


@pytest.mark.parametrize("fail", [True, False])
def test_a_lone_surrogate_in_evaluates_text_loses_nothing(
    tmp_path: Path, fail: bool, caplog: pytest.LogCaptureFixture
) -> None:
    result = _run(tmp_path / "run", fail=fail)
    # no event lost: the events log wrote them all (it logged an error per event it could not)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert result.n_rollouts > 12 and result.best_score > 0
    written = OptimizationResult.from_json((tmp_path / "run" / "result.json").read_bytes())
    assert written.best_prompt == result.best_prompt
    events = (tmp_path / "run" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["kind"] for line in events][-1] == "run_finished"
    if not fail:  # (journaled failures are run again by a resume: a path of its own)
        again = _run(tmp_path / "run", fail=fail)  # from the journal: the same run, nothing paid
        assert (again.best_prompt, again.n_rollouts) == (result.best_prompt, result.n_rollouts)


def test_encodable_replaces_only_lone_surrogates() -> None:
    assert encodable({"k\udc00": [ODD, 1, "ok \u00e9 \U0001f600"]}) == {
        "k\ufffd": ["bad \ufffd text", 1, "ok \u00e9 \U0001f600"]
    }
