"""What a benchmark run's results depend on besides its settings: code, model files, machine.

A :class:`RunIdentity` holds the code version (``git describe`` of policyopt's checkout when it
runs from one, else the package version), a hash of the package's source files (what the code
*is*: a commit of results or docs leaves it alone, an uncommitted edit of the code does not),
each model's identity (for a GGUF file: its sha256, cached by path, size and modification time so
a large file is hashed once, not per cell) and the machine. Cells of one run share it; its
:attr:`RunIdentity.digest` enters each cell's fingerprint, so cells of different code or model
files never pair, resume or summarize together.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from policyopt._version import __version__
from policyopt.lm.local_models import is_local

__all__ = [
    "RunIdentity",
    "code_version",
    "file_sha256",
    "machine",
    "model_identity",
    "run_identity",
    "source_hash",
]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../policyopt


class RunIdentity(BaseModel):
    """The code, models and machine behind a run's cells (the machine does not enter the
    digest: the same code and models on another machine give comparable scores)."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="git describe of the checkout, else 'policyopt <version>'")
    source: str = Field("", description="sha256 of the package's .py files (the digest's code)")
    task_model: str = Field(description="the task model's name, with its file's sha256")
    reflection_model: str = Field(description="the reflection model's name and sha256")
    machine: dict[str, str | int] = Field(default_factory=dict)

    @property
    def digest(self) -> str:
        """A short hash of what makes scores comparable: the code's sources and the models."""
        text = json.dumps([self.source or self.code, self.task_model, self.reflection_model])
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty --tags`` when policyopt runs from a git checkout (so an
    uncommitted change shows as ``-dirty``), else ``policyopt <version>`` (an installed wheel)."""
    checkout = _PACKAGE_DIR.parents[1]  # src/policyopt -> the repository root
    if (checkout / ".git").exists():
        try:
            done = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--tags"],
                cwd=checkout,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            described = done.stdout.strip()
            if described:
                return f"git:{described}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"policyopt {__version__}"


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 (16 hex digits) over the relative path and bytes of every ``.py`` file of the
    installed policyopt package, in path order."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "policyopt" / "sha256.json"


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int, cache: str) -> str:
    """The file's sha256, from the on-disk cache when path, size and mtime match."""
    key = f"{path}|{size}|{mtime_ns}"
    cache_path = Path(cache)
    known: dict[str, str] = {}
    try:
        known = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    try:  # best effort: a read-only home only costs a re-hash in the next process
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = value
        tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(tmp, cache_path)
    except OSError:
        pass
    return value


def file_sha256(path: str | Path, *, cache: str | Path | None = None) -> str:
    """The sha256 of a file, hashed once per (path, size, modification time): remembered in
    this process and in ``~/.cache/policyopt/sha256.json`` (or ``cache``)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _sha256_of(str(resolved), stat.st_size, stat.st_mtime_ns, str(cache or _cache_file()))


def model_identity(model: str) -> str:
    """``local``/``local:NAME`` (an installed GGUF) or a path to a ``.gguf`` file: its file name
    and sha256; any other name (a litellm model) as it is."""
    path: Path | None = None
    if is_local(model):
        from policyopt.errors import MissingDependencyError
        from policyopt.lm.local_models import find_gguf

        try:
            path = find_gguf(model)
        except MissingDependencyError:
            return f"{model} (GGUF not installed)"
    elif model.endswith(".gguf") and Path(model).is_file():
        path = Path(model)
    if path is None:
        return model
    return f"{model}:{path.name}:sha256:{file_sha256(path)}"


def machine() -> dict[str, str | int]:
    """Platform, processor, CPU count and Python version of this machine."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
    }


def run_identity(task_model: str, reflection_model: str) -> RunIdentity:
    """This process's :class:`RunIdentity` for the named models (pass a name such as
    ``given:ScriptedLM`` for a model object handed in by the caller)."""
    return RunIdentity(
        code=code_version(),
        source=source_hash(),
        task_model=model_identity(task_model),
        reflection_model=model_identity(reflection_model),
        machine=machine(),
    )
