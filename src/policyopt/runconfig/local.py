"""A local run's config (``policyopt optimize CONFIG.toml``): the shared schema plus the user's
code, data, models and run directory, and the checks that turn it into a runnable plan.

Beyond the shared keys (:mod:`policyopt.runconfig.schema`) a local config names:

- ``program = "my_module:program"`` (a :class:`~policyopt.Program`, or a function returning one;
  it gets the task model when ``models.task`` is set), or ``initial_prompt`` plus
  ``evaluate = "my_module:evaluate"`` (``evaluate(prompt, example[, lm])``);
- ``data.train`` / ``data.val`` / ``data.test``: a JSONL, JSON, CSV or Parquet file (relative to
  the config file), ``"hf:NAME"`` or ``{hf = NAME, split = ..., config = ...}`` (a Hugging Face
  dataset, when ``datasets`` is installed), or ``"my_module:load"``; or ``data = "mod:load"``
  returning ``{"train": [...], "val": [...], "test": [...]}``;
- ``models.task`` / ``models.reflection``: ``"local"``, a litellm model name, or
  ``"my_module:callable"`` (any ``str -> str`` callable);
- ``run_dir`` (relative to the config file; running again on it resumes) and
  ``[tracking.mlflow]``.

:func:`prepare` imports the modules (the config file's folder is on the module path) and reads the
data before any model loads, so a bad config fails in a second with one line naming the key.
"""

from __future__ import annotations

import csv
import functools
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator

from policyopt.errors import ConfigError, DatasetError, describe
from policyopt.prompts import Message
from policyopt.runconfig.files import read_text
from policyopt.runconfig.plugins import PLUGINS_HELP, import_plugins
from policyopt.runconfig.schema import SECTION_NAMES, Models, RunConfigBase, _Strict, read_toml
from policyopt.state.rundir import callable_identity
from policyopt.types import Program, example_ids

__all__ = [
    "DataConfig",
    "DataSource",
    "LocalConfig",
    "LocalModels",
    "MlflowTracking",
    "Prepared",
    "Tracking",
    "load_local_config",
    "prepare",
]

#: ``module:attribute`` (dots allowed on both sides)
REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
#: data file suffixes read without extra packages (Parquet needs pyarrow)
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

_REMOTE_ONLY = (
    "is for remote jobs (policyopt job submit); a local run reads its examples from "
    "data.train / data.val / data.test and calls your evaluate directly"
)
LOCAL_RESERVED: dict[str, str] = {
    "max_rollouts": "set it in budget.max_rollouts",
    "max_cost_usd": "set it in budget.max_cost_usd",
    "max_time_s": "set it in budget.max_time_s",
    "seed": "set the top-level seed",
    "run_dir": "set run_dir at the top of the table (or pass --run-dir)",
    "progress": "the command shows progress (turn it off with --no-progress)",
    "listeners": "the command attaches its listeners (progress, tracking)",
}


def _source(value: Any) -> Any:
    """A data source's string shorthand as a table: ``hf:NAME``, ``module:load`` or a path."""
    if not isinstance(value, str):
        return value
    if value.startswith("hf:"):
        return {"hf": value[3:]}
    if REF.fullmatch(value) and not value.endswith(DATA_SUFFIXES):
        return {"load": value}
    return {"path": value}


