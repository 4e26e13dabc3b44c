"""The held-out protocol: which tasks and data seeds tuned the defaults, which only report.

Every default and preset (GEPA's and MIPRO's small-model settings, the final choice, the
templates) was developed on :data:`DEVELOPMENT`: the four original built-in tasks on their
published split (split seed 0), hint and bare feedback. :data:`HELDOUT` was never looked at while
tuning: the ``plural`` task (added for this purpose) and fresh split seeds of every built-in task.
A summary must never pool the two, so :func:`check_one_side` refuses records that mix them; the
split seed of a cell is in its record (:attr:`~policyopt.bench.records.CellKey.split_seed`) and
the feedback kind in its task name (``plural[feedback=bare]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from policyopt.bench.records import CellRecord
from policyopt.errors import ConfigError
from policyopt.tasks import FEEDBACK_KINDS, split_task_name

__all__ = [
    "DEVELOPMENT",
    "HELDOUT",
    "HELDOUT_ONLY_TASKS",
    "Side",
    "TaskSet",
    "check_one_side",
    "side_of",
]

#: which set a cell belongs to; ``other``: neither (e.g. a LangProBe task, or an unused seed)
Side = Literal["development", "heldout", "other"]


@dataclass(frozen=True)
class TaskSet:
    """Built-in tasks x split seeds x feedback kinds: one side of the protocol."""

    tasks: tuple[str, ...]
    split_seeds: tuple[int, ...]
    feedback: tuple[str, ...] = FEEDBACK_KINDS

    def names(self) -> list[str]:
        """The task names a ``policyopt bench --tasks`` gets, one per task and feedback kind."""
        return [
            t if kind == "hint" else f"{t}[feedback={kind}]"
            for t in self.tasks
            for kind in self.feedback
        ]


#: what the defaults and presets were tuned on
DEVELOPMENT = TaskSet(
    tasks=("antonyms", "language_id", "addition", "extract_phone"), split_seeds=(0,)
)
#: what they are reported on: a task never used while tuning, and fresh data seeds of every task
HELDOUT = TaskSet(tasks=("plural", *DEVELOPMENT.tasks), split_seeds=(101, 102, 103, 104, 105))
#: tasks no setting was tuned on: held-out on every split seed
HELDOUT_ONLY_TASKS = tuple(t for t in HELDOUT.tasks if t not in DEVELOPMENT.tasks)


def side_of(task: str, split_seed: int) -> Side:
    """Which side of the protocol the cell of ``task`` (feedback option allowed) on the data of
    ``split_seed`` is on."""
    if task.startswith(("langprobe:", "code:")):
        return "other"
    base, _ = split_task_name(task)
    if base in HELDOUT_ONLY_TASKS:
        return "heldout"
    if base in DEVELOPMENT.tasks and split_seed in DEVELOPMENT.split_seeds:
        return "development"
    if base in HELDOUT.tasks and split_seed in HELDOUT.split_seeds:
        return "heldout"
    return "other"


def check_one_side(records: Sequence[CellRecord], where: str = "these records") -> Side | None:
    """The one side all ``records`` are on (None when there are none); a :class:`ConfigError`
    naming a cell of each side when they mix, so no summary pools tuning and held-out data."""
    first: dict[Side, CellRecord] = {}
    for record in records:
        first.setdefault(side_of(record.key.task, record.key.split_seed), record)
    if len(first) > 1:
        cells = "; ".join(
            f"{side}: {r.key.task} split seed {r.key.split_seed} ({r.key.optimizer}, seed "
            f"{r.key.seed})"
            for side, r in first.items()
        )
        raise ConfigError(
            f"{where} mix cells of the held-out protocol's sides ({cells}). Development and "
            "held-out scores must not be summarized together: write each to its own --out folder."
        )
    return next(iter(first), None)
