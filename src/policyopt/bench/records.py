"""What a benchmark run records: its settings, and one JSON record per finished cell.

A cell is task x optimizer x seed x budget, where the optimizer may be a variant
(``gepa[merge=false]``, :mod:`policyopt.bench.variants`) named canonically. Its record holds the
held-out test score of the seed prompt and of the optimized prompt, what the search spent
(rollouts, LM calls and tokens, task model and optimizer model apart, cost) and the wall time,
so every table and plot is built from records alone and a finished cell is never run again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from policyopt.bench.fingerprint import RunIdentity
from policyopt.bench.variants import Variant, parse_variant
from policyopt.errors import ConfigError
from policyopt.lm.local_models import is_local, local_model
from policyopt.tasks import FEEDBACK_KINDS, split_task_name
from policyopt.types import LMUsage

__all__ = [
    "BenchSettings",
    "CellKey",
    "CellRecord",
    "SplitScore",
    "check_one_run",
    "runs_of",
    "safe_name",
    "write_atomic",
]


class BenchSettings(BaseModel):
    """One benchmark run's grid and the shared settings of its cells."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[str] = Field(
        min_length=1, description="built-in task names, langprobe:<name> or code:<name>"
    )
    optimizers: list[str] = Field(
        min_length=1, description="registered optimizer names or variants: gepa[merge=false]"
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    budget: int = Field(200, ge=1, description="rollouts (metric calls) per cell's search")
    limit: int | None = Field(None, ge=1, description="use only the first N examples per split")
    split_seed: int = Field(0, description="the seed of every task's train/val/test split")
    task_model: str = Field(
        "local",
        description="'local' (SmolLM2), 'local:NAME' (another local GGUF) or a litellm name",
    )
    reflection_model: str = Field(
        "local", description="'local', 'local:NAME' or a litellm model name"
    )
    n_jobs: int = Field(4, ge=1, description="rollouts in parallel inside one cell")
    parallel_cells: int = Field(1, ge=1, description="cells run at once on the same models")
    settings: dict[str, dict[str, JsonValue]] = Field(
        default_factory=dict, description="optimizer name -> its setting overrides"
    )

    @field_validator("optimizers", mode="before")
    @classmethod
    def _canonical(cls, names: Any) -> Any:
        """Variants by their canonical names, so spelling never splits one variant's cells."""
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return [parse_variant(n).name for n in names]
        return names

    @field_validator("tasks", mode="before")
    @classmethod
    def _canonical_tasks(cls, names: Any) -> Any:
        """Task options by one name: ``antonyms[feedback=bare]``; ``[feedback=hint]`` is the
        plain name (the default), so neither spelling splits a task's cells."""
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            return names
        out = []
        for name in names:
            if "[" not in name or name.startswith(("langprobe:", "code:")):
                out.append(name)
                continue
            base, kind = split_task_name(name)
            if kind not in FEEDBACK_KINDS:
                raise ValueError(f"task {name!r}: feedback is one of {', '.join(FEEDBACK_KINDS)}")
            out.append(base if kind == "hint" else f"{base}[feedback={kind}]")
        return out

    @field_validator("task_model", "reflection_model")
    @classmethod
    def _known_local(cls, name: str) -> str:
        """A ``local:NAME`` must name a known local model (checked before any model loads)."""
        if is_local(name):
            local_model(name)
        return name

    @field_validator("tasks", "optimizers")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"names repeat: {names}")
        return names

    def cell_settings(self, optimizer: str) -> dict[str, Any]:
        """The setting overrides of one optimizer or variant (empty when none): those given for
        the optimizer's name in ``settings``, then the variant's own on top."""
        variant = parse_variant(optimizer)
        return {**self.settings.get(variant.optimizer, {}), **variant.settings}


