"""Fingerprints: code, model file hashes and presets in cell keys; runs never mix silently."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from policyopt.bench import fingerprint as fp
from policyopt.bench import load_records, markdown_report, run_benchmark, write_report
from policyopt.bench.fingerprint import (
    RunIdentity,
    code_version,
    file_sha256,
    model_identity,
    source_hash,
)
from policyopt.bench.records import BenchSettings, CellKey, CellRecord, SplitScore, check_one_run
from policyopt.errors import ConfigError
from tests.unit.bench.test_harness import reflection_lm, task_lm, tiny_task


def _identity(source: str = "abc", model: str = "m:sha256:1") -> RunIdentity:
    return RunIdentity(code="git:v1", source=source, task_model=model, reflection_model=model)


def test_the_fingerprint_covers_code_model_files_and_presets() -> None:
    s = BenchSettings(tasks=["t"], optimizers=["gepa"])
    old = CellKey.of(s, "t", "gepa", 0)
    new = CellKey.of(s, "t", "gepa", 0, run=_identity())
    assert old.run == "" and new.run == _identity().digest and new.fingerprint != old.fingerprint
    assert new == CellKey.of(s, "t", "gepa", 0, run=_identity())
    for other in (
        CellKey.of(s, "t", "gepa", 0, run=_identity(source="abd")),
        CellKey.of(s, "t", "gepa", 0, run=_identity(model="m:sha256:2")),
        CellKey.of(s, "t", "gepa", 0, run=_identity(), preset={"proposals": 4}),
        CellKey.of(s.model_copy(update={"split_seed": 1}), "t", "gepa", 0, run=_identity()),
    ):
        assert other.fingerprint != new.fingerprint
    # the machine and the commit's name are recorded but do not split runs: a commit of
    # results or docs leaves the package's sources, hence the scores, as they were
    moved = _identity().model_copy(update={"machine": {"cpus": 64}, "code": "git:v1-1-gabc"})
    assert moved.digest == _identity().digest


def test_code_version_names_this_checkout_and_sources_are_hashed(tmp_path: Path) -> None:
    assert code_version().startswith("git:")  # the tests run from a git checkout
    assert re.fullmatch(r"[0-9a-f]{16}", source_hash())
    package = tmp_path / "policyopt"
    (package / "bench").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "bench" / "b.py").write_text("y = 2\n")
    (package / "notes.md").write_text("not code\n")
    fp.source_hash.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fp, "_PACKAGE_DIR", package)
            first = fp.source_hash()
            fp.source_hash.cache_clear()
            (package / "notes.md").write_text("changed, still not code\n")
            assert fp.source_hash() == first
            fp.source_hash.cache_clear()
            (package / "bench" / "b.py").write_text("y = 3\n")
            assert fp.source_hash() != first
    finally:
        fp.source_hash.cache_clear()


def test_a_model_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"weights" * 1000)
    cache = tmp_path / "cache.json"
    monkeypatch.setattr(fp, "_cache_file", lambda: cache)
    reads: list[str] = []
    real_open = open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == str(gguf.resolve()):
            reads.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    expected = hashlib.sha256(b"weights" * 1000).hexdigest()
    assert model_identity(str(gguf)) == f"{gguf}:tiny.gguf:sha256:{expected}"
    for _ in range(3):  # every cell of the run: remembered in the process
        assert file_sha256(gguf) == expected
    fp._sha256_of.cache_clear()  # a new process: read from the on-disk cache
    assert file_sha256(gguf) == expected
    assert len(reads) == 1
    gguf.write_bytes(b"other" * 1000)  # a new file (size and mtime change): hashed again
    os.utime(gguf, ns=(1, 1))
    assert file_sha256(gguf) == hashlib.sha256(b"other" * 1000).hexdigest()
    assert len(reads) == 2
    assert model_identity("openai/gpt-4o-mini") == "openai/gpt-4o-mini"


def _run(out: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {"tasks": ["tiny"], "optimizers": ["gepa"], "seeds": [0], "budget": 60}
    return run_benchmark(
        BenchSettings(**{**base, **overrides}),
        out,
        task_lm=task_lm(),
        reflection_lm=reflection_lm(),
        tasks={"tiny": tiny_task()},
    )


def test_records_carry_their_identity_and_runs_never_mix(tmp_path: Path) -> None:
    out = tmp_path / "b"
    first = _run(out)
    (record,) = first.records
    identity = record.identity
    assert identity is not None and identity.code == code_version()
    assert identity.source == source_hash()
    assert identity.task_model == "given:ScriptedLM" and identity.machine["cpus"] == os.cpu_count()
    assert record.key.run == identity.digest
    assert _run(out).ran == []  # the same run resumes
    # the same cell under other settings: refused, nothing run, the folder untouched
    written = (out / "bench.json").read_bytes()
    with pytest.raises(ConfigError, match="fingerprint"):
        _run(out, settings={"gepa": {"minibatch_size": 2}})
    assert (out / "bench.json").read_bytes() == written
    # a cell of other code in the folder: refused
    foreign = record.model_copy(
        update={
            "key": record.key.model_copy(update={"seed": 7, "run": "0123456789"}),
            "identity": identity.model_copy(update={"code": "git:old"}),
        }
    )
    (out / "cells" / "foreign.json").write_text(foreign.model_dump_json())
    with pytest.raises(ConfigError, match="another run .*git:old"):
        _run(out)
    records = load_records(out)
    with pytest.raises(ConfigError, match="mix 2 runs"):
        markdown_report(records)
    with pytest.raises(ConfigError, match="mix 2 runs"):
        write_report(records, tmp_path / "report", plots=False)
    assert not (tmp_path / "report" / "report.md").exists()


def test_one_cell_under_two_fingerprints_is_refused_and_old_records_pass() -> None:
    def cell(fingerprint: str, seed: int = 0) -> CellRecord:
        key = CellKey(task="t", optimizer="g", seed=seed, budget=5, fingerprint=fingerprint)
        score = SplitScore(score=0.5, n_examples=2)
        return CellRecord(key=key, status="ok", baseline_test=score, optimized_test=score)

    check_one_run([cell("a"), cell("a", seed=1)])  # records without a run digest still report
    with pytest.raises(ConfigError, match="twice, under fingerprints a and b"):
        check_one_run([cell("a"), cell("b")])
