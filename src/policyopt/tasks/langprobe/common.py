"""What every LangProBe-style benchmark is made of: its program, its description, shared helpers.

:class:`Program` (prompts, input rendering, metric) and :class:`LangProBeDataset` (hub location,
notes, builder), with the helpers the builders share (column checks, stable ids, label names).
The benchmarks themselves are in :mod:`~policyopt.tasks.langprobe.qa`,
:mod:`~policyopt.tasks.langprobe.classification` and :mod:`~policyopt.tasks.langprobe.benchmarks`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policyopt.errors import DatasetError
from policyopt.tasks.langprobe.data import HubSplit, RawSplit, Splits
from policyopt.types import Score

__all__ = ["LangProBeDataset", "Program", "Row"]


Row = dict[str, Any]


@dataclass(frozen=True)
class Program:
    """How a benchmark is asked and scored: prompts, input rendering, metric, LM settings."""

    seed_prompt: str
    reference_prompt: str
    render_input: Callable[[Row], str]
    metric: Callable[[str, Row], Score]
    lm_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LangProBeDataset:
    """One LangProBe-style benchmark: its description, kind, hub location and notes."""

    name: str
    title: str
    description: str
    kind: str
    hub: Mapping[str, HubSplit]
    metric: str
    notes: str
    build: Callable[[dict[str, RawSplit], str, int], Splits] = field(repr=False)
    program: Callable[[], Program] = field(repr=False)

    @property
    def hub_ids(self) -> list[str]:
        """The hub dataset ids this benchmark reads (one or two)."""
        return sorted({h.path for h in self.hub.values()})


# ---------------------------------------------------------------- helpers


class _Render:
    """``render_input`` from a template over the example's fields (picklable, for process
    backends, unlike a lambda)."""

    def __init__(self, template: str) -> None:
        self.template = template

    def __call__(self, example: Row) -> str:
        return self.template.format_map(example)


def _require(name: str, split: str, raw: RawSplit, columns: Sequence[str], like: str) -> None:
    """Every row has ``columns``; else a DatasetError naming the missing column."""
    if not raw.rows:
        raise DatasetError(f"LangProBe {name} source split {split!r} is empty.")
    for i, row in enumerate(raw.rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise DatasetError(
                f"LangProBe {name} source split {split!r}: row {i} has no column "
                f"{missing[0]!r} (it has {sorted(row)}); the data must have the schema of "
                f"{like} (columns {', '.join(columns)})."
            )


def _assign_ids(
    raw: dict[str, RawSplit], rows: dict[str, list[Row]], id_column: str | None
) -> None:
    """Give every row a string ``id``, stable across runs: the hub's id column where present and
    unique over all source splits; else ``<source split>-<id>``; else ``<source split>-<index>``
    (the row's index in its source split)."""
    plain: dict[str, list[str]] = {}
    for split, items in rows.items():
        source = raw[split].rows
        plain[split] = [
            str(source[i][id_column])
            if id_column and source[i].get(id_column) is not None
            else f"{split}-{i}"
            for i in range(len(items))
        ]
    prefixed = {
        split: [i if i.startswith(f"{split}-") else f"{split}-{i}" for i in ids]
        for split, ids in plain.items()
    }
    indexed = {split: [f"{split}-{i}" for i in range(len(ids))] for split, ids in plain.items()}
    for candidate in (plain, prefixed, indexed):
        every = [i for ids in candidate.values() for i in ids]
        if len(set(every)) == len(every):
            break
    for split, items in rows.items():
        for item, ident in zip(items, candidate[split], strict=True):
            item["id"] = ident


def _label_name(value: Any, names: Sequence[str], what: str) -> str:
    """A ClassLabel id or name, as the name."""
    if isinstance(value, bool) or value is None:
        raise DatasetError(f"{what}: label {value!r} is neither a label id nor a label name.")
    if isinstance(value, int):
        if not 0 <= value < len(names):
            raise DatasetError(f"{what}: label id {value} is outside 0..{len(names) - 1}.")
        return names[value]
    return str(value)


def _shuffled(items: list[Row], seed: int) -> list[Row]:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items
