"""Golden journals: one scripted run per optimizer, recorded, must stay the same.

What a run pays for and decides (its journal of rollouts and LM answers, its result and its
events) is pinned here, so a refactor of the shared run machinery cannot change a trajectory
unnoticed. A deliberate change regenerates the files and shows up as a diff in review::

    POLICYOPT_REGEN_GOLDEN=1 ./scripts/test tests/unit/test_golden_journals.py

Fields that differ between equal runs (times, durations, paths, the start order of parallel
rollouts) are left out; records are sorted so that parallel finishing order does not matter, and
so are the proposal verdicts among the events (parallel proposals judge in any order).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, MIPRO, OPRO
from policyopt.protocol import Optimizer
from policyopt.state.journal import read_journal
from policyopt.testing.conformance import comparable, keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import keyword_meta_lm, keyword_proposer_lm

GOLDEN = Path(__file__).parent / "golden"
_VOLATILE = {"time", "duration_s", "wall_time_s", "wall_s", "run_dir", "n", "library_version"}


RUNS: dict[str, Callable[[str], Optimizer]] = {
    "gepa": lambda run_dir: GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=150,
        n_jobs=2,
        progress=False,
        run_dir=run_dir,
    ),
    "gepa_samples": lambda run_dir: GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=120,
        n_jobs=2,
        proposals_per_reflection=3,
        reflection_template="advice",
        progress=False,
        run_dir=run_dir,
    ),
    "mipro": lambda run_dir: MIPRO(
        proposer_lm=keyword_proposer_lm(),
        max_rollouts=300,
        num_candidates=5,
        num_trials=10,
        minibatch_size=6,
        n_jobs=2,
        progress=False,
        run_dir=run_dir,
    ),
    "opro": lambda run_dir: OPRO(
        meta_lm=keyword_meta_lm(), max_rollouts=120, n_jobs=2, progress=False, run_dir=run_dir
    ),
}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _sort_key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def record_run(name: str, run_dir: Path) -> dict[str, Any]:
    """The run's journal, events and result, without what differs between equal runs."""
    program, train, val = keyword_task()
    result = RUNS[name](str(run_dir)).optimize(program, train, val)
    journal = read_journal(run_dir, skip_damaged=False).records
    events = [_strip(e) for e in _read_jsonl(run_dir / "events.jsonl")]
    verdicts = sorted((e for e in events if e["kind"] == "proposal_judged"), key=_sort_key)
    ordered = [e for e in events if e["kind"] not in {"rollouts_progress", "proposal_judged"}]
    return {
        "journal": sorted((_strip(r) for r in journal), key=_sort_key),
        "events": ordered + verdicts,
        "result": _strip(json.loads(json.dumps(comparable(result)))),
    }


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_run_matches_its_golden_journal(name: str, tmp_path: Path) -> None:
    got = record_run(name, tmp_path / "run")
    path = GOLDEN / f"{name}.json"
    if os.environ.get("POLICYOPT_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    for part in ("journal", "result", "events"):
        assert got[part] == want[part], f"{name}: the {part} changed (see the module docstring)"
