"""Run a prepared local config: open the models, build the optimizer from the registry, search,
score the test split, and write the outcome into the run directory.

Everything that can be checked without a model is checked by :func:`check_run` first (the
optimizer's settings with the budget fit, the tracking extra), so ``policyopt optimize`` fails
before the embedded model spends its ~30 s loading.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError, MissingDependencyError
from policyopt.lm.local_models import is_local, local_model
from policyopt.runconfig.local import Prepared
from policyopt.types import OptimizationResult

__all__ = [
    "OUTCOME_FILE",
    "check_credentials",
    "check_run",
    "optimizer_settings",
    "run_local",
    "seed_failures",
    "tracking_module",
]

#: what ``policyopt optimize`` writes beside the optimizer's own ``result.json``
OUTCOME_FILE = "optimize.json"


def optimizer_settings(prepared: Prepared, *, progress: bool) -> dict[str, Any]:
    """The optimizer's keyword settings: the registry's plan (small-model preset when the
    optimizer's LM is the local model, then the config's table, then the budget fit), the seed,
    the budget's other caps, the run directory and the progress switch."""
    from policyopt.registry import get_spec

    config = prepared.config
    spec = get_spec(config.algorithm)
    budget = int(config.budget.max_rollouts or 0)
    n_val = len(prepared.val) if prepared.val is not None else len(prepared.train)
    settings = dict(
        spec.plan(
            dict(config.sections.get(config.algorithm) or {}),
            budget=budget,
            n_train=len(prepared.train),
            n_val=n_val,
            small_model=is_local(prepared.reflection_model),
        )
    )
    fields = set(spec.setting_names())
    for key, value in config.optimizer_kwargs().items():
        if key != "max_rollouts" and key in fields:
            settings[key] = value
    if "run_dir" in fields:
        settings["run_dir"] = str(prepared.run_dir)
    if "accept_changed" in fields and prepared.accept_changed:
        settings["accept_changed"] = tuple(prepared.accept_changed)
    if "retry_failures" in fields and prepared.retry_failures:
        settings["retry_failures"] = True
    if "progress" in fields:
        settings["progress"] = progress
    return settings


def tracking_module() -> Any:
    """``policyopt.tracking.mlflow``, or one clear error when it or mlflow is missing."""
    import importlib
    import importlib.util

    try:
        module = importlib.import_module("policyopt.tracking.mlflow")
    except ModuleNotFoundError as exc:
        if exc.name == "mlflow":
            raise MissingDependencyError(
                "MLflow tracking needs mlflow: pip install 'policyopt[mlflow]'."
            ) from None
        raise ConfigError(f"MLflow tracking is not available in this install ({exc}).") from None
    if importlib.util.find_spec("mlflow") is None:
        raise MissingDependencyError(
            "MLflow tracking needs mlflow: pip install 'policyopt[mlflow]'."
        )
    return module


def check_run(
    prepared: Prepared, *, progress: bool, mlflow_uri: str | None = None, credentials: bool = False
) -> dict[str, Any]:
    """Validate the optimizer's settings (built once with a dummy LM, no call), the tracking
    setup and, with ``credentials``, the hosted models' API keys; returns the settings. Raises
    :class:`ConfigError` with one clear line."""
    from policyopt.registry import get_spec

    config = prepared.config
    spec = get_spec(config.algorithm)
    budget = int(config.budget.max_rollouts or 0)
    n_val = len(prepared.val) if prepared.val is not None else len(prepared.train)
    if budget < n_val:
        raise ConfigError(
            f"budget.max_rollouts = {budget} cannot score the seed prompt on the {n_val} "
            f"validation examples; raise it to {n_val} or more, or use fewer examples "
            "(limit = N on the data source)."
        )
    settings = optimizer_settings(prepared, progress=progress)
    try:
        spec.build(lm=lambda text: "", max_rollouts=budget, **settings)  # only validates
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{config.algorithm} settings: {' '.join(str(exc).split())}") from None
    if mlflow_uri is not None or _mlflow(prepared) is not None:
        tracking_module()
    if credentials:
        check_credentials(prepared)
    return settings


def check_credentials(prepared: Prepared) -> None:
    """One clear error naming the environment variable when a hosted task or optimizer model
    has no API key, or the host when its ``api_base`` does not answer, before any rollout (a
    call would fail, and fail again on every rollout)."""
    from policyopt.lm.credentials import missing_credentials, unreachable

    models = prepared.config.models
    reflection_kwargs = dict(models.reflection_kwargs)
    if models.api_base:
        reflection_kwargs["api_base"] = models.api_base
    for key, model, kwargs in (
        ("models.task", prepared.task_model, dict(models.task_kwargs)),
        ("models.reflection", prepared.reflection_model, reflection_kwargs),
    ):
        if isinstance(model, str) and is_local(model):
            try:
                local_model(model)
            except ConfigError as exc:
                raise ConfigError(f"{key} = {model!r}: {exc}") from None
        if not isinstance(model, str) or is_local(model):
            continue
        base = kwargs.get("api_base")
        why = unreachable(str(base)) if base else None
        if why is not None:
            where = "models.api_base" if key == "models.reflection" and models.api_base else key
            raise ConfigError(
                f"{key} = {model!r}: {why}; start the server or fix {where}'s api_base."
            )
        missing = missing_credentials(model, kwargs)
        if missing:
            raise ConfigError(
                f"{key} = {model!r} needs {' and '.join(missing)}, which is not set: export it "
                f"(e.g. export {missing[0]}=...), or give api_key/api_base in "
                f"{key}_kwargs."
            )


def _mlflow(prepared: Prepared) -> Any:
    tracking = prepared.config.tracking
    return None if tracking is None else tracking.mlflow