class DataSource(_Strict):
    """Where one split's examples come from: exactly one of ``path``, ``hf`` or ``load``."""

    path: str | None = Field(default=None, description="JSONL/JSON/CSV/Parquet file")
    hf: str | None = Field(default=None, description="a Hugging Face dataset name")
    load: str | None = Field(default=None, description="module:callable returning examples")
    split: str | None = Field(default=None, description="the dataset's split (hf; default: ours)")
    config: str | None = Field(default=None, description="the dataset's config name (hf)")
    limit: int | None = Field(default=None, ge=1, strict=True, description="keep the first N")

    @model_validator(mode="after")
    def _one(self) -> DataSource:
        given = [k for k in ("path", "hf", "load") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of path, hf or load (or a string: a file path, "
                "'hf:NAME' or 'module:load')"
            )
        if self.load is not None and not REF.fullmatch(self.load):
            raise ValueError(f"load must be 'module:callable'; got {self.load!r}")
        return self


Source = Annotated[DataSource, BeforeValidator(_source)]


class DataConfig(_Strict):
    """The splits: ``train`` is required; without ``val`` the search validates on train. Or
    ``load``: one ``module:callable`` returning ``{"train": [...], "val": [...], "test": [...]}``
    (``data = "module:load"`` is short for it)."""

    train: Source | None = None
    val: Source | None = None
    test: Source | None = None
    load: str | None = Field(default=None, description="module:callable returning the splits")

    @model_validator(mode="after")
    def _splits(self) -> DataConfig:
        if self.load is not None:
            if any(s is not None for s in (self.train, self.val, self.test)):
                raise ValueError("give load (all splits) or train/val/test, not both")
            if not REF.fullmatch(self.load):
                raise ValueError(f"load must be 'module:callable'; got {self.load!r}")
        elif self.train is None:
            raise ValueError("data.train is required (a file, 'hf:NAME' or 'module:load')")
        return self


def _data(value: Any) -> Any:
    """``data = "module:load"`` as ``{load = "module:load"}``."""
    return {"load": value} if isinstance(value, str) else value


class LocalModels(Models):
    """The optimizer's LM (shared keys) and the task model handed to the user's code."""

    task: str | None = Field(
        default=None,
        description="'local', a litellm model name or 'module:callable': passed to "
        "program(lm) / evaluate(prompt, example, lm); unset: your code brings its own model",
    )
    task_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra settings for the task model (litellm)"
    )


class MlflowTracking(_Strict):
    """Where ``policyopt optimize`` logs the run in MLflow."""

    uri: str = Field(min_length=1, description="MLflow tracking URI (file:, sqlite:, http:)")
    experiment: str | None = Field(default=None, description="experiment name")
    run_name: str | None = Field(default=None, description="the MLflow run's name")


class Tracking(_Strict):
    """Experiment tracking of a local run."""

    mlflow: MlflowTracking | None = None


class LocalConfig(RunConfigBase):
    """One local run: the shared keys plus the user's program, data, models and run dir."""

    KIND: ClassVar[str] = "run config"
    RESERVED: ClassVar[dict[str, str]] = LOCAL_RESERVED
    FOREIGN: ClassVar[dict[str, str]] = {
        key: _REMOTE_ONLY
        for key in (
            "task_app",
            "task_app_url",
            "localapi_url",
            "task_app_api_key",
            "ids",
            "train_ids",
            "val_ids",
            "test_ids",
            "models.policy",
        )
    }
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {"prompt": ("initial_prompt",)}
    FREE_FORM: ClassVar[frozenset[str]] = frozenset({"reflection_kwargs", "task_kwargs"})

    program: str | None = Field(
        default=None, description="module:attribute of a Program (or a function returning one)"
    )
    evaluate: str | None = Field(
        default=None, description="module:function evaluate(prompt, example[, lm])"
    )
    data: Annotated[DataConfig, BeforeValidator(_data)] = Field(
        description="the splits' sources, or 'module:load' returning {train, val, test}"
    )
    models: LocalModels = Field(default_factory=lambda: LocalModels())
    run_dir: str | None = Field(
        default=None, description="the run directory (relative to the config file); resumable"
    )
    tracking: Tracking | None = None
    plugins: list[str] = Field(default_factory=list, description=PLUGINS_HELP)

    def _problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if (self.program is None) == (self.evaluate is None):
            why = "give program = 'module:program' or evaluate = 'module:evaluate' (with "
            problems.append(("program", why + "initial_prompt), not both and not neither"))
        if self.evaluate is not None and self.initial_prompt is None:
            problems.append(("initial_prompt", "required with evaluate: the seed prompt"))
        for key in ("program", "evaluate"):
            value = getattr(self, key)
            if value is not None and not REF.fullmatch(value):
                problems.append((key, f"must be 'module:attribute'; got {value!r}"))
        for key in ("task", "reflection"):
            value = getattr(self.models, key)
            if value is not None and ":" in value and "/" not in value and not REF.fullmatch(value):
                problems.append((f"models.{key}", f"'{value}' is not 'module:callable'"))
        return problems


