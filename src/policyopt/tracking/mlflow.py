"""MLflow tracking: an events listener that logs a run's settings, scores, spend and files.

::

    from policyopt.tracking.mlflow import mlflow_listener

    with mlflow_listener("sqlite:///mlflow.db", experiment="antonyms") as run:
        result = GEPA(..., run_dir="runs/a", listeners=[run]).optimize(program, train, val)
        run.log_run_dir("runs/a")          # best prompt, result.json, plots as artifacts

What one run holds:

- params: the optimizer, its budget and split sizes, every setting (``settings.*``) and the
  up-front estimate (``estimate.*``), plus the ``params=`` given (task, models ...);
- metrics, with ``step`` = rollouts spent so far: ``val_score`` (each candidate scored on the
  validation set), ``best_score`` (each new best), ``minibatch_score`` and the other splits,
  ``proposals_accepted``/``proposals_rejected``, ``failed_rollouts``; at the end ``n_rollouts``,
  ``wall_time_s``, ``lm_calls``, ``lm_prompt_tokens``, ``lm_completion_tokens``, ``lm_cost_usd``
  (and per LM role: ``lm.reflection.calls`` ...);
- artifacts: ``best_prompt.txt`` and ``candidates.json`` at the end; :meth:`MLflowRun.log_run_dir`
  adds ``result.json``, ``config.json`` and ``plots/`` (curve, lineage and coverage PNGs and the
  HTML report of :mod:`policyopt.runview.plots`);
- status: ``FINISHED``, ``KILLED`` (Ctrl-C, also when the optimizer turned it into
  ``stop_reason="interrupted"``) or ``FAILED`` (an exception, or a run stopped by broken
  ``evaluate``/LM backends); the tag ``policyopt.stop_reason`` says why it stopped.

Every MLflow call runs on one background thread per store (:mod:`policyopt.tracking._writer`):
events arrive from any thread and never wait on the tracking server, and a failing server is one
warning, never the end of the optimization. Nested runs (``nested=True``, or ``parent=``) get
MLflow's ``mlflow.parentRunId`` tag, as the benchmark harness's cells do.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from policyopt._version import __version__
from policyopt.errors import ConfigError, MissingDependencyError
from policyopt.events import (
    BatchDone,
    CandidateEvaluated,
    CandidateProposed,
    Event,
    NewBest,
    RolloutsProgress,
    RunFinished,
    RunStarted,
)
from policyopt.tracking import _writer
from policyopt.tracking._writer import MAX_PARAM_CHARS, RunHandle, Writer, now_ms
from policyopt.types import OptimizationResult

__all__ = ["FLUSH_TIMEOUT_S", "MLflowRun", "log_run_dir", "mlflow_listener", "resolve_uri"]

logger = logging.getLogger("policyopt")

#: how long leaving ``mlflow_listener`` waits for queued logging to reach the store
FLUSH_TIMEOUT_S = 120.0

_SQLITE_SUFFIXES = {".db", ".sqlite", ".sqlite3"}
#: stop reasons that end the MLflow run as KILLED or FAILED (all others: FINISHED)
_KILLED = {"interrupted"}
_FAILED = {"evaluate_errors", "lm_errors"}
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")

_local = threading.local()  # this thread's open runs, innermost last


def resolve_uri(uri: str) -> str:
    """The tracking URI MLflow gets: a ``*.db`` path becomes ``sqlite:///``, another path a
    ``file:`` store; local stores are checked here (before any model loads), servers are not."""
    text = str(uri).strip()
    if importlib.util.find_spec("mlflow") is None:
        raise MissingDependencyError(
            "MLflow tracking needs the mlflow client: pip install 'policyopt[mlflow]'."
        )
    if not text:
        raise ConfigError(
            "The MLflow tracking URI is empty; give a store such as sqlite:///mlflow.db, a "
            "directory, or a tracking server's http://host:port."
        )
    scheme = urlparse(text).scheme
    if len(scheme) <= 1:  # a path (a one-letter scheme is a Windows drive)
        path = Path(text).expanduser().resolve()
        text = f"sqlite:///{path}" if path.suffix in _SQLITE_SUFFIXES else path.as_uri()
    if text.startswith("sqlite:"):
        database = text.removeprefix("sqlite:///")
        if database == text or database in {"", ":memory:"}:
            raise ConfigError(
                f"MLflow tracking URI {uri!r}: a SQLite store is sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db (a file, not memory)."
            )
        if Path(database).exists() and not Path(database).is_file():
            raise ConfigError(
                f"MLflow tracking URI {uri!r}: {database} is a folder, not a database file; "
                "give the path of a .db file (it is created if missing)."
            )
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"MLflow tracking URI {uri!r}: cannot create the folder of {database} "
                f"({exc.strerror}); give a writable path."
            ) from None
    elif text.startswith("file:"):
        _check_file_store(uri)
    return text


def _check_file_store(uri: str) -> None:
    """Recent MLflow refuses ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set."""
    from mlflow import environment_variables as env

    allowed = getattr(env, "MLFLOW_ALLOW_FILE_STORE", None)
    if allowed is not None and not allowed.get():
        raise ConfigError(
            f"MLflow tracking URI {uri!r} is a folder (file store), which this MLflow refuses "
            "by default; use a SQLite store such as sqlite:///mlflow.db (or a path ending in "
            ".db), or set MLFLOW_ALLOW_FILE_STORE=true."
        )


def _artifact_root(uri: str) -> str | None:
    """Artifacts of new experiments in a SQLite store go beside the database, not into cwd."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "mlartifacts").as_uri()


