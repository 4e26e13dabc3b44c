"""The held-out task and grid on the real local model: plural's reference prompt beats the seed
prompt, and `benchmarks/heldout_grid.py --quick` runs and summarizes (so the script cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policyopt import LocalLM, RolloutEngine
from policyopt.bench import load_records
from policyopt.bench.heldout import check_one_side
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


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


def test_heldout_grid_quick_runs_and_summarizes(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "heldout_grid.py"
    # the quick plan on one feedback kind: two cells keep the suite short, the same code path
    command = [sys.executable, str(script), "--quick", "--tasks", "plural[feedback=bare]"]
    command += ["--n-jobs", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    records = load_records(tmp_path)
    assert {(r.key.task, r.key.optimizer) for r in records} == {
        ("plural[feedback=bare]", o) for o in ("gepa", "mipro")
    }
    assert all(r.status == "ok" and r.key.split_seed == 101 for r in records)
    assert check_one_side(records) == "heldout"
    assert (
        "Cells on the heldout side" in done.stdout
        and "| plural[feedback=bare] | 101 |" in done.stdout
    )