# ======================================================================= preparation
@dataclass
class Prepared:
    """A local config made runnable: the program (or its factory), the data, the models'
    references and the run directory, all checked before any model loads."""

    config: LocalConfig
    base_dir: Path
    run_dir: Path
    train: list[Any]
    val: list[Any] | None
    test: list[Any]
    build_program: Callable[[Any], Program]
    task_model: Any = None  # None, "local[:NAME]", a litellm name (str) or a callable
    reflection_model: Any = "local"
    accept_changed: tuple[str, ...] = ()  # identity parts a resume may change (--accept-changed)
    retry_failures: bool = False  # a resume pays the journal's failures again (--retry-failures)
    seed_prompt: Any = None
    notes: list[str] = field(default_factory=list)


def load_local_config(
    path: str | Path, *, overrides: Iterable[tuple[str, Any]] = ()
) -> LocalConfig:
    """Read a config file; ``overrides`` (``--set`` pairs) are applied after the file's own."""
    data = read_toml(Path(path), kind="config")
    table = next((data[n] for n in SECTION_NAMES if isinstance(data.get(n), dict)), data)
    extra = list(overrides)
    if extra:
        merged = dict(table.get("overrides") or {}) if isinstance(table, dict) else {}
        merged.update(dict(extra))
        table["overrides"] = merged
    import_plugins(table, Path(path).resolve().parent)  # before `algorithm` is checked
    return LocalConfig.from_dict(data)


def prepare(
    config: LocalConfig, config_path: str | Path, *, run_dir: str | Path | None = None
) -> Prepared:
    """Import the user's code, read the data and resolve the models, before any model loads.

    The config file's folder goes first on ``sys.path`` (so ``my_module`` next to it imports);
    every failure is a :class:`ConfigError` naming the key or the file and how to fix it.
    """
    base = Path(config_path).resolve().parent
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    task_model = _model_ref(config.models.task, "models.task")
    reflection = _model_ref(config.models.reflection, "models.reflection")
    takes_lm = task_model is not None
    if config.program is not None:
        target = import_ref(config.program, "program")
        build_program = _program_builder(target, config, takes_lm)
    else:
        assert config.evaluate is not None and config.initial_prompt is not None
        evaluate = import_ref(config.evaluate, "evaluate")
        build_program = _evaluate_builder(evaluate, config.initial_prompt, takes_lm)
    seed_prompt: Any = config.initial_prompt
    if not takes_lm:  # no model to wait for: build it now, so its errors come before anything
        built = build_program(None)
        seed_prompt = built.prompt

        def build_program(_lm: Any) -> Program:  # the one built above
            return built

    train, val, test = _load_data(config.data, base)
    if run_dir is not None:  # from the command line: relative to the working directory
        resolved = Path(run_dir).resolve()
    else:  # from the file: relative to the file's folder
        resolved = base / (config.run_dir or f"runs/{Path(config_path).stem}")
    return Prepared(
        config=config,
        base_dir=base,
        run_dir=resolved,
        train=train,
        val=val,
        test=test,
        build_program=build_program,
        task_model=task_model,
        reflection_model=reflection,
        seed_prompt=seed_prompt,
    )


def import_ref(ref: str, key: str) -> Any:
    """The object ``module:attribute`` names; a clear error naming ``key`` when it cannot."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{key}: no module named {module_name!r}; put {module_name.split('.')[0]}.py "
                "next to the config file (its folder is on the module path) or install it."
            ) from None
        raise ConfigError(f"{key}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(
            f"{key}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{key}: module {module_name!r} has no attribute {attr!r} "
                f"(it has: {', '.join(names)})."
            )
        obj = getattr(obj, part)
    return obj


def _model_ref(value: str | None, key: str) -> Any:
    """None, ``"local"``/``"local:NAME"``, a litellm name, or the callable ``module:callable``."""
    if value is None or value == "local":
        return value
    if REF.fullmatch(value) and "/" not in value and not value.startswith("local:"):
        obj = import_ref(value, key)
        if not callable(obj):
            raise ConfigError(f"{key}: {value!r} is {describe(obj)}, not a callable str -> str.")
        return obj
    return value


def _accepts(func: Any, n: int) -> bool:
    try:
        inspect.signature(func).bind(*([None] * n))
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): assume it does
        return True
    return True


def _program_builder(target: Any, config: LocalConfig, takes_lm: bool) -> Callable[[Any], Program]:
    """How to get the Program from ``program =``: the object itself or its factory's result."""
    if isinstance(target, Program):
        if takes_lm:
            raise ConfigError(
                f"program: {config.program!r} is a Program that brings its own model; remove "
                "models.task, or make program a function program(lm) that returns a Program."
            )
        factory: Callable[[Any], Any] = lambda _lm: target  # noqa: E731
    elif callable(target):
        n = 1 if takes_lm else 0
        if not _accepts(target, n):
            need = "program(lm) (models.task is set)" if takes_lm else "program() with no arguments"
            raise ConfigError(f"program: {config.program!r} must be callable as {need}.")
        factory = (lambda lm: target(lm)) if takes_lm else (lambda _lm: target())
    else:
        raise ConfigError(
            f"program: {config.program!r} is {describe(target)}; it must be a policyopt "
            "Program or a function returning one."
        )

    def build(lm: Any) -> Program:
        try:
            program = factory(lm)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"program: {config.program} raised {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(program, Program):
            raise ConfigError(
                f"program: {config.program} returned {describe(program)}, not a policyopt Program."
            )
        if config.initial_prompt is not None:
            program = Program(config.initial_prompt, program.evaluate, program.run)
        return program

    return build


