"""The Optimizer protocol every algorithm implements (GEPA, MIPRO, and yours)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from policyopt.types import OptimizationResult, Program

__all__ = ["Optimizer"]


@runtime_checkable
class Optimizer(Protocol):
    """Anything with ``optimize(program, trainset, valset=None) -> OptimizationResult``.

    Settings go to the constructor; ``optimize`` takes the data. Examples are arbitrary objects
    (dicts recommended); each gets a stable id: its ``"id"`` key when present, else its index.
    When ``valset`` is None the optimizer validates on ``trainset``.
    """

    def optimize(
        self,
        program: Program,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
    ) -> OptimizationResult: ...