def _key(name: str) -> str:
    """A name MLflow accepts as a param or metric key."""
    return _BAD_KEY_CHARS.sub("_", name)[:250] or "_"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_CHARS:
        text = text[: MAX_PARAM_CHARS - 20] + " ...[cut]"
    return text


def _flat(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested dicts as dotted keys, everything else as text."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[_key(prefix)] = _text(value)
    return out


def _prompt_file(prompt: Any) -> tuple[str, str]:
    """A prompt as an artifact: text for a string, JSON for named components."""
    if isinstance(prompt, str):
        return "best_prompt.txt", prompt
    return "best_prompt.json", json.dumps(prompt, indent=2, ensure_ascii=False)


def _usage_metrics(usage: Mapping[str, Mapping[str, Any]], cost: Any) -> dict[str, float]:
    """LM calls, tokens and cost, summed and per role."""
    out: dict[str, float] = {}
    fields = ("calls", "cache_hits", "errors", "prompt_tokens", "completion_tokens")
    for name in fields:
        out[f"lm_{name}"] = float(sum(int(u.get(name) or 0) for u in usage.values()))
    for role, u in usage.items():
        for name in (*fields, "cost_usd"):
            value = u.get(name)
            if isinstance(value, (int, float)):
                out[_key(f"lm.{role}.{name}")] = float(value)
    if isinstance(cost, (int, float)):
        out["lm_cost_usd"] = float(cost)
    return out


class MLflowRun:
    """The listener :func:`mlflow_listener` yields: call it with events (pass it in
    ``listeners=[...]``); its methods log more into the same MLflow run. Thread-safe."""

    def __init__(self, writer: Writer, handle: RunHandle, flush_timeout_s: float) -> None:
        self._writer = writer
        self._handle = handle
        self._flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()
        self._rollouts = 0
        self._failed = 0
        self._accepted = 0
        self._rejected = 0
        self._prompts: dict[int, Any] = {}
        self._candidates: dict[int, dict[str, Any]] = {}
        self._finished = False
        self._last_best_step = -1
        self._status_override: str | None = None
        self.stop_reason: str | None = None

    @property
    def uri(self) -> str:
        """The tracking URI the run is in."""
        return self._writer.uri

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (waits for the run to exist; ``None`` if MLflow failed)."""
        return self._handle.wait(self._flush_timeout_s)

    @property
    def finished(self) -> bool:
        """True once the run's ``RunFinished`` event was logged."""
        with self._lock:
            return self._finished

    # ------------------------------------------------------------------ events
    def __call__(self, event: Event) -> None:
        """Log one event (from any thread); see the module docstring for what is logged."""
        with self._lock:
            self._on(event)

    def _on(self, event: Event) -> None:
        at = int(event.time * 1000)
        if isinstance(event, (BatchDone, RolloutsProgress)):
            self._rollouts = max(self._rollouts, event.rollouts_used)
            if isinstance(event, BatchDone) and event.n_failed:
                self._failed += event.n_failed
                self._metrics({"failed_rollouts": self._failed}, at)
        elif isinstance(event, RunStarted):
            self._rollouts = max(self._rollouts, event.resumed_rollouts)
            params: dict[str, str] = {
                "optimizer": event.optimizer,
                "max_rollouts": str(event.max_rollouts),
                "n_train": str(event.n_train),
                "n_val": str(event.n_val),
            }
            _flat("settings", event.settings, params)
            _flat("estimate", event.estimate, params)
            tags = {"policyopt.optimizer": event.optimizer}
            if event.resumed_rollouts:
                tags["policyopt.resumed_rollouts"] = str(event.resumed_rollouts)
            self._writer.log(self._handle, params=params, tags=tags)
        elif isinstance(event, CandidateProposed):
            self._prompts[event.candidate] = event.prompt
            self._candidates.setdefault(
                event.candidate,
                {"candidate": event.candidate, "parents": event.parents, "origin": event.origin},
            )
        elif isinstance(event, CandidateEvaluated):
            name = "val_score" if event.split == "val" else _key(f"{event.split}_score")
            self._metrics({name: event.score}, at)
            if event.split == "val" and event.candidate >= 0:
                record = self._candidates.setdefault(
                    event.candidate, {"candidate": event.candidate}
                )
                record.update(val_score=event.score, at_rollout=self._rollouts)
            if event.accepted is not None:
                if event.accepted:
                    self._accepted += 1
                else:
                    self._rejected += 1
                counts = {"proposals_accepted": self._accepted}
                self._metrics({**counts, "proposals_rejected": self._rejected}, at)
        elif isinstance(event, NewBest):
            self._rollouts = max(self._rollouts, event.rollouts_used)
            self._last_best_step = max(self._last_best_step, event.rollouts_used)
            self._metrics({"best_score": event.score}, at, step=event.rollouts_used)
        elif isinstance(event, RunFinished):
            self._finish(event, at)

    def _finish(self, event: RunFinished, at: int) -> None:
        self._finished = True
        self.stop_reason = event.stop_reason
        step = max(self._rollouts, event.n_rollouts)
        metrics = {
            "n_rollouts": float(event.n_rollouts),
            "wall_time_s": event.wall_time_s,
            **_usage_metrics(event.lm_usage, event.cost_usd),
        }
        if step > self._last_best_step:  # the curve runs on to the rollouts spent
            metrics["best_score"] = event.best_score
        self._metrics(metrics, at, step=step)
        tags = {
            "policyopt.stop_reason": event.stop_reason,
            "policyopt.best_candidate": str(event.best_candidate),
        }
        self._writer.log(self._handle, tags=tags)
        prompt = event.best_prompt
        if prompt is None:
            prompt = self._prompts.get(event.best_candidate)
        if prompt is not None:
            self._artifact(*_prompt_file(prompt))
        if self._candidates:
            rows = [
                {**row, "prompt": self._prompts.get(index)}
                for index, row in sorted(self._candidates.items())
            ]
            self._artifact("candidates.json", json.dumps(rows, indent=1, ensure_ascii=False))

    def _metrics(self, values: Mapping[str, float], at: int, step: int | None = None) -> None:
        where = self._rollouts if step is None else step
        rows = [(k, float(v), at, int(where)) for k, v in values.items()]
        self._writer.log(self._handle, metrics=rows)

    def _artifact(self, path: str, text: str) -> None:
        def write(client: Any, run_id: str) -> None:
            client.log_text(run_id, text, path)

        self._writer.call(self._handle, f"logging {path}", write)

    # ------------------------------------------------------------------ more logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested dicts as dotted keys); a param is written once in MLflow."""
        self._writer.log(self._handle, params=_flat("", dict(params), {}))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log metrics at ``step`` (default: rollouts spent so far)."""
        with self._lock:
            at, where = now_ms(), self._rollouts if step is None else step
        rows = [(_key(k), float(v), at, int(where)) for k, v in metrics.items()]
        self._writer.log(self._handle, metrics=rows)

    def log_usage(self, role: str, usage: Any, *, step: int | None = None) -> None:
        """Log one LM's usage (an ``LMUsage`` or its dict) as ``lm.<role>.calls``, tokens and
        cost: the task model's, which the optimizer's own ``RunFinished`` does not know."""
        data = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
        fields = ("calls", "cache_hits", "errors", "prompt_tokens", "completion_tokens", "cost_usd")
        values = {
            f"lm.{role}.{name}": float(data[name])
            for name in fields
            if isinstance(data.get(name), (int, float))
        }
        self.log_metrics(values, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run."""
        self._writer.log(self._handle, tags={_key(k): _text(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Log ``text`` as the artifact ``artifact_file`` (e.g. ``notes/why.txt``)."""
        self._artifact(artifact_file, text)

    def log_result(self, result: OptimizationResult) -> None:
        """Log a result: ``result.json``, the best prompt, and (unless the run's own
        ``RunFinished`` was seen) the summary metrics."""
        self._artifact("result.json", result.to_json(indent=1))
        self._artifact(*_prompt_file(result.best_prompt))
        with self._lock:
            seen = self._finished
        if not seen:
            usage = {role: u.model_dump() for role, u in result.lm_usage.items()}
            summary = {
                "best_score": result.best_score,
                "n_rollouts": float(result.n_rollouts),
                "wall_time_s": result.wall_time_s,
                **_usage_metrics(usage, result.cost_usd),
            }
            self.log_metrics(summary, step=result.n_rollouts)
            self.set_tags({"policyopt.stop_reason": result.stop_reason})

    def log_run_dir(self, run_dir: str | Path) -> None:
        """Log a run directory: the best prompt, ``result.json``, ``config.json``,
        ``candidates.json`` and the plots (``plots/``: PNGs and ``report.html``).

        A directory that is not a run raises :class:`~policyopt.errors.StateError`. Without
        matplotlib the plots are left out (a warning). A run whose events this listener did not
        see also gets its summary metrics and its best-score curve.
        """
        from policyopt.runview import load_run

        view = load_run(run_dir)
        folder = Path(tempfile.mkdtemp(prefix="policyopt-mlflow-"))
        try:
            for name in ("result.json", "config.json"):
                if (view.path / name).is_file():
                    shutil.copyfile(view.path / name, folder / name)
            best = view.best
            if best is not None:
                name, text = _prompt_file(best.prompt)
                (folder / name).write_text(text, encoding="utf-8")
            rows = [c.model_dump(mode="json") for c in view.candidates]
            (folder / "candidates.json").write_text(
                json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8"
            )
            try:
                from policyopt.runview.plots import plot_run

                plot_run(view, folder / "plots")
            except MissingDependencyError as exc:
                logger.warning("MLflow: the run's plots are not logged: %s", exc)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

        def upload(client: Any, run_id: str) -> None:
            client.log_artifacts(run_id, str(folder))

        self._writer.call(
            self._handle,
            f"logging the artifacts of {view.path}",
            upload,
            cleanup=lambda: shutil.rmtree(folder, ignore_errors=True),
        )
        with self._lock:
            seen = self._finished
        if not seen:
            if view.result is not None:
                self.log_result(view.result)
            for rollouts, score in view.curve:
                self.log_metrics({"best_score": score}, step=rollouts)

    def end_status(self, status: str) -> None:
        """End the run with ``status`` (``FINISHED``, ``FAILED`` or ``KILLED``) when the
        ``with`` block exits normally, e.g. FAILED for a failure the caller recorded itself."""
        if status not in {"FINISHED", "FAILED", "KILLED"}:
            raise ConfigError(
                f"MLflow run status must be FINISHED, FAILED or KILLED, not {status!r}."
            )
        with self._lock:
            self._status_override = status

    def _status(self) -> str:
        with self._lock:
            reason, override = self.stop_reason, self._status_override
        if override is not None:
            return override
        if reason in _KILLED:
            return "KILLED"
        return "FAILED" if reason in _FAILED else "FINISHED"

    def _end(self, status: str) -> None:
        ended = now_ms()  # now, not when the writer thread gets to it

        def end(client: Any, run_id: str) -> None:
            client.set_terminated(run_id, status, end_time=ended)

        self._writer.call(self._handle, "ending the run", end)


def _open_runs() -> list[MLflowRun]:
    runs: list[MLflowRun] | None = getattr(_local, "runs", None)
    if runs is None:
        runs = _local.runs = []
    return runs


def _parent(uri: str, parent: MLflowRun | None, nested: bool) -> RunHandle | None:
    """The run a new run nests under: ``parent``, else (``nested``) this thread's innermost
    open run, else MLflow's own active run in the same store."""
    if parent is not None:
        if parent.uri != uri:
            raise ConfigError(
                f"A nested run must be in its parent's store: parent in {parent.uri}, child in "
                f"{uri}. Give both the same tracking URI."
            )
        return parent._handle
    if not nested:
        return None
    for run in reversed(_open_runs()):
        if run.uri == uri:
            return run._handle
    import mlflow

    active = mlflow.active_run()
    try:
        same_store = resolve_uri(mlflow.get_tracking_uri()) == uri
    except ConfigError:
        same_store = False
    if active is not None and same_store:
        handle = RunHandle(run_id=active.info.run_id, experiment_id=active.info.experiment_id)
        handle.ready.set()
        return handle
    logger.warning("MLflow: nested=True but no run is open in %s; starting a top-level run", uri)
    return None


@contextlib.contextmanager
def mlflow_listener(
    uri: str,
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    nested: bool = False,
    parent: MLflowRun | None = None,
    tags: Mapping[str, Any] | None = None,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> Iterator[MLflowRun]:
    """Start an MLflow run in ``uri`` and yield its events listener; end the run on exit.

    ``uri``: ``sqlite:///path.db`` (or a path ending in ``.db``), a ``file:`` URI or folder
    (a file store), or a tracking server. ``experiment`` defaults to ``policyopt`` (a nested
    run's: its parent's). ``nested=True`` nests under this thread's innermost open run (or
    MLflow's active run); ``parent=`` names the parent explicitly (any thread). The exit waits up
    to ``flush_timeout_s`` for queued logging, then ends the run FINISHED, KILLED or FAILED.
    """
    resolved = resolve_uri(uri)
    parent_handle = _parent(resolved, parent, nested)
    base_tags = {"mlflow.source.name": "policyopt", "policyopt.version": __version__}
    handle = RunHandle(
        experiment=experiment,
        experiment_id=(
            parent_handle.experiment_id
            if parent_handle is not None and experiment is None and parent_handle.run_id
            else None
        ),
        run_name=run_name,
        parent=parent_handle,
        tags={**base_tags, **{_key(k): _text(v) for k, v in (tags or {}).items()}},
        artifact_root=_artifact_root(resolved),
    )
    writer = _writer.acquire(resolved)
    run = MLflowRun(writer, handle, flush_timeout_s)
    writer.create(handle)
    if params:
        run.log_params(params)
    stack = _open_runs()
    stack.append(run)
    status = "FINISHED"
    try:
        yield run
        status = run._status()
    except (KeyboardInterrupt, SystemExit) as exc:
        clean = isinstance(exc, SystemExit) and exc.code in (0, None)
        status = run._status() if clean else "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        stack.remove(run)
        run._end(status)
        if not writer.wait(flush_timeout_s):
            logger.warning(
                "MLflow: logging to %s did not finish within %.0f s; some of the run may be "
                "missing there.",
                resolved,
                flush_timeout_s,
            )
        _writer.release(writer)


def log_run_dir(run_dir: str | Path, *, run: MLflowRun | None = None) -> None:
    """Log a run directory's best prompt, result, candidates and plots into ``run`` (default:
    this thread's innermost open :func:`mlflow_listener` run)."""
    target = run
    if target is None:
        stack = _open_runs()
        if not stack:
            raise ConfigError(
                "log_run_dir() needs an MLflow run: call it inside `with mlflow_listener(...)`"
                " or pass run=."
            )
        target = stack[-1]
    target.log_run_dir(run_dir)
