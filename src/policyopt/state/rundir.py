"""A run directory: what makes an optimizer run resumable and inspectable.

Layout::

    run_dir/
      config.json     optimizer, settings, data fingerprint, versions (checked on resume)
      journal.jsonl   every paid rollout and every proposal LM answer, appended as they finish
      state.json      a JSON snapshot after each step (candidates, RNG/sampler state, counters)
      events.jsonl    the event stream (progress, new best, ...)
      result.json     the final OptimizationResult
      examples.jsonl  the validation examples (written by ``policyopt optimize``)
      STOP            create this file to stop the run cleanly after the current step

Resuming replays the run from the start: every rollout and proposal already in the journal is
answered from it at no cost, so the resumed run reaches the same state as an uninterrupted one
and then goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from policyopt._version import __version__
from policyopt.errors import StateError
from policyopt.state.journal import JOURNAL_FILE, Journal, read_journal

__all__ = [
    "EXAMPLES_FILE",
    "LATER_IDENTITY",
    "RunDir",
    "callable_identity",
    "fingerprint",
    "lock_run_dir",
]

#: identity keys that older run dirs did not record: a run dir without one still resumes (MIPRO's
#: run dirs from before its perfect-score stop lack ``stop_at_perfect`` and ``perfect_score``)
LATER_IDENTITY = frozenset({"evaluate", "task_model", "stop_at_perfect", "perfect_score"})

#: the validation examples of a run (``policyopt optimize`` writes it; ``show --examples``
#: reads it), one {"split", "id", "example"} a line
EXAMPLES_FILE = "examples.jsonl"


def fingerprint(examples: Sequence[Any], ids: Sequence[str]) -> str:
    """Hash of a dataset: its content when JSON-serializable, else its ids."""
    try:
        text = json.dumps(list(examples), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(list(ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# inspect.getsource parses a class's module with ``ast``; CPython 3.11 keeps the AST builder's
# recursion depth per interpreter, so two threads parsing at once fail with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905). Parallel bench cells and jobs
# compute identities in threads: one at a time, and each target's source once.
_SOURCE_LOCK = threading.Lock()
_SOURCES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _source_text(target: Any) -> str:
    with _SOURCE_LOCK:
        try:
            cached = _SOURCES.get(target)
        except TypeError:  # no weak reference to it (a builtin)
            cached = None
        if cached is not None:
            return cached
        try:
            text = inspect.getsource(target)
        except (OSError, TypeError):
            code = getattr(target, "__code__", None)
            text = code.co_code.hex() if code is not None else ""
        with contextlib.suppress(TypeError):
            _SOURCES[target] = text
        return text


def callable_identity(fn: Any) -> str:
    """What a run's cached scores depend on in ``evaluate``: its qualified name and a hash of
    its source (of its class for a callable object; of its bytecode where there is no source).

    A changed metric or task under the same run dir then shows as a changed identity instead of
    old cached scores mixed with new ones.
    """
    target = fn
    for _ in range(16):  # functools.partial, and wrappers that name what they wrap
        inner = getattr(target, "__wrapped__", None) or getattr(target, "func", None)
        if inner is None or not callable(inner):
            break
        target = inner
    if not inspect.isroutine(target):
        target = type(target)
    name = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"
    text = _source_text(target)
    return f"{name}@{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _lock(path: Path) -> IO[str] | None:
    """An exclusive lock on the run dir: two processes writing one journal would pay finished
    rollouts twice. Held until :meth:`RunDir.close` or the process ends (SIGKILL included)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        return None
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StateError(
            f"{path.parent} is in use by another run ({holder}); wait for it to end, or use "
            "another run_dir."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


@contextlib.contextmanager
def lock_run_dir(path: Path) -> Iterator[None]:
    """Hold the run dir's lock for a moment (to repair it); :class:`StateError` when a run
    holds it."""
    handle = _lock(path / ".lock")
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


class RunDir:
    """Files of one run; refuses to resume a directory written with other settings or data."""

    def __init__(
        self,
        path: str | Path,
        *,
        optimizer: str,
        identity: Mapping[str, Any],
        settings: Mapping[str, Any],
        accept_changed: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self.accept_changed = frozenset(accept_changed)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path / ".lock")
        try:
            self._check(optimizer, identity, settings)
        except BaseException:
            self.close()
            raise
        self.journal = Journal(self.path / JOURNAL_FILE)

    def _check(
        self, optimizer: str, identity: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> None:
        """Refuse to resume a run written with other settings; write ``config.json``."""
        config_path = self.path / "config.json"
        config = {
            "optimizer": optimizer,
            "identity": dict(identity),
            "settings": dict(settings),
            "library_version": __version__,
        }
        self.resumed = config_path.exists()
        self.changed: tuple[str, ...] = ()  # identity parts that changed, all accepted
        if self.resumed:
            try:
                old = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise StateError(f"{config_path} is not valid JSON: {exc}") from exc
            if old.get("optimizer") != optimizer:
                raise StateError(
                    f"{self.path} holds a {old.get('optimizer')!r} run, not a {optimizer!r} one. "
                    "Use another run_dir."
                )
            before = old.get("identity", {})
            now = json.loads(json.dumps(dict(identity)))
            changed = sorted(
                k
                for k in set(before) | set(now)
                if before.get(k) != now.get(k) and (k in before or k not in LATER_IDENTITY)
            )
            refused = [k for k in changed if k not in self.accept_changed]
            if refused:
                details = ", ".join(
                    f"{k}: {_short(before.get(k))} -> {_short(now.get(k))}" for k in refused
                )
                raise StateError(
                    f"Cannot resume {self.path}: it was started with other settings, data or "
                    f"code ({details}); its cached scores belong to the old ones. Use the same "
                    "ones (budget, time and cost limits may change), or another run_dir to "
                    f"start afresh, or accept the change: accept_changed={refused!r} "
                    f"(CLI: --accept-changed {','.join(refused)})."
                )
            self.changed = tuple(changed)
        _atomic_write(config_path, json.dumps(config, indent=2, default=repr))

    def close(self) -> None:
        """Let another process use this run dir (the lock also ends with the process)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def events_path(self) -> Path:
        """Where the JSONL event log goes."""
        return self.path / "events.jsonl"

    @property
    def stop_file(self) -> Path:
        """Create this file to stop the run after the current step."""
        return self.path / "STOP"

    def records(self, kind: str) -> list[dict[str, Any]]:
        """Journal records of one ``type``."""
        return read_journal(self.journal.path, skip_damaged=False).of_type(kind)

    def write_state(self, state: Mapping[str, Any]) -> None:
        """Replace ``state.json`` atomically."""
        _atomic_write(self.path / "state.json", json.dumps(state, indent=1, default=repr))

    @staticmethod
    def read_state(run_dir: str | Path) -> dict[str, Any] | None:
        """The last snapshot of the run in ``run_dir``, if any (read only, no checks)."""
        path = Path(run_dir) / "state.json"
        if not path.exists():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def write_result(self, text: str) -> None:
        """Write ``result.json`` atomically."""
        _atomic_write(self.path / "result.json", text)
