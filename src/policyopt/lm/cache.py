"""On-disk LM response cache: JSON values in a diskcache store (never pickle).

Created only when an LM asks for it; nothing is written at import time.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["ResponseCache", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$POLICYOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/policyopt/lm``, else ``~/.cache/...``."""
    explicit = os.environ.get("POLICYOPT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "policyopt" / "lm"


class ResponseCache:
    """A key -> JSON-object store on disk, safe to share between threads and processes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    import diskcache

                    self.directory.mkdir(parents=True, exist_ok=True)
                    self._store = diskcache.Cache(str(self.directory))
        return self._store

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored value, or None (an unreadable entry counts as a miss)."""
        raw = self._open().get(key)
        if not isinstance(raw, str):
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` (a JSON-able dict) as text."""
        self._open().set(key, json.dumps(value, ensure_ascii=False))

    def clear(self) -> int:
        """Delete every entry; returns how many there were."""
        return int(self._open().clear())

    def __len__(self) -> int:
        return len(self._open())

    def close(self) -> None:
        """Close the underlying store (reopened on next use)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
