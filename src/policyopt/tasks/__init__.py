"""Built-in tasks that run offline on the embedded local model.

A name may carry the feedback kind, ``antonyms[feedback=bare]`` (:func:`get_task`): bare feedback
says only ``expected X, got Y`` (:func:`policyopt.tasks.base.with_feedback`).
"""

from __future__ import annotations

from collections.abc import Callable

from policyopt.errors import ConfigError
from policyopt.tasks.base import FEEDBACK_KINDS, Task, with_feedback

__all__ = ["DEFAULT_TASK", "FEEDBACK_KINDS", "TASKS", "Task", "get_task", "split_task_name"]


def _antonyms(seed: int) -> Task:
    from policyopt.tasks.antonyms import make_task

    return make_task(seed)


def _language_id(seed: int) -> Task:
    from policyopt.tasks.language_id import make_task

    return make_task(seed)


def _extract_phone(seed: int) -> Task:
    from policyopt.tasks.extract_phone import make_task

    return make_task(seed)


def _plural(seed: int) -> Task:
    from policyopt.tasks.plural import make_task

    return make_task(seed)


def _addition(seed: int) -> Task:
    from policyopt.tasks.addition import make_task

    return make_task(seed)


#: name -> factory(seed) of every built-in task
TASKS: dict[str, Callable[[int], Task]] = {
    "antonyms": _antonyms,
    "language_id": _language_id,
    "extract_phone": _extract_phone,
    "addition": _addition,
    "plural": _plural,
}
DEFAULT_TASK = "antonyms"


def split_task_name(name: str) -> tuple[str, str]:
    """``antonyms[feedback=bare]`` -> (``antonyms``, ``bare``); a plain name has ``hint``."""
    base, bracket, rest = name.partition("[")
    if not bracket:
        return name, "hint"
    option, _, value = rest.rstrip().removesuffix("]").partition("=")
    if not rest.rstrip().endswith("]") or option.strip() != "feedback":
        raise ConfigError(
            f"Task {name!r}: the only task option is feedback, e.g. {base}[feedback=bare]."
        )
    return base.strip(), value.strip()


def get_task(name: str, seed: int = 0, feedback: str | None = None) -> Task:
    """A built-in task by name, its splits drawn from ``seed``, with ``feedback`` (``hint``,
    the default, or ``bare``; also given in the name: ``antonyms[feedback=bare]``)."""
    base, named = split_task_name(name)
    if base not in TASKS:
        raise ConfigError(f"Unknown task {base!r}; built-in tasks: {sorted(TASKS)}.")
    if feedback is not None and "[" in name and feedback != named:
        raise ConfigError(f"Task {name!r} asked for feedback {feedback!r} too; choose one.")
    return with_feedback(TASKS[base](seed), feedback or named)
