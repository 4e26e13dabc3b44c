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
from tests.unit.test_golden_journals import _mipro_lm, _opro_lm

#: (factory taking the LM and the shared settings, the LM factory)
OPTIMIZERS: dict[str, tuple[Callable[..., Optimizer], Callable[[], ScriptedLM]]] = {
    "gepa": (lambda lm, **kw: GEPA(reflection_lm=lm, **kw), keyword_reflection_lm),
    "mipro": (
        lambda lm, **kw: MIPRO(proposer_lm=lm, num_candidates=4, num_trials=8, **kw),
        _mipro_lm,
    ),
    "opro": (lambda lm, **kw: OPRO(meta_lm=lm, **kw), _opro_lm),
}


class FailsOnSomeExamples(CountingEvaluate):
    """Fails on two thirds of the training examples while ``broken``."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        self.broken = broken

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        if self.broken and example["id"].startswith("t") and int(example["id"][1:]) % 3:
            raise RuntimeError("backend down")
        return super().__call__(prompt, example)


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
    result = make(lm, **settings).optimize(program, train, val)
    journal = (tmp_path / "run" / "journal.jsonl").read_text(encoding="utf-8")
    paid = journal.count('"type": "start"')
    assert paid <= 60, "the hard budget holds across segments"
    if paid == 60:  # spent: nothing more may be asked of the optimizer's LM once it is
        assert result.stop_reason == "budget"
    # every live call of the resumed segment was scored by at least one rollout
    live_keys = len(lm.prompts)
    assert live_keys <= max(0, fixed.total), (live_keys, fixed.total)
