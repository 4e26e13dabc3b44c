"""Val-test gap and cost per point of gain in the bench report, from scripted cell records."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policyopt.bench import markdown_report, write_report
from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.bench.report import cost_per_point
from policyopt.types import LMUsage

ROOT = Path(__file__).resolve().parents[3]


def _record(
    optimizer: str,
    seed: int,
    base: float,
    opt: float,
    val: float | None,
    calls: int,
    tokens: int,
    usd: float | None,
) -> CellRecord:
    key = CellKey(task="t", optimizer=optimizer, seed=seed, budget=10, fingerprint="x")
    return CellRecord(
        key=key,
        status="ok",
        baseline_test=SplitScore(score=base, n_examples=10),
        optimized_test=SplitScore(score=opt, n_examples=10),
        best_val_score=val,
        optimizer_usage=LMUsage(
            calls=calls,
            prompt_tokens=tokens // 2,
            completion_tokens=tokens - tokens // 2,
            cost_usd=usd,
        ),
    )


def _row(text: str, section: str, name: str) -> list[str]:
    part = text.split(section, 1)[1]
    line = next(x for x in part.splitlines() if x.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_gap_and_cost_per_point_by_hand() -> None:
    records = [
        # gains 0.2 and 0.1: mean 0.15 = 15 points; calls 30, 60 -> 45 / 15 = 3.0 per point
        _record("x", 0, 0.1, 0.3, 0.5, 30, 1000, 0.03),
        _record("x", 1, 0.2, 0.3, 0.4, 60, 2000, 0.06),
        # mean gain -0.1: nothing to pay for -> n/a; no price -> n/a too (gain decides first)
        _record("y", 0, 0.5, 0.4, 0.9, 10, 100, None),
        # gain 0.1, price unknown -> dollars "-"
        _record("z", 0, 0.1, 0.2, None, 20, 400, None),
    ]
    assert records[0].val_test_gap == pytest.approx(0.2)
    assert records[3].val_test_gap is None
    x = cost_per_point(records[:2])
    assert x["calls"] == pytest.approx(3.0)
    assert x["tokens"] == pytest.approx(100.0)
    assert x["usd"] == pytest.approx(0.003)
    y = cost_per_point(records[2:3])
    assert y["calls"] is not None and math.isnan(y["calls"])
    assert y["usd"] is None
    assert cost_per_point(records[3:])["usd"] is None

    text = markdown_report(records)
    header = _row(text, "## Overall", "optimizer")
    cols = {name: i for i, name in enumerate(header)}
    x_row, y_row, z_row = (_row(text, "## Overall", n) for n in "xyz")
    assert x_row[cols["val-test gap (mean)"]] == "+0.150"  # (0.2 + 0.1) / 2
    assert x_row[cols["opt LM calls / point"]] == "3.0"
    assert x_row[cols["opt tokens / point"]] == "100"
    assert x_row[cols["opt $ / point"]] == "0.0030"
    assert y_row[cols["val-test gap (mean)"]] == "+0.500"
    assert y_row[cols["opt LM calls / point"]] == "n/a"
    assert y_row[cols["opt tokens / point"]] == "n/a"
    assert z_row[cols["val-test gap (mean)"]] == "-"
    assert z_row[cols["opt LM calls / point"]] == "2.0"  # 20 calls / 10 points
    assert z_row[cols["opt $ / point"]] == "-"
    task_header = _row(text, "## t", "optimizer")
    assert _row(text, "## t", "x")[task_header.index("val-test gap")] == "+0.150"
    assert len(header) == len(x_row)  # every row fills every column


def test_cells_csv_has_the_gap(tmp_path: Path) -> None:
    records = [_record("x", 0, 0.1, 0.3, 0.5, 30, 1000, None)]
    paths = write_report(records, tmp_path, plots=False)
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert float(rows[0]["val_test_gap"]) == pytest.approx(0.2)


def test_old_records_without_usage_or_val_still_report(tmp_path: Path) -> None:
    """A record written before these columns (no best_val_score, no usage) loads and reports."""
    key = {"task": "t", "optimizer": "x", "seed": 0, "budget": 10, "fingerprint": "f"}
    old = {
        "key": key,
        "status": "ok",
        "baseline_test": {"score": 0.1, "n_examples": 5},
        "optimized_test": {"score": 0.3, "n_examples": 5},
    }
    record = CellRecord.model_validate_json(json.dumps(old))
    assert record.val_test_gap is None
    text = markdown_report([record])
    row = _row(text, "## Overall", "x")
    assert "0.0" in row  # 0 optimizer calls / 20 points


@pytest.mark.skipif(
    not (ROOT / "benchmarks" / "results").is_dir(), reason="no committed benchmark results"
)
def test_committed_results_rebuild(tmp_path: Path) -> None:
    """The real records in benchmarks/results/ rebuild into a report with the new columns."""
    source = next(
        (
            p.parent
            for p in sorted((ROOT / "benchmarks" / "results").glob("*/bench.json"))
            if "ablations" not in p.parts and (p.parent / "cells").is_dir()
        ),
        None,
    )
    if source is None:
        pytest.skip("no results directory with cells")
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    subprocess.run(
        [
            str(Path(sys.executable).with_name("policyopt")),
            "bench",
            "--report-only",
            "--no-plots",
            "--out",
            str(copy),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = (copy / "report.md").read_text()
    assert "val-test gap (mean)" in text and "opt LM calls / point" in text


def _curved(optimizer: str, task: str, seed: int, curve: list, rollouts: int) -> CellRecord:
    key = CellKey(task=task, optimizer=optimizer, seed=seed, budget=200, fingerprint="x")
    return CellRecord(
        key=key,
        status="ok",
        baseline_test=SplitScore(score=0.0, n_examples=10),
        optimized_test=SplitScore(score=0.5, n_examples=10),
        best_val_score=max(s for _, s in curve),
        curve=curve,
        rollouts=rollouts,
    )


def test_rollouts_to_reach_by_hand() -> None:
    from policyopt.bench.report import rollouts_to_reach

    records = [
        # ours: mean curve 0.1 at 20, (0.5+0.1)/2=0.3 at 50, (0.5+0.7)/2=0.6 at 90
        _curved("ours", "a", 0, [(20, 0.1), (50, 0.5)], 100),
        _curved("ours", "b", 0, [(20, 0.1), (90, 0.7)], 100),
        # peer: final mean val (0.6 + 0.4) / 2 = 0.5 after 200 and 180 rollouts
        _curved("peer", "a", 0, [(30, 0.2), (200, 0.6)], 200),
        _curved("peer", "b", 0, [(30, 0.4)], 180),
        # a cell only the peer ran is left out of both
        _curved("peer", "c", 0, [(10, 0.0)], 50),
    ]
    assert rollouts_to_reach(records, "ours", "peer") == (90, 190.0, 0.5)
    # the peer never reaches ours' final mean (0.6) within its run
    reach = rollouts_to_reach(records, "peer", "ours")
    assert reach is not None and reach[0] is None and reach[2] == pytest.approx(0.6)
    assert rollouts_to_reach(records, "ours", "nobody") is None
    text = markdown_report(records)
    row = _row(text, "## Rollouts to reach", "ours")
    assert row == ["ours", "-", "0.47 (90 / 190)"]
    assert _row(text, "## Rollouts to reach", "peer")[1] == "never (0.600)"
