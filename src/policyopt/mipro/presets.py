"""MIPRO's ``auto`` presets, with the formula written down.

Their own module, below both :mod:`policyopt.mipro.config` (whose settings resolve ``auto``) and
:mod:`policyopt.mipro.budget` (which fits presets to a rollout budget), so that the two do not
import each other.
"""

from __future__ import annotations

import math

__all__ = ["PRESETS", "preset"]

#: ``auto`` presets: n as in DSPy's MIPROv2 (light 6, medium 12, heavy 18)
PRESETS = {"light": 6, "medium": 12, "heavy": 18}


def preset(auto: str, n_components: int, zero_shot: bool) -> tuple[int, int]:
    """``(num_candidates, num_trials)`` for a preset.

    With ``n`` from :data:`PRESETS` and ``V`` the number of searched variables (one instruction
    choice per component, plus one demo-set choice unless zero-shot):
    ``num_candidates = n`` and ``num_trials = max(2 * V * log2(n), 1.5 * n)`` (DSPy's formula).
    The valset is never subsampled; the rollouts it implies are in :func:`estimate_rollouts`.
    """
    n = PRESETS[auto]
    variables = n_components if zero_shot else 2 * n_components
    return n, int(max(2 * variables * math.log2(n), 1.5 * n))