@contextlib.contextmanager
def _models(prepared: Prepared, n_jobs: int, small_lm: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """The task model (None when the program brings its own) and the optimizer's LM, open."""
    from policyopt.lm import LM, LocalLM

    config = prepared.config
    with contextlib.ExitStack() as stack:

        def open_model(ref: Any, kwargs: dict[str, Any], *, reflection: bool) -> Any:
            if ref is None or callable(ref):
                return ref
            if is_local(ref):
                if reflection:
                    lm = LocalLM.for_reflection(model=ref, **{**small_lm, **kwargs})
                else:
                    lm = LocalLM(model=ref, n_parallel=max(1, n_jobs), **kwargs)
                return stack.enter_context(lm)
            return LM(ref, **kwargs)

        refl_kwargs = dict(config.models.reflection_kwargs)
        if config.models.api_base:
            refl_kwargs["api_base"] = config.models.api_base
        task = open_model(prepared.task_model, dict(config.models.task_kwargs), reflection=False)
        reflection = open_model(prepared.reflection_model, refl_kwargs, reflection=True)
        yield task, reflection


def seed_failures(run_dir: Path, seed_prompt: Any, split: str) -> tuple[int, int, str | None]:
    """The seed prompt's validation rollouts in the run's journal: (how many, how many failed,
    the last error). A seed whose every rollout failed was never scored: its "score" is only
    the failure score."""
    from policyopt.state.journal import read_journal
    from policyopt.types import prompt_key

    key = prompt_key(seed_prompt)
    total = failed = 0
    last: str | None = None
    for record in read_journal(run_dir, skip_damaged=False).of_type("rollout"):
        mine = (record.get("type"), record.get("prompt"), record.get("split"))
        if mine == ("rollout", key, split):
            total += 1
            if record.get("error"):
                failed += 1
                last = str(record["error"])
    return total, failed, last


def _write_examples(prepared: Prepared, limit: int = 5000) -> None:
    """The validation examples into the run dir, so ``policyopt show RUN --examples`` can show
    each one's input beside the model's answers (the first ``limit`` of a larger split)."""
    from policyopt.state.rundir import EXAMPLES_FILE
    from policyopt.types import example_ids

    split, rows = ("val", prepared.val) if prepared.val is not None else ("train", prepared.train)
    lines = [
        json.dumps({"split": split, "id": ident, "example": row}, default=repr, ensure_ascii=False)
        for ident, row in zip(example_ids(rows), rows, strict=True)
    ][:limit]
    (Path(prepared.run_dir) / EXAMPLES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_local(
    prepared: Prepared,
    *,
    progress: bool = True,
    listeners: Sequence[Callable[[Any], None]] = (),
    log: Callable[[str], None] = lambda message: None,
) -> tuple[OptimizationResult, dict[str, Any]]:
    """Run the search (resuming the run directory if it holds one), score the seed and best
    prompts on the test split when there is one, and write ``optimize.json`` into the run dir.

    Returns the result and the outcome written (test scores, task-model usage, run dir).
    """
    from policyopt.registry import get_spec
    from policyopt.rollout import RolloutEngine

    config = prepared.config
    spec = get_spec(config.algorithm)
    settings = optimizer_settings(prepared, progress=progress)
    budget = int(config.budget.max_rollouts or 0)
    prepared.run_dir.mkdir(parents=True, exist_ok=True)
    small_lm = dict(spec.small_model_lm)
    with contextlib.ExitStack() as stack:
        models = _models(prepared, int(settings.get("n_jobs") or 4), small_lm)
        task_lm, refl_lm = stack.enter_context(models)
        program = prepared.build_program(task_lm)
        optimizer = spec.build(lm=refl_lm, max_rollouts=budget, listeners=listeners, **settings)
        _write_examples(prepared)
        log(f"Searching with {spec.name} (run dir {prepared.run_dir}) ...")
        result = optimizer.optimize(program, prepared.train, prepared.val)
        test: dict[str, Any] | None = None
        if prepared.test and result.stop_reason != "interrupted":  # Ctrl-C means stop now
            log(f"Scoring the seed and the best prompt on {len(prepared.test)} test examples ...")
            with RolloutEngine(program.evaluate, n_jobs=int(settings.get("n_jobs") or 4)) as eng:
                ids = eng.add_split("test", prepared.test)
                test = {"n_examples": len(ids)}
                for label, prompt in (("seed", program.prompt), ("best", result.best_prompt)):
                    scores = eng.run([(prompt, i) for i in ids], split="test").scores()
                    test[f"{label}_score"] = sum(scores) / len(scores)
        task_usage = getattr(task_lm, "usage", None)
    seed_prompt = result.candidates[0].prompt if result.candidates else program.prompt
    split = "train" if prepared.val is None else "val"
    n_seed, n_failed, last_error = seed_failures(prepared.run_dir, seed_prompt, split)
    seed_scored = n_seed > n_failed
    outcome = {
        "run_dir": str(prepared.run_dir),
        "optimizer": spec.name,
        "best_prompt": result.best_prompt,
        "best_val_score": result.best_score,
        # a seed whose every rollout failed has no score: its failure score is not shown as one
        "seed_val_score": result.candidates[0].val_score if seed_scored else None,
        "seed_scored": seed_scored,
        "seed_error": None if seed_scored else last_error,
        "n_rollouts": result.n_rollouts,
        "stop_reason": result.stop_reason,
        "test": test,
        "task_lm_usage": task_usage.model_dump() if task_usage is not None else None,
    }
    path = Path(prepared.run_dir) / OUTCOME_FILE
    path.write_text(json.dumps(outcome, indent=2, ensure_ascii=False, default=str) + "\n")
    return result, outcome
