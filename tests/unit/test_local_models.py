"""Local model names and where their GGUF files come from: one file, or parts joined once."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyopt import LocalLM
from policyopt.bench import BenchSettings
from policyopt.cli import app
from policyopt.errors import ConfigError, MissingDependencyError
from policyopt.lm import local_models
from policyopt.lm.local_models import (
    LocalModel,
    check_installed,
    find_gguf,
    is_local,
    local_model,
)


def test_names_resolve_to_models_and_unknown_ones_fail_in_one_line() -> None:
    assert local_model(None).name == local_model("local").name == "smollm2-135m"
    assert local_model("local:qwen2.5-coder-0.5b") is local_model("qwen2.5-coder-0.5b")
    assert is_local("local") and is_local("local:qwen2.5-coder-0.5b")
    assert not is_local("openai/gpt-4o-mini") and not is_local(None)
    with pytest.raises(ConfigError, match="unknown local model 'local:nope'; known: ") as err:
        local_model("local:nope")
    assert "\n" not in str(err.value)


def test_local_lm_is_served_under_the_model_it_names() -> None:
    assert LocalLM().model == f"openai/{LocalLM.MODEL_NAME}"
    assert LocalLM(model="qwen2.5-coder-0.5b").model == "openai/qwen2.5-coder-0.5b-instruct"
    with pytest.raises(ConfigError, match="unknown local model"):
        LocalLM(model="tinyllama")


def test_bench_settings_check_local_names_and_keep_plain_local() -> None:
    settings = BenchSettings(
        tasks=["antonyms"], optimizers=["gepa"], reflection_model="local:qwen2.5-coder-0.5b"
    )
    assert settings.task_model == "local"
    with pytest.raises(ValueError, match="unknown local model 'local:x'"):
        BenchSettings(tasks=["antonyms"], optimizers=["gepa"], task_model="local:x")


def _parts_package(root: Path, name: str, data: bytes) -> None:
    package = root / name
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "part.bin").write_bytes(data)


@pytest.fixture
def split_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LocalModel, bytes]]:
    """A model whose file ships as two parts in two packages on sys.path, cache in tmp_path."""
    chunks = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 30]
    site = tmp_path / "site"
    for index, chunk in enumerate(chunks):
        _parts_package(site, f"po_test_part{index}", chunk)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    whole = b"".join(chunks)
    model = LocalModel(
        name="split-test",
        title="Split test model",
        served_as="split-test",
        file_name="split-test.gguf",
        packages=("po_test_part0", "po_test_part1"),
        parts=("data/part.bin", "data/part.bin"),
        sha256=hashlib.sha256(whole).hexdigest(),
        install_hint="pip install split-test",
    )
    monkeypatch.setitem(local_models.LOCAL_MODELS, model.name, model)
    yield model, whole
    for index in range(len(chunks)):
        sys.modules.pop(f"po_test_part{index}", None)


def test_parts_are_joined_once_into_the_cache_and_checked(
    split_model: tuple[LocalModel, bytes], tmp_path: Path
) -> None:
    _, whole = split_model
    path = find_gguf("local:split-test")
    assert path == tmp_path / "cache" / "policyopt" / "models" / "split-test.gguf"
    assert path.read_bytes() == whole
    written = path.stat().st_mtime_ns
    assert find_gguf("split-test") == path and path.stat().st_mtime_ns == written
    assert [p.name for p in path.parent.iterdir()] == ["split-test.gguf"]  # no temp file left


def test_parts_that_do_not_match_the_pinned_hash_are_refused(
    split_model: tuple[LocalModel, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = split_model
    monkeypatch.setitem(
        local_models.LOCAL_MODELS, model.name, LocalModel(**{**vars(model), "sha256": "0" * 64})
    )
    with pytest.raises(MissingDependencyError, match="not the pinned 0000") as err:
        find_gguf("split-test")
    assert "\n" not in str(err.value)
    assert not any((tmp_path / "cache" / "policyopt" / "models").iterdir())


def test_a_model_not_installed_fails_in_one_line_with_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = LocalModel(
        name="absent",
        title="Absent",
        served_as="absent",
        file_name="absent.gguf",
        packages=("po_no_such_package_part1", "po_no_such_package_part2"),
        parts=("data/a.bin", "data/b.bin"),
        sha256="0" * 64,
        install_hint="Install it with `pip install absent`.",
    )
    monkeypatch.setitem(local_models.LOCAL_MODELS, model.name, model)
    with pytest.raises(MissingDependencyError) as err:
        find_gguf("local:absent")
    message = str(err.value)
    assert message == (
        "local model 'absent' is not installed (no package po_no_such_package_part1). "
        "Install it with `pip install absent`."
    )
    result = CliRunner().invoke(app, ["demo", "--model", "absent"])
    assert result.exit_code != 0
    assert "--model 'absent': local model 'absent' is not installed" in result.output


def test_check_installed_finds_the_parts_without_joining_them(
    split_model: tuple[LocalModel, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = split_model
    if importlib.util.find_spec("xllamacpp") is None:
        with pytest.raises(MissingDependencyError, match="needs xllamacpp"):
            check_installed("local:split-test")
    else:
        assert check_installed("local:split-test") is model
    assert not (tmp_path / "cache").exists()  # nothing joined, nothing hashed
    monkeypatch.setitem(
        local_models.LOCAL_MODELS,
        model.name,
        LocalModel(**{**vars(model), "packages": ("po_test_part0", "po_gone")}),
    )
    with pytest.raises(MissingDependencyError) as err:
        check_installed("split-test")
    assert str(err.value) == (
        "local model 'split-test' is not installed (no package po_gone). pip install split-test"
    )