class CellKey(BaseModel):
    """Which cell: task, optimizer, seed, budget, plus a hash of everything else that matters.

    ``optimizer`` is the canonical name of the optimizer or variant (``gepa[merge=false]``).
    ``run`` is the digest of the code and model files (:class:`RunIdentity`) that cells must
    share to be compared; empty in records written before it existed. ``split_seed`` is the seed
    of the task's data splits (0, the published split, in records written before it was kept),
    so development and held-out cells can be told apart (:mod:`policyopt.bench.heldout`)."""

    model_config = ConfigDict(frozen=True)

    task: str
    optimizer: str
    seed: int
    budget: int
    fingerprint: str
    run: str = ""
    split_seed: int = 0

    @classmethod
    def of(
        cls,
        settings: BenchSettings,
        task: str,
        optimizer: str,
        seed: int,
        *,
        run: RunIdentity | None = None,
        preset: Mapping[str, Any] | None = None,
    ) -> CellKey:
        """The key of one cell of ``settings``' grid. With ``run``, the fingerprint also covers
        the code and model files and the optimizer's ``preset`` (the settings it applies on
        top of the cell's, e.g. its small-model preset); without, the older fingerprint."""
        shared: dict[str, Any] = {
            "limit": settings.limit,
            "split_seed": settings.split_seed,
            "task_model": settings.task_model,
            "reflection_model": settings.reflection_model,
            "settings": settings.cell_settings(optimizer),
        }
        variant = parse_variant(optimizer)
        if not variant.is_plain:  # (plain names keep the fingerprints of older records)
            shared["variant"] = variant.name
        if run is not None:
            shared["run"] = run.digest
            shared["preset"] = dict(preset or {})
        text = json.dumps(shared, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        return cls(
            task=task,
            optimizer=variant.name,
            seed=seed,
            budget=settings.budget,
            fingerprint=digest,
            run="" if run is None else run.digest,
            split_seed=settings.split_seed,
        )

    @property
    def variant(self) -> Variant:
        """The optimizer name and the settings the cell's variant overrides."""
        return parse_variant(self.optimizer)

    @property
    def base_optimizer(self) -> str:
        """The registered optimizer's name (``gepa`` for ``gepa[merge=false]``)."""
        return self.variant.optimizer

    @property
    def slug(self) -> str:
        """A file-name-safe name of the cell."""
        task = safe_name(self.task)
        name = self.optimizer
        if "[" in name:  # a variant (plain names keep the file names of older records)
            name = safe_name(name)
            if len(name) > 80:  # the fingerprint below tells long variants apart
                name = name[:80]
        return f"{task}__{name}__s{self.seed}__b{self.budget}__{self.fingerprint}"


class SplitScore(BaseModel):
    """One prompt's score on the held-out test split."""

    model_config = ConfigDict(frozen=True)

    score: float
    n_examples: int
    n_failed: int = 0
    per_example: dict[str, float] = Field(default_factory=dict)
    usage: LMUsage = Field(default_factory=LMUsage)


class CellRecord(BaseModel):
    """The finished cell: scores, spend and time. ``status`` is ``ok`` or ``failed``."""

    model_config = ConfigDict(frozen=True)

    key: CellKey
    status: Literal["ok", "failed"]
    error: str | None = None
    seed_prompt: str = ""
    best_prompt: str = ""
    baseline_test: SplitScore | None = None
    optimized_test: SplitScore | None = None
    best_val_score: float | None = None
    rollouts: int = 0
    curve: list[tuple[int, float]] = Field(default_factory=list)
    task_usage: LMUsage = Field(default_factory=LMUsage, description="task model, search only")
    optimizer_usage: LMUsage = Field(default_factory=LMUsage, description="reflection/proposal")
    search_wall_s: float = 0.0
    wall_s: float = 0.0
    details: dict[str, JsonValue] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    identity: RunIdentity | None = Field(None, description="code, model hashes and machine")

    @property
    def gain(self) -> float | None:
        """Optimized minus seed prompt test score (None for a failed cell)."""
        if self.baseline_test is None or self.optimized_test is None:
            return None
        return self.optimized_test.score - self.baseline_test.score

    @property
    def val_test_gap(self) -> float | None:
        """The chosen prompt's validation score minus its test score: how much the choice
        overfit the valset (None when either is missing, e.g. in a failed cell)."""
        if self.best_val_score is None or self.optimized_test is None:
            return None
        return self.best_val_score - self.optimized_test.score

    @property
    def cost_usd(self) -> float | None:
        """What the search's LM calls cost (None when the provider gives no price)."""
        costs = [self.task_usage.cost_usd, self.optimizer_usage.cost_usd]
        return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens of the search, both models."""
        return sum(
            u.prompt_tokens + u.completion_tokens for u in (self.task_usage, self.optimizer_usage)
        )


def runs_of(records: Sequence[CellRecord]) -> dict[str, list[CellRecord]]:
    """Records by their run digest (``""``: written before records carried one)."""
    out: dict[str, list[CellRecord]] = {}
    for record in records:
        out.setdefault(record.key.run, []).append(record)
    return out


def check_one_run(records: Sequence[CellRecord], where: str = "these records") -> None:
    """Refuse records that would mix silently: cells of different runs (code or model files),
    or one cell written under several fingerprints (settings or presets changed in between).

    Raises :class:`ConfigError` naming them; pick one run with :func:`runs_of`."""
    runs = runs_of(records)
    if len(runs) > 1:
        lines = []
        for digest, group in runs.items():
            identity = next((r.identity for r in group if r.identity is not None), None)
            what = (
                f"code {identity.code}, task model {identity.task_model}"
                if identity is not None
                else "written before records carried their code and model hashes"
            )
            lines.append(f"run {digest or '(none)'}: {len(group)} cells, {what}")
        raise ConfigError(
            f"{where} mix {len(runs)} runs with different code or model files ("
            + "; ".join(lines)
            + "). Their scores are not comparable: write each run to its own --out folder, "
            "or select one with policyopt.bench.records.runs_of."
        )
    seen: dict[tuple[str, str, int, int], str] = {}
    for record in records:
        key = record.key
        cell = (key.task, key.optimizer, key.seed, key.budget)
        other = seen.setdefault(cell, key.fingerprint)
        if other != key.fingerprint:
            raise ConfigError(
                f"{where} hold {key.task} / {key.optimizer} / seed {key.seed} twice, under "
                f"fingerprints {other} and {key.fingerprint} (settings or presets changed "
                "between runs): write each to its own --out folder."
            )


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits, ``-`` and ``_`` made ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_atomic(path: Path, payload: str) -> None:
    """Write a file so a crash leaves either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
