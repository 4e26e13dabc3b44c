"""The built-in tasks on the real local model: the reference prompt clearly beats the seed prompt.

This is what makes a task useful for benchmarking optimizers. Eight test examples per task keep
each test to a few seconds; the full-split numbers are in each task module's docstring.
"""

from __future__ import annotations

import pytest

from policyopt import LocalLM, RolloutEngine
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(
    ("name", "split_seed", "seed_at_most", "gain_at_least"),
    [
        ("antonyms", 0, 0.25, 0.4),  # the README's claim (full test split: 0.027 vs 0.730)
        ("language_id", 0, 0.25, 0.4),
        ("extract_phone", 0, 0.25, 0.4),
        ("addition", 0, 0.25, 0.4),
        ("plural", 101, 0.1, 0.3),  # the held-out task, on a held-out split
    ],
)
def test_reference_prompt_beats_seed_prompt(
    local_lm: LocalLM, name: str, split_seed: int, seed_at_most: float, gain_at_least: float
) -> None:
    task = get_task(name, seed=split_seed)
    program = task.program(local_lm)
    examples = list(task.test[:8])
    with RolloutEngine(program.evaluate, n_jobs=4) as engine:
        ids = engine.add_split("test", examples)
        seed = engine.run([(task.seed_prompt, i) for i in ids], split="test").scores()
        reference = engine.run([(task.reference_prompt, i) for i in ids], split="test").scores()
    seed_acc, ref_acc = sum(seed) / len(seed), sum(reference) / len(reference)
    assert seed_acc <= seed_at_most, (seed_acc, ref_acc)
    assert ref_acc >= seed_acc + gain_at_least, (seed_acc, ref_acc)
