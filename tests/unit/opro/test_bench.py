"""``policyopt bench --optimizers opro`` works through the generic registry adapter."""

from __future__ import annotations

from pathlib import Path

from policyopt.bench import load_records
from policyopt.bench.registry import names
from tests.unit.bench.test_harness import run


def test_opro_is_a_bench_entry_and_its_cells_run(tmp_path: Path) -> None:
    assert "opro" in names()
    run(tmp_path, optimizers=["opro"], seeds=[0])
    (record,) = load_records(tmp_path)
    assert record.key.optimizer == "opro" and record.status == "ok", record.error
    assert record.baseline_test is not None and record.baseline_test.score == 0.0
    assert record.optimized_test is not None and record.optimized_test.score == 1.0
    assert 0 < record.rollouts <= 60 and record.optimizer_usage.calls > 0
    assert record.curve and record.curve[-1][1] == record.best_val_score == 1.0
