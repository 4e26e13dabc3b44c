"""MLflow tracking against real local MLflow stores (SQLite and file), read back with MLflow's
own client: params, metric histories, artifacts, nested runs, run status, failing stores."""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from policyopt import GEPA, Program, Score
from policyopt.errors import ConfigError
from policyopt.events import (
    BatchDone,
    CandidateEvaluated,
    CandidateProposed,
    NewBest,
    RunFinished,
    RunStarted,
)
from policyopt.testing import ScriptedLM
from policyopt.tracking.mlflow import log_run_dir, mlflow_listener, resolve_uri

RULE = "Give the opposite of the word."
WORDS = {"hot": "cold", "up": "down", "big": "small", "wet": "dry", "day": "night", "in": "out"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def _stream(run: Any, stop_reason: str = "budget") -> None:
    run(RunStarted(optimizer="gepa", max_rollouts=100, n_train=6, n_val=6, settings={"a": 1}))
    run(_batch(6, n_failed=1))
    run(CandidateEvaluated(candidate=0, split="val", score=0.25, n_examples=6))
    run(NewBest(candidate=0, score=0.25, rollouts_used=6))
    run(CandidateProposed(candidate=1, parents=[0], origin="mutation", prompt=RULE))
    run(CandidateEvaluated(candidate=-1, split="minibatch", score=1.0, n_examples=3, accepted=True))
    run(
        CandidateEvaluated(candidate=-1, split="minibatch", score=0.0, n_examples=3, accepted=False)
    )
    run(_batch(18))
    run(CandidateEvaluated(candidate=1, split="val", score=0.75, n_examples=6))
    run(NewBest(candidate=1, score=0.75, rollouts_used=18))
    run(
        RunFinished(
            best_score=0.75,
            best_candidate=1,
            n_rollouts=24,
            stop_reason=stop_reason,
            wall_time_s=3.5,
            lm_usage={"reflection": {"calls": 4, "prompt_tokens": 300, "completion_tokens": 40}},
            cost_usd=0.002,
        )
    )


def _batch(used: int, n_failed: int = 0) -> BatchDone:
    return BatchDone(
        label="",
        n_requested=6,
        n_run=6,
        n_cached=0,
        n_failed=n_failed,
        n_cut=0,
        rollouts_used=used,
        max_rollouts=100,
        duration_s=0.1,
    )


def test_events_become_params_metrics_artifacts_and_status(store: str) -> None:
    params = {"task": "antonyms", "models": {"task": "local"}}
    with mlflow_listener(store, experiment="events", run_name="r1", params=params) as run:
        _stream(run)
    client = _client(store)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "r1"
    assert client.get_experiment(logged.info.experiment_id).name == "events"
    p = logged.data.params
    assert p["task"] == "antonyms" and p["models.task"] == "local"
    assert p["optimizer"] == "gepa" and p["max_rollouts"] == "100" and p["settings.a"] == "1"
    assert _history(client, run.run_id, "val_score") == [(6, 0.25), (18, 0.75)]
    # best score against rollouts, carried on to the rollouts spent
    assert _history(client, run.run_id, "best_score") == [(6, 0.25), (18, 0.75), (24, 0.75)]
    assert sorted(_history(client, run.run_id, "minibatch_score")) == [(6, 0.0), (6, 1.0)]
    assert _history(client, run.run_id, "proposals_rejected")[-1] == (6, 1.0)
    m = logged.data.metrics
    assert m["failed_rollouts"] == 1 and m["n_rollouts"] == 24 and m["wall_time_s"] == 3.5
    assert m["lm_calls"] == 4 and m["lm_prompt_tokens"] == 300 and m["lm_cost_usd"] == 0.002
    assert m["lm.reflection.completion_tokens"] == 40
    assert logged.data.tags["policyopt.stop_reason"] == "budget"
    assert _artifacts(client, run.run_id) == {"best_prompt.txt", "candidates.json"}
    text = client.download_artifacts(run.run_id, "best_prompt.txt")
    assert Path(text).read_text(encoding="utf-8") == RULE
    # artifacts sit beside the database, never in the working directory
    assert logged.info.artifact_uri.startswith(Path(store[10:]).parent.as_uri())


@pytest.mark.parametrize(
    ("stop_reason", "raised", "status"),
    [
        ("interrupted", None, "KILLED"),
        ("evaluate_errors", None, "FAILED"),
        ("time_limit", None, "FINISHED"),
        (None, KeyboardInterrupt, "KILLED"),
        (None, RuntimeError, "FAILED"),
    ],
)
def test_the_run_ends_with_the_status_of_how_it_ended(
    store: str, stop_reason: str | None, raised: type[BaseException] | None, status: str
) -> None:
    with (
        pytest.raises(raised) if raised else _nothing(),
        mlflow_listener(store, experiment="status") as run,
    ):
        if stop_reason:
            _stream(run, stop_reason=stop_reason)
        if raised:
            raise raised()
    assert _client(store).get_run(run.run_id).info.status == status


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_nested_runs_carry_their_parent_id_from_any_thread(store: str) -> None:
    with mlflow_listener(store, experiment="nest", run_name="parent") as parent:
        with mlflow_listener(store, nested=True, run_name="same thread") as child:
            child.log_metrics({"x": 1.0}, step=0)
        ids: list[str | None] = []

        def cell() -> None:
            with mlflow_listener(store, parent=parent, run_name="other thread") as run:
                ids.append(run.run_id)

        worker = threading.Thread(target=cell)
        worker.start()
        worker.join(60)
    client = _client(store)
    parent_run = client.get_run(parent.run_id)
    for run_id in (child.run_id, ids[0]):
        nested = client.get_run(run_id)
        assert nested.data.tags["mlflow.parentRunId"] == parent.run_id
        assert nested.info.experiment_id == parent_run.info.experiment_id  # the parent's
        assert nested.info.status == "FINISHED"


def test_events_from_many_threads_are_all_logged(store: str) -> None:
    with mlflow_listener(store, experiment="threads") as run:

        def emit(k: int) -> None:
            for i in range(50):
                # distinct values: MLflow keeps one of equal (key, time, step, value) points
                score = k + i / 100
                run(CandidateEvaluated(candidate=k, split="val", score=score, n_examples=1))

        threads = [threading.Thread(target=emit, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    values = sorted(v for _, v in _history(_client(store), run.run_id, "val_score"))
    assert values == sorted(k + i / 100 for k in range(8) for i in range(50))


def _words(n: int) -> list[dict[str, Any]]:
    return [{"id": f"{w}{k}", "word": w, "answer": a} for k in range(n) for w, a in WORDS.items()]


def _program() -> Program:
    """A program whose evaluate is plain Python: right when the prompt asks for opposites."""

    def evaluate(prompt: str, example: dict[str, Any]) -> Score:
        right = "opposite" in prompt
        return Score(float(right), feedback=None if right else f"expected {example['answer']}")

    return Program("Answer.", evaluate)


def test_a_real_optimization_and_its_run_dir_are_logged(store: str, tmp_path: Path) -> None:
    data = _words(2)
    reflection = ScriptedLM(lambda text: f"```\n{RULE}\n```")
    run_dir = tmp_path / "run"
    with mlflow_listener(store, experiment="gepa", params={"task": "words"}) as run:
        result = GEPA(
            reflection_lm=reflection,
            max_rollouts=40,
            minibatch_size=3,
            run_dir=str(run_dir),
            progress=False,
            listeners=[run],
        ).optimize(_program(), data[:6], data[6:])
        log_run_dir(run_dir)  # into the innermost open run
    assert result.best_score == 1.0
    client = _client(store)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["optimizer"] == "gepa"
    assert logged.data.params["settings.minibatch_size"] == "3"
    best = _history(client, run.run_id, "best_score")
    assert best[0][1] == 0.0 and best[-1] == (result.n_rollouts, 1.0)
    assert [v for _, v in _history(client, run.run_id, "val_score")] == [
        c.val_score for c in result.candidates
    ]
    assert logged.data.metrics["lm_calls"] == result.lm_usage["reflection"].calls >= 1
    assert logged.data.tags["policyopt.stop_reason"] == result.stop_reason
    names = _artifacts(client, run.run_id)
    assert {"best_prompt.txt", "result.json", "config.json", "candidates.json", "plots"} <= names
    plots = _artifacts(client, run.run_id, "plots")
    assert {"plots/curve.png", "plots/lineage.png", "plots/report.html"} <= plots
    saved = Path(client.download_artifacts(run.run_id, "result.json")).read_text()
    assert type(result).from_json(saved) == result


def test_log_run_dir_outside_a_run_says_how_to_call_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside `with mlflow_listener"):
        log_run_dir(tmp_path)


def test_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_uri(str(tmp_path / "a" / "m.db")) == f"sqlite:///{tmp_path}/a/m.db"
    assert (tmp_path / "a").is_dir()  # made, so SQLite can create the file
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="empty"):
        resolve_uri(" ")
    with pytest.raises(ConfigError, match="a file, not memory"):
        resolve_uri("sqlite://")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a database file"):
        resolve_uri(f"sqlite:///{tmp_path / 'dir.db'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        resolve_uri(str(tmp_path / "mlruns"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert resolve_uri(str(tmp_path / "mlruns")) == (tmp_path / "mlruns").as_uri()


def test_a_file_store_works_when_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    with mlflow_listener(uri, run_name="files") as run:
        _stream(run)
    client = _client(uri)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert _history(client, run.run_id, "best_score")[-1] == (24, 0.75)
    assert _artifacts(client, run.run_id) == {"best_prompt.txt", "candidates.json"}


@pytest.fixture
def failing_server() -> Iterator[str]:
    """A real HTTP server on loopback that answers every request with 500."""

    class Broken(http.server.BaseHTTPRequestHandler):
        def _fail(self) -> None:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _fail

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("which", ["500", "closed"])
def test_a_failing_store_warns_once_and_the_optimization_goes_on(
    which: str,
    failing_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = failing_server if which == "500" else _closed_port()
    data = _words(2)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="policyopt"),
        mlflow_listener(uri, flush_timeout_s=60) as run,
    ):
        result = GEPA(
            reflection_lm=ScriptedLM(lambda text: f"```\n{RULE}\n```"),
            max_rollouts=30,
            progress=False,
            listeners=[run],
        ).optimize(_program(), data[:6], data[6:])
        run.log_text("x", "x.txt")
    assert result.best_score == 1.0 and result.n_rollouts <= 30
    assert time.monotonic() - started < 60
    warnings = [r.getMessage() for r in caplog.records if "MLflow tracking" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert uri in warnings[0] and "goes on without tracking" in warnings[0]
    assert run.run_id is None
