"""The fast tier's share of the hostile-input regressions (issue 26): each 5xx or leak the
job-server fuzzing found, checked at its root without a server (the slow fuzz tests,
``test_fuzz_routes`` and ``test_schemathesis_extreme``, check them end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyopt.events import BatchDone
from policyopt.remote.server.job_events import JobListener, failure_reason, storable
from policyopt.remote.store import JobStore
from policyopt.runconfig.fields import resolve_ids


@pytest.mark.parametrize(
    "bounds",
    [{"start": 0, "end": 2**63}, {"start": -(2**63) - 1, "end": 1}, {"end": 10**400, "step": 1}],
)
def test_an_id_range_past_64_bits_is_refused_not_an_overflow(bounds: dict[str, int]) -> None:
    """``len(range(0, 2**63))`` raised OverflowError (a 500 on submit): counted by arithmetic."""
    with pytest.raises(ValueError, match="a range of .* ids; the limit is"):
        resolve_ids(bounds)
    assert resolve_ids({"start": 2**63, "end": 2**63 + 3}) == [str(2**63 + i) for i in range(3)]


def test_storable_text_has_no_nul_or_lone_surrogate() -> None:
    assert storable("a\x00b\ud800c\udfff") == "a\ufffdb\ufffdc\ufffd"
    assert storable("kept: \U0001f600 é \u202e") == "kept: \U0001f600 é \u202e"
    shown = failure_reason(ConnectionError(f"bad \x00 \ud800 {Path.home() / 'x' / 'y.txt'}"))
    assert shown == "ConnectionError: bad \ufffd \ufffd <path>"


def test_a_rollouts_error_is_stored_scrubbed_and_storable(tmp_path: Path) -> None:
    """A failed rollout's ``last_error`` named server files and the code location, and a NUL
    or lone surrogate in it made the job's events answer 500."""
    store = JobStore(tmp_path / "jobs.db")
    try:
        job = store.create_job(owner="o", algorithm="gepa", config={}, max_rollouts=10)
        listener = JobListener(store, job, "seed")
        error = f"OSError: \x00\ud800 {tmp_path / 'data.jsonl'} (at {Path(__file__)}:12)"
        listener(
            BatchDone(
                label="train",
                n_requested=1,
                n_run=1,
                n_cached=0,
                n_failed=1,
                n_cut=0,
                rollouts_used=1,
                max_rollouts=10,
                duration_s=0.1,
                last_error=error,
            )
        )
        (event,) = [
            e
            for e in store.events(job.id, since_seq=0, limit=10)
            if e.type == "rollouts.batch_done"
        ]
        assert event.data["last_error"] == "OSError: \ufffd\ufffd <path> (at <path>:12)"
    finally:
        store.close()
