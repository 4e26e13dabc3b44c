"""The task app: serve a :class:`~policyopt.Program` and its dataset over HTTP for remote jobs.

``task_app(program, dataset)`` builds a FastAPI app with ``GET /health``, ``GET /task_info`` and
``POST /rollout`` (``docs/task-app-protocol.md``). The job server calls ``/rollout`` for every
(candidate prompt, example) pair; the app looks the example up by id, runs the program's
``evaluate`` in a worker thread (the event loop stays free) and answers the score. Nothing from a
request is unpickled or evaluated: the body is JSON validated by pydantic, the example comes from
the app's own dataset, and the prompt is only ever passed to ``evaluate`` as text.

Note: ``policyopt.remote.taskapp.app`` is the function; import this module's other names with
``from policyopt.remote.taskapp.app import ...``.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib
import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from policyopt.errors import ConfigError, DatasetError, MissingDependencyError, describe
from policyopt.remote.asgi import BodyLimit
from policyopt.remote.protocol import (
    PROTOCOL_VERSION,
    ROLLOUT_FAILED,
    Health,
    RolloutError,
    RolloutFailure,
    RolloutRequest,
    RolloutResponse,
    TaskInfo,
    json_safe,
)
from policyopt.rollout.aio import call_blocking, is_async_callable
from policyopt.tasks.base import Task
from policyopt.types import Program, normalize_score

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "current_policy",
    "current_rollout",
    "load_app",
    "task_app",
]

logger = logging.getLogger("policyopt.remote")

#: requests larger than this are refused with 413 (a prompt plus settings fits easily)
DEFAULT_MAX_BODY_BYTES = 1 << 20
_CURRENT: ContextVar[RolloutRequest | None] = ContextVar("policyopt_rollout", default=None)


def current_rollout() -> RolloutRequest | None:
    """The rollout request being served, inside ``evaluate`` (None elsewhere)."""
    return _CURRENT.get()


def current_policy() -> dict[str, Any]:
    """The ``policy`` settings of the rollout being served (model, temperature, ...), inside
    ``evaluate``; ``{}`` outside a rollout. Use it to honour the job's ``models.policy``."""
    request = _CURRENT.get()
    return dict(request.policy) if request is not None else {}


