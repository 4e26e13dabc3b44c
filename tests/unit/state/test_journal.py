"""The journal keeps every complete record, whatever the size of a torn tail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyopt.errors import StateError
from policyopt.state.journal import (
    JOURNAL_FILE,
    Journal,
    JournalCorrupt,
    JournalRead,
    encode_record,
    read_journal,
)

# records of very different sizes: small dicts, and text of up to ~2 MB (a huge LM answer)
_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 2_000_000)),
)
_records = st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["rollout", "proposal"]), "text": _text}),
    min_size=1,
    max_size=6,
)


def _write(path: Path, records: list[dict[str, object]]) -> bytes:
    journal = Journal(path)
    journal.extend(records)
    journal.close()
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, where=st.floats(0.0, 1.0), data=st.data())
def test_a_cut_anywhere_keeps_every_complete_record(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[dict[str, object]],
    where: float,
    data: st.DataObject,
) -> None:
    path = tmp_path_factory.mktemp("j") / "journal.jsonl"
    blob = _write(path, records)
    ends = []  # byte offset just past each record's newline
    for record in records:
        ends.append((ends[-1] if ends else 0) + len(encode_record(record)))
    # a cut inside or at the edge of a random record (edges matter: off-by-one lives there)
    index = data.draw(st.integers(0, len(records) - 1))
    start = ends[index - 1] if index else 0
    cut = data.draw(
        st.sampled_from(
            sorted({start, start + 1, ends[index] - 1, int(start + where * (ends[index] - start))})
        )
    )
    cut = min(cut, len(blob))
    path.write_bytes(blob[:cut])

    complete = [r for r, end in zip(records, ends, strict=True) if end <= cut]
    # a last record missing only its newline is whole: it is kept too
    survivors = Journal(path).read()
    assert survivors[: len(complete)] == complete
    assert len(survivors) - len(complete) <= 1
    if len(survivors) > len(complete):
        assert cut == ends[index] - 1 and survivors[-1] == records[index]

    # the next append is readable, and nothing complete was lost
    journal = Journal(path)
    journal.append({"type": "after", "n": 1})
    journal.close()
    again = Journal(path).read()
    assert again[:-1] == survivors
    assert again[-1] == {"type": "after", "n": 1}


def test_a_torn_tail_bigger_than_any_read_window_keeps_the_past(tmp_path: Path) -> None:
    """The bug that wiped a 162 MB journal: no newline in the last 64 KiB."""
    path = tmp_path / "journal.jsonl"
    small = [{"type": "rollout", "n": i} for i in range(100)]
    blob = _write(path, [*small, {"type": "proposal", "text": "x" * 1_000_000}])
    path.write_bytes(blob[:-500_000])  # killed in the middle of the 1 MB record
    journal = Journal(path)
    assert journal.read() == small
    journal.append({"type": "rollout", "n": 100})
    journal.close()
    assert Journal(path).read() == [*small, {"type": "rollout", "n": 100}]


def test_lone_surrogates_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    records = [{"type": "proposal", "text": "bad \ud800 text"}, {"type": "x", "text": "é"}]
    _write(path, records)
    assert Journal(path).read() == records


def test_corruption_before_the_last_line_is_an_error_not_a_silent_loss(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(StateError, match="line 2"):
        Journal(path).read()


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a": 1}\n\n' + json.dumps({"a": 2}).encode() + b"\n")
    assert Journal(path).read() == [{"a": 1}, {"a": 2}]


def test_a_run_dir_is_used_by_one_run_at_a_time(tmp_path: Path) -> None:
    """Two writers of one journal would pay finished rollouts twice: the second is refused."""
    from policyopt.state.rundir import RunDir

    first = RunDir(tmp_path, optimizer="gepa", identity={}, settings={})
    with pytest.raises(StateError, match=r"in use by another run \(pid \d+\)"):
        RunDir(tmp_path, optimizer="gepa", identity={}, settings={})
    first.close()
    RunDir(tmp_path, optimizer="gepa", identity={}, settings={}).close()
    # a refused resume lets the run dir go at once
    with pytest.raises(StateError, match="holds a 'gepa' run"):
        RunDir(tmp_path, optimizer="mipro", identity={}, settings={})
    RunDir(tmp_path, optimizer="gepa", identity={}, settings={}).close()


def test_read_journal_is_the_readers_view_of_torn_and_damaged_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The one reader: a run dir or its file; torn tail left out, damaged lines skipped with a
    warning or (strict, as a resuming run reads) an error naming the line."""
    assert read_journal(tmp_path) == JournalRead()  # no journal yet
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(b'{"type": "rollout"}\n{"type": \n{"type": "start"}\n{"type": "rol')
    with caplog.at_level("WARNING", logger="policyopt"):
        read = read_journal(tmp_path)
    assert read == read_journal(path)
    assert read.records == [{"type": "rollout"}, {"type": "start"}]
    assert (read.torn_tail, read.damaged_lines, len(read.of_type("rollout"))) == (True, 1, 1)
    assert any("skipping damaged line 2" in m for m in caplog.messages)
    assert any("torn last record" in m for m in caplog.messages)
    with pytest.raises(JournalCorrupt, match="line 2") as raised:
        read_journal(tmp_path, skip_damaged=False)
    assert raised.value.kept == 1
    path.write_bytes(b'{"type": "rollout"}\n{"type": "start"}')  # whole, only its newline lost
    assert read_journal(path) == JournalRead([{"type": "rollout"}, {"type": "start"}])
