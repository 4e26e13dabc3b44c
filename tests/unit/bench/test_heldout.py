"""The held-out protocol: records carry their split seed, and no summary pools the two sides."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from policyopt.bench import load_records
from policyopt.bench.heldout import DEVELOPMENT, HELDOUT, check_one_side, side_of
from policyopt.bench.records import BenchSettings, CellKey, CellRecord, SplitScore
from policyopt.errors import ConfigError
from tests.unit.bench.test_fingerprint import _run

ROOT = Path(__file__).resolve().parents[3]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(task: str, split_seed: int, seed: int = 0) -> CellRecord:
    key = CellKey(task=task, optimizer="gepa", seed=seed, budget=5, fingerprint="f",
                  split_seed=split_seed)  # fmt: skip
    score = SplitScore(score=0.5, n_examples=2)
    return CellRecord(key=key, status="ok", baseline_test=score, optimized_test=score)


def test_the_sides_are_disjoint_and_named_by_task_and_split_seed() -> None:
    assert set(DEVELOPMENT.split_seeds).isdisjoint(HELDOUT.split_seeds)
    assert side_of("antonyms", 0) == side_of("addition[feedback=bare]", 0) == "development"
    assert side_of("antonyms", 101) == side_of("extract_phone[feedback=bare]", 105) == "heldout"
    assert side_of("plural", 0) == "heldout"  # a task never used while tuning, on any split
    assert side_of("antonyms", 7) == side_of("langprobe:hover", 0) == "other"
    assert "plural[feedback=bare]" in HELDOUT.names() and "antonyms" in DEVELOPMENT.names()


def test_cell_keys_and_records_carry_the_split_seed(tmp_path: Path) -> None:
    settings = BenchSettings(tasks=["t"], optimizers=["gepa"], split_seed=101)
    key = CellKey.of(settings, "t", "gepa", 0)
    assert key.split_seed == 101
    assert key.fingerprint != CellKey.of(settings.model_copy(update={"split_seed": 0}), "t",
                                         "gepa", 0).fingerprint  # fmt: skip
    _run(tmp_path / "b", split_seed=101)
    (record,) = load_records(tmp_path / "b")
    assert record.key.split_seed == 101
    old = record.key.model_dump()
    del old["split_seed"]  # a record written before keys carried it: the published split
    assert CellKey.model_validate(old).split_seed == 0


def test_mixing_development_and_heldout_cells_is_refused() -> None:
    assert check_one_side([]) is None
    assert check_one_side([_cell("antonyms", 0), _cell("addition[feedback=bare]", 0)]) == (
        "development"
    )
    assert check_one_side([_cell("plural", 101), _cell("antonyms", 101, seed=1)]) == "heldout"
    with pytest.raises(ConfigError, match=r"development: antonyms split seed 0.*heldout"):
        check_one_side([_cell("antonyms", 0), _cell("antonyms", 101)])
    with pytest.raises(ConfigError, match="must not be summarized together"):
        check_one_side([_cell("plural", 0), _cell("language_id", 0)])


def test_heldout_grid_plans_only_heldout_cells_one_bench_per_data_seed(tmp_path: Path) -> None:
    grid = _script("heldout_grid")
    lines = grid.commands(tmp_path)
    assert len(lines) == len(HELDOUT.split_seeds)
    for line, seed in zip(lines, HELDOUT.split_seeds, strict=True):
        assert line[:2] == ["policyopt", "bench"]
        flags = dict(zip(line[2::2], line[3::2], strict=True))
        assert flags["--seeds"] == flags["--split-seed"] == str(seed)
        assert flags["--tasks"].split(",") == HELDOUT.names() and flags["--budget"] == "200"
        assert flags["--optimizers"] == "gepa,mipro,gepa-lib,dspy-gepa,dspy-mipro"
    with pytest.raises(ValueError, match="not held-out"):
        grid.commands(tmp_path, tasks=["antonyms"], seeds=[0])
    quick = grid.commands(tmp_path, n_jobs=2, **grid.QUICK)
    assert len(quick) == 1 and "--limit" in quick[0]


def test_grid_summary_refuses_a_folder_mixing_the_sides(tmp_path: Path) -> None:
    cells = tmp_path / "cells"
    cells.mkdir()
    for i, record in enumerate([_cell("antonyms", 0), _cell("antonyms", 101, seed=1)]):
        (cells / f"c{i}.json").write_text(record.model_dump_json(), encoding="utf-8")
    summary = ROOT / "benchmarks" / "grid_summary.py"
    done = subprocess.run([sys.executable, str(summary), str(tmp_path)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and "must not be summarized together" in done.stderr