def _index(
    dataset: Mapping[str, Sequence[Any]] | Task,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """(split -> ids, id -> example) of a dataset; ids must exist and be unique across splits."""
    if isinstance(dataset, Task):
        splits: Mapping[str, Sequence[Any]] = {
            "train": dataset.train,
            "val": dataset.val,
            "test": dataset.test,
        }
    elif isinstance(dataset, Mapping):
        splits = dataset
    else:
        raise DatasetError(
            "task_app(program, dataset): dataset must be a dict of split name -> list of "
            f"examples, or a policyopt Task; got {describe(dataset)}."
        )
    if not splits:
        raise DatasetError("task_app(program, dataset): the dataset has no splits.")
    ids: dict[str, list[str]] = {}
    examples: dict[str, Any] = {}
    where: dict[str, str] = {}
    for split, rows in splits.items():
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise DatasetError(f"Split {split!r} must be a list of examples; got {describe(rows)}.")
        ids[str(split)] = []
        for position, example in enumerate(rows):
            raw = example.get("id") if isinstance(example, Mapping) else None
            if isinstance(raw, bool) or not isinstance(raw, (str, int)) or raw == "":
                raise DatasetError(
                    f"Example {position} of split {split!r} needs an 'id' (a non-empty str or "
                    f"int) so that rollouts can name it; got {describe(raw)}."
                )
            ident = str(raw)
            if ident in examples:
                raise DatasetError(
                    f"Example id {ident!r} appears twice (splits {where[ident]!r} and "
                    f"{split!r}); ids must be unique across the whole dataset."
                )
            examples[ident], where[ident] = example, str(split)
            ids[str(split)].append(ident)
    return ids, examples


def task_app(  # noqa: C901 - its routes are closures over the app's state (19 > 18)
    program: Program,
    dataset: Mapping[str, Sequence[Mapping[str, Any]]] | Task,
    *,
    api_key: str | None = None,
    name: str = "",
    description: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    on_shutdown: Callable[[], object] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``program`` over the task-app protocol.

    ``dataset`` maps split names to examples (each with a unique ``"id"``), or is a built-in
    :class:`~policyopt.tasks.Task` (its train/val/test). With ``api_key`` every endpoint needs
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. ``on_shutdown`` runs when the
    server stops (e.g. to close an LM the program uses).
    """
    try:
        from fastapi import Depends, FastAPI, Header, HTTPException
        from fastapi.responses import JSONResponse
    except ImportError as exc:  # pragma: no cover - the extra is installed in development
        raise MissingDependencyError(
            "The task app needs FastAPI: pip install 'policyopt[remote]'."
        ) from exc

    _check_arguments(program, api_key, max_body_bytes)
    split_ids, examples = _index(dataset)
    if isinstance(dataset, Task):
        name = name or dataset.name
        description = description or dataset.description
    info = TaskInfo(name=name, description=description, splits=split_ids)
    expected = api_key.encode() if api_key else None

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title=f"policyopt task app{': ' + name if name else ''}",
        version=str(PROTOCOL_VERSION),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    def authorize(
        authorization: str | None = Header(None),
        x_api_key: str | None = Header(None),
    ) -> None:
        if expected is None:
            return
        given = x_api_key
        if authorization and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    guard = [Depends(authorize)]

    @app.get("/health", dependencies=guard, response_model=Health)
    def health() -> Any:
        return Health(service=name, auth_required=expected is not None)

    @app.get("/task_info", dependencies=guard, response_model=TaskInfo)
    def task_info() -> Any:
        return info

    route = app.post(
        "/rollout",
        dependencies=guard,
        response_model=RolloutResponse,
        responses={
            404: {"description": "unknown example id"},
            500: {"model": RolloutFailure, "description": "the evaluation failed"},
        },
    )

    def example_of(request: RolloutRequest) -> Any:
        example = examples.get(request.example_id)
        if example is None:
            raise HTTPException(
                status_code=404,
                detail=f"unknown example id {request.example_id!r}: GET /task_info lists the "
                "ids this task app serves",
            )
        return example

    def answer(request: RolloutRequest, outcome: Any, error: Exception | None) -> Any:
        return _answer(JSONResponse, request, outcome, error)

    if is_async_callable(program.evaluate):

        @route
        async def rollout(request: RolloutRequest) -> Any:
            # an async evaluate runs on the server's own loop: no thread per rollout in flight
            example = example_of(request)
            token = _CURRENT.set(request)
            try:
                outcome, error = await program.evaluate(request.prompt, example), None
            except Exception as exc:
                outcome, error = None, exc
            finally:
                _CURRENT.reset(token)
            return answer(request, outcome, error)

    else:

        @route
        def rollout(request: RolloutRequest) -> Any:
            # a sync endpoint: FastAPI runs it in its thread pool, so evaluate never blocks the loop
            example = example_of(request)
            token = _CURRENT.set(request)
            try:
                outcome, error = call_blocking(program.evaluate, request.prompt, example), None
            except Exception as exc:
                outcome, error = None, exc
            finally:
                _CURRENT.reset(token)
            return answer(request, outcome, error)

    return app


def _check_arguments(program: Any, api_key: Any, max_body_bytes: Any) -> None:
    """``task_app``'s arguments, checked before anything is built (a ConfigError naming one)."""
    if not isinstance(program, Program):
        raise ConfigError(
            f"task_app(program, dataset): program must be a policyopt.Program; got "
            f"{describe(program)}. Wrap your code: Program(seed_prompt, evaluate)."
        )
    if api_key is not None and not (isinstance(api_key, str) and api_key):
        raise ConfigError("task_app(api_key=...) must be a non-empty string or None.")
    if (
        isinstance(max_body_bytes, bool)
        or not isinstance(max_body_bytes, int)
        or (max_body_bytes < 1024)
    ):
        raise ConfigError(f"max_body_bytes must be an int >= 1024; got {max_body_bytes!r}.")


def _answer(
    response_class: Any, request: RolloutRequest, outcome: Any, error: Exception | None
) -> Any:
    """The response for an evaluate that returned ``outcome`` or raised ``error``."""
    if error is None:
        try:
            score = normalize_score(outcome)
            problem = _out_of_range(score.score, score.objectives)
        except Exception as exc:
            error = exc
    if error is not None:  # the user's evaluate failed: a failed rollout, reported
        logger.warning(
            "rollout of example %r failed: %s", request.example_id, error, exc_info=error
        )
        return _failure(response_class, request.example_id, error)
    if problem:
        return _failure(response_class, request.example_id, ValueError(problem))
    return RolloutResponse(
        example_id=request.example_id,
        score=score.score,
        feedback=score.feedback,
        objectives=None if score.objectives is None else dict(score.objectives),
        output=json_safe(score.output),
    )


def _out_of_range(score: float, objectives: Mapping[str, float] | None) -> str:
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return (
            f"evaluate returned the score {score!r}; the task-app protocol needs a finite score "
            "in [0, 1]: scale it in evaluate"
        )
    for key, value in (objectives or {}).items():
        if not math.isfinite(value):
            return f"objective {key!r} is {value!r}; objectives must be finite numbers"
    return ""


def _failure(response_class: Any, example_id: str, exc: BaseException) -> Any:
    body = RolloutFailure(
        example_id=example_id,
        error=RolloutError(
            type=ROLLOUT_FAILED, message=str(exc)[:2000], exception=type(exc).__name__
        ),
        detail=f"evaluate failed on example {example_id!r}: {type(exc).__name__}: {str(exc)[:500]}",
    )
    return response_class(status_code=500, content=body.model_dump(mode="json"))


# ------------------------------------------------------------------------- loading for the CLI
def load_app(spec: str, *, api_key: str | None = None) -> FastAPI:
    """The app named by ``module:object`` (what ``policyopt task-app`` serves).

    The object may be a FastAPI app, a built-in :class:`~policyopt.tasks.Task` (served on the
    embedded local model), or a callable returning either (called with ``api_key=`` when it
    takes that parameter).
    """
    from fastapi import FastAPI

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"Expected module:object, e.g. policyopt.remote.builtin:antonyms; got {spec!r}."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"Cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"Module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    key_used = False
    if callable(obj) and not isinstance(obj, (FastAPI, Task)):
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        if "api_key" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            obj, key_used = obj(api_key=api_key), True
        else:
            obj = obj()
    if isinstance(obj, Task):
        return _task_on_local_model(obj, api_key)
    if isinstance(obj, FastAPI):
        if api_key is not None and not key_used:
            raise ConfigError(
                f"{spec} is an app already built, so an API key cannot be added to it: build "
                "it with task_app(..., api_key=...) or point at a factory taking api_key."
            )
        return obj
    raise ConfigError(
        f"{spec} is {describe(obj)}; expected a FastAPI app, a policyopt Task, or a callable "
        "returning one (a Program needs its dataset: return task_app(program, dataset))."
    )


def _task_on_local_model(task: Task, api_key: str | None, n_parallel: int = 4) -> FastAPI:
    """A built-in task served on the embedded local model (started on the first rollout)."""
    from policyopt.lm import LocalLM

    lm = LocalLM(n_parallel=n_parallel)
    return task_app(task.program(lm), task, api_key=api_key, on_shutdown=lm.close)
