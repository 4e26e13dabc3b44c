"""Append-only JSONL journal: the durable record of a run's rollouts and steps.

One JSON object per line, written with one ``write`` and flushed per record, so a SIGKILLed
process loses nothing it wrote; :meth:`Journal.sync` fsyncs (an OS crash loses at most the
records since the last sync). A process killed mid-write leaves a torn last line of any size:
:meth:`Journal.read` ignores it and the next append cuts it off, scanning back to the last
newline however far away it is, so every complete record survives. A last line that is a whole
JSON object missing only its newline is kept (it can only be the complete record).

:func:`read_journal` is the one reader of a journal's records for everything that reads a run
(``policyopt show``/``plot``, the CLI's checks, the job server): it says whether a torn last
record was left out and how many damaged lines in the middle were skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from policyopt.errors import StateError

__all__ = [
    "JOURNAL_FILE",
    "Journal",
    "JournalCorrupt",
    "JournalRead",
    "encode_record",
    "read_journal",
]

#: a run dir's journal file
JOURNAL_FILE = "journal.jsonl"

logger = logging.getLogger("policyopt")

_CHUNK = 1 << 16  # bytes read per step when scanning back for the last newline


class JournalCorrupt(StateError):
    """A line in the middle of a journal is not a JSON object: the records before it are intact
    (``kept``); :meth:`Journal.salvage` keeps only them, so a run can resume from them."""

    def __init__(self, message: str, *, path: Path, line: int, kept: int) -> None:
        super().__init__(message)
        self.path, self.line, self.kept = path, line, kept


@dataclass
class JournalRead:
    """A journal as read: its complete records, whether a torn last record (a process killed
    mid-write) was left out, and how many damaged lines in the middle were skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bool = False
    damaged_lines: int = 0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """The records of one ``type`` (``rollout``, ``start``, ``verdict``, an LM's kind ...)."""
        return [r for r in self.records if r.get("type") == kind]


def read_journal(path: str | Path, *, skip_damaged: bool = True) -> JournalRead:
    """The records of the journal at ``path`` (a run dir or the journal file; none when it
    does not exist). A torn last record is left out, as a resuming run leaves it. A damaged
    line in the middle is skipped with a warning (readers: ``show``, ``plot``, the job server),
    or with ``skip_damaged=False`` raises :class:`JournalCorrupt` (whose records before it
    ``policyopt optimize --salvage`` keeps)."""
    path = Path(path)
    journal = Journal(path / JOURNAL_FILE if path.is_dir() else path)
    read = JournalRead()
    read.records = list(journal._scan(skip_damaged, read))
    return read


def encode_record(record: dict[str, Any]) -> bytes:
    """One record as a JSON line; text with lone surrogates falls back to ``\\u`` escapes."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=repr)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped JSON round-trips it exactly
        data = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=repr).encode()
    return data + b"\n"


def _whole_object(raw: bytes) -> bool:
    """True when ``raw`` (a last line without newline) is a complete JSON object."""
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _last_newline(handle: IO[bytes], size: int) -> int:
    """Offset just past the last newline of the file (0 when there is none)."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        handle.seek(start)
        cut = handle.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


class Journal:
    """A JSONL file of records (dicts); safe against torn tails, one writer process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def read(self, *, skip_damaged: bool = False) -> list[dict[str, Any]]:
        """All complete records, in order; a torn final line is ignored. A damaged line in the
        middle raises :class:`JournalCorrupt`, or with ``skip_damaged`` is skipped with a
        warning (for readers such as ``policyopt show``; a resumed run never skips one)."""
        return list(self.iter_records(skip_damaged=skip_damaged))

    def iter_records(self, *, skip_damaged: bool = False) -> Iterator[dict[str, Any]]:
        """Complete records one at a time (the file is streamed, not loaded whole)."""
        return self._scan(skip_damaged, JournalRead())

    def _scan(self, skip_damaged: bool, tally: JournalRead) -> Iterator[dict[str, Any]]:
        """The one parser of journal lines; ``tally`` notes a torn tail and skipped lines."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            number = kept = 0
            pending: bytes | None = None
            for raw in handle:
                if pending is not None and pending.strip():
                    record = self._parse(pending, number, kept, skip_damaged)
                    if record is not None:
                        kept += 1
                        yield record
                    else:
                        tally.damaged_lines += 1
                number += 1
                pending = raw
            if pending is None or not pending.strip():
                return
            if pending.endswith(b"\n") or _whole_object(pending):
                record = self._parse(pending, number, kept, skip_damaged)
                if record is not None:
                    yield record
                else:
                    tally.damaged_lines += 1
            else:
                tally.torn_tail = True
                logger.warning(
                    "ignoring a torn last record in %s (%d bytes)", self.path, len(pending)
                )

    def _parse(
        self, raw: bytes, number: int, kept: int, skip_damaged: bool
    ) -> dict[str, Any] | None:
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            return record
        if skip_damaged:
            logger.warning("skipping damaged line %d of %s (not a JSON object)", number, self.path)
            return None
        raise JournalCorrupt(
            f"{self.path} line {number} is damaged (not a JSON object); the {kept} records "
            "before it are intact: salvage them to resume (policyopt optimize --salvage, or "
            "Journal(path).salvage()), or move the run dir away to start afresh.",
            path=self.path,
            line=number,
            kept=kept,
        )

    def salvage(self) -> tuple[int, Path | None]:
        """Keep only the records before the first damaged line, so a run resumes from them; the
        whole file is kept beside as ``journal.jsonl.damaged`` (numbered if that exists).
        Returns (records kept, the copy), or (all records, None) when nothing is damaged."""
        try:
            return len(self.read()), None
        except JournalCorrupt as exc:
            line = exc.line
        lines = self.path.read_bytes().splitlines(keepends=True)[: line - 1]
        copy = self.path.with_name(self.path.name + ".damaged")
        n = 1
        while copy.exists():
            n += 1
            copy = self.path.with_name(f"{self.path.name}.damaged{n}")
        os.replace(self.path, copy)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(b"".join(lines))
        os.replace(tmp, self.path)
        return len(self.read()), copy

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab+")
            size = handle.seek(0, os.SEEK_END)
            if size:
                keep = _last_newline(handle, size)
                if keep != size:
                    handle.seek(keep)
                    tail = handle.read(size - keep)
                    if _whole_object(tail):
                        handle.seek(0, os.SEEK_END)
                        handle.write(b"\n")  # the record was whole: only its newline was lost
                    else:
                        logger.warning("cutting a torn last record (%d bytes)", size - keep)
                        handle.truncate(keep)
                handle.seek(0, os.SEEK_END)
            self._file = handle
        return self._file

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        """Append several records with one write and one flush."""
        data = b"".join(encode_record(r) for r in records)
        if not data:
            return
        with self._lock:
            handle = self._open()
            handle.write(data)
            handle.flush()

    def sync(self) -> None:
        """fsync what was written so far."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Sync and close the file (it is reopened on the next append)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None
