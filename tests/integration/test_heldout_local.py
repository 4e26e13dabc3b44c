"""The held-out task on the real local model: plural's reference prompt beats the seed prompt
(the held-out grid's quick plan runs in test_bench_local.py)."""

from __future__ import annotations

import pytest

from policyopt import LocalLM, RolloutEngine
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_plural_reference_prompt_beats_seed_prompt(local_lm: LocalLM) -> None:
    task = get_task("plural", seed=101)
    program = task.program(local_lm)
    examples = list(task.test[:12])
    with RolloutEngine(program.evaluate, n_jobs=4) as engine:
        ids = engine.add_split("test", examples)
        seed = engine.run([(task.seed_prompt, i) for i in ids], split="test").scores()
        reference = engine.run([(task.reference_prompt, i) for i in ids], split="test").scores()
    seed_acc, ref_acc = sum(seed) / len(seed), sum(reference) / len(reference)
    assert seed_acc <= 0.1 and ref_acc >= seed_acc + 0.3, (seed_acc, ref_acc)