def _evaluate_builder(
    evaluate: Any, prompt: str | dict[str, str] | list[Message], takes_lm: bool
) -> Callable[[Any], Program]:
    """The program of ``evaluate = ...``: the seed prompt (any shape) and that function, given
    the task model when ``models.task`` is set."""
    if not callable(evaluate):
        raise ConfigError(f"evaluate: {describe(evaluate)} is not callable.")
    n = 3 if takes_lm else 2
    if not _accepts(evaluate, n):
        need = (
            "evaluate(prompt, example, lm) (models.task is set)"
            if takes_lm
            else "evaluate(prompt, example)"
        )
        raise ConfigError(f"evaluate: it must be callable as {need}.")
    if takes_lm:
        return lambda lm: Program(prompt, _with_lm(evaluate, lm))
    return lambda _lm: Program(prompt, evaluate)


def _with_lm(evaluate: Callable[..., Any], lm: Any) -> Callable[[Any, Any], Any]:
    """``evaluate(prompt, example, lm)`` as a two-argument evaluate naming the user's function
    (``__wrapped__``) and the task model with its sampling settings (``policyopt_identity``):
    a run dir then refuses a resume whose evaluate or task model changed."""

    @functools.wraps(evaluate)
    def bound(prompt: Any, example: Any) -> Any:
        return evaluate(prompt, example, lm)

    kwargs, sampling = getattr(lm, "kwargs", None) or {}, ("temperature", "top_p", "seed", "stop")
    name = getattr(lm, "model", None)  # an LM's model name, else the callable's own identity
    model = {"model": name if isinstance(name, str) else callable_identity(lm)}
    model.update({k: kwargs[k] for k in (*sampling, "max_tokens") if k in kwargs})
    bound.policyopt_identity = {"task_model": model}  # type: ignore[attr-defined]
    return bound


# ------------------------------------------------------------------------------- data
def _load_data(data: DataConfig, base: Path) -> tuple[list[Any], list[Any] | None, list[Any]]:
    if data.load is not None:
        ref = data.load
        loaded = _call_loader(ref, "data.load")
        if isinstance(loaded, Mapping):
            unknown = set(loaded) - {"train", "val", "test"}
            if unknown or "train" not in loaded:
                raise ConfigError(
                    f"data.load: {ref} must return a dict with 'train' (and 'val', 'test'); "
                    f"got keys {sorted(loaded)}."
                )
            splits = [loaded.get("train"), loaded.get("val"), loaded.get("test")]
        elif (
            isinstance(loaded, (tuple, list))
            and len(loaded) in (2, 3)
            and all(isinstance(s, (list, tuple)) for s in loaded)
        ):
            splits = [*loaded, None][:3]
        else:
            raise ConfigError(
                f"data.load: {ref} must return {{'train': [...], 'val': [...], 'test': [...]}} or "
                f"(train, val[, test]); got {describe(loaded)}."
            )
        out = [None if s is None else _examples(s, f"data.load ({ref})") for s in splits]
        train, val, test = out
    else:
        assert data.train is not None  # checked by DataConfig
        train = _read_source(data.train, "data.train", "train", base)
        val = None if data.val is None else _read_source(data.val, "data.val", "validation", base)
        test = None if data.test is None else _read_source(data.test, "data.test", "test", base)
    if not train:
        raise ConfigError("data.train: no examples; the training split needs at least one.")
    if val is not None and not val:
        raise ConfigError("data.val: no examples; remove data.val to validate on train.")
    for key, rows in (("data.train", train), ("data.val", val), ("data.test", test)):
        if rows:  # duplicate or unusable ids fail here, not after the models load
            try:
                example_ids(rows, name=key)
            except DatasetError as exc:
                raise ConfigError(f"{key}: {exc}") from None
    return train, val, list(test or [])


