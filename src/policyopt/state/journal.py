"""Append-only JSONL journal: the durable record of a run's finished rollouts and steps.

One JSON object per line. A process killed mid-write leaves a torn last line; :meth:`Journal.read`
drops it and :meth:`Journal.append` truncates it before writing, so the file stays parseable.
Writes are flushed per record (a SIGKILLed process loses nothing it wrote) and fsynced on
:meth:`Journal.sync` (an OS crash loses at most the records since the last sync).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from policyopt.errors import StateError

__all__ = ["Journal"]

logger = logging.getLogger("policyopt")


class Journal:
    """A JSONL file of records (dicts); safe against torn tails, single writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        """All complete records, in order; a torn final line is ignored."""
        return list(self._iter_records())

    def _iter_records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            lines = handle.read().split(b"\n")
        # The last element is b"" when the file ends with a newline; otherwise it is a torn tail.
        body, tail = lines[:-1], lines[-1]
        for number, raw in enumerate(body, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise StateError(
                    f"{self.path} line {number} is not valid JSON ({exc.msg}); the journal is "
                    "corrupt somewhere other than its last line. Move it away to start afresh."
                ) from exc
            if not isinstance(record, dict):
                raise StateError(f"{self.path} line {number} is not a JSON object.")
            yield record
        if tail.strip():
            logger.warning("dropping a torn last record in %s (%d bytes)", self.path, len(tail))

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab+")
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size:
                # Truncate a torn tail (bytes after the last newline) before appending.
                handle.seek(max(0, size - 65536))
                chunk = handle.read()
                cut = chunk.rfind(b"\n")
                keep = size - len(chunk) + cut + 1 if cut >= 0 else 0
                if keep != size:
                    handle.truncate(keep)
                handle.seek(0, os.SEEK_END)
            self._file = handle
        return self._file

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to the OS."""
        self.extend([record])

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        """Append several records with one flush."""
        data = b"".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":"), default=repr).encode("utf-8")
            + b"\n"
            for r in records
        )
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