def _examples(value: Any, key: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(f"{key}: expected a list of examples; got {describe(value)}.")
    return list(value)


def _call_loader(ref: str, key: str) -> Any:
    loader = import_ref(ref, key)
    if not callable(loader):
        raise ConfigError(f"{key}: {ref} is {describe(loader)}, not a function returning examples.")
    try:
        return loader()
    except Exception as exc:
        raise ConfigError(f"{key}: {ref}() raised {type(exc).__name__}: {exc}") from None


def _read_source(source: DataSource, key: str, split: str, base: Path) -> list[Any]:
    if source.load is not None:
        rows = _examples(_call_loader(source.load, key), key)
    elif source.hf is not None:
        rows = _read_hf(source, key, split, base)
    else:
        assert source.path is not None
        rows = read_data_file(base / source.path, key)
    return rows[: source.limit] if source.limit else rows


def _read_hf(source: DataSource, key: str, split: str, base: Path) -> list[Any]:
    """A Hugging Face dataset's split as a list of dicts: a hub name, or a dataset folder (its
    path relative to the config file) such as one holding train.jsonl and validation.jsonl."""
    try:
        import datasets  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        raise ConfigError(
            f"{key}: hf = {source.hf!r} needs the Hugging Face datasets package: "
            "pip install 'policyopt[data]' (or give a JSONL/CSV/Parquet file)."
        ) from None
    name = source.split or split
    assert source.hf is not None
    local = base / source.hf
    target = str(local) if local.exists() else source.hf
    try:
        rows = datasets.load_dataset(target, source.config, split=name)
    except Exception as exc:
        raise ConfigError(
            f"{key}: loading Hugging Face dataset {source.hf!r} (split {name!r}) failed: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        ) from None
    return [dict(row) for row in rows]


def read_data_file(path: Path, key: str) -> list[Any]:
    """Examples from a JSONL (one object a line), JSON (a list), CSV (a header row) or Parquet
    file; errors name the file, the line and the fix."""
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ConfigError(
            f"{key}: {str(path)!r} is not a data file policyopt reads; use "
            f"{', '.join(DATA_SUFFIXES)} (or 'module:load')."
        )
    if not path.exists():
        raise ConfigError(
            f"{key}: data file {str(path)!r} does not exist (paths are relative to the config "
            "file's folder)."
        )
    if suffix == ".parquet" and path.is_file():
        try:
            return _read_parquet(path, key)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc}") from None
    text = read_text(path, f"{key}: data file")  # a folder, binary or non-UTF-8: one line
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{key}: {path.name} line {number} is not JSON ({exc.msg}); each line must "
                    "be one JSON object."
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{key}: {path.name} line {number} is a JSON {type(row).__name__}, not an "
                    'object; each line must be one example such as {"id": "a", "input": ...}.'
                )
            rows.append(row)
        return rows
    if suffix == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{key}: {path.name} is not JSON ({exc.msg}, line {exc.lineno})."
            ) from None
        if not isinstance(value, list):
            raise ConfigError(f"{key}: {path.name} must hold a JSON list of examples.")
        return value
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ConfigError(f"{key}: {path.name} has no header row; the first row names the columns.")
    return [dict(row) for row in reader]


def _read_parquet(path: Path, key: str) -> list[Any]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ConfigError(
            f"{key}: reading Parquet needs pyarrow: pip install 'policyopt[data]' (or use JSONL)"
        ) from None
    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:
        raise ConfigError(f"{key}: cannot read Parquet file {path.name}: {exc}") from None
