"""The run's bill, in one place: what a run announces it may spend, keeps to, and spent.

Every optimizer forecasts its optimizer-LM calls up front (``lm_calls``, with ``lm_calls_min``
and ``lm_calls_max`` where it is a range). :func:`with_lm_cap` turns the forecast into the run's
cap: the user's ``max_lm_calls`` when given, else at most :data:`MAX_OVER_FORECAST` times the
point forecast. The run refuses any live call past the cap (see
:class:`policyopt.state.memo.JournaledLM`), so no run spends more than it announced, whatever
its LM answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_OVER_FORECAST", "Segments", "with_lm_cap"]

#: the default cap on optimizer-LM calls, as a multiple of the point forecast
MAX_OVER_FORECAST = 3


def with_lm_cap(estimate: Mapping[str, Any], max_lm_calls: int | None) -> dict[str, Any]:
    """``estimate`` with ``lm_calls_cap`` (the calls the run may make) and where it came from;
    its ``lm_calls_max`` never exceeds the cap.

    An estimate without ``lm_calls`` (a user's optimizer that forecasts none) gets a cap only
    from ``max_lm_calls``.
    """
    out = dict(estimate)
    point = out.get("lm_calls")
    if max_lm_calls is not None:
        cap, source = int(max_lm_calls), "max_lm_calls"
    elif isinstance(point, int | float) and not isinstance(point, bool):
        cap = MAX_OVER_FORECAST * max(1, math.ceil(point))
        stated = out.get("lm_calls_max")
        if isinstance(stated, int | float) and stated < cap:
            cap = max(1, math.ceil(stated))
        source = f"default: the forecast's maximum, at most {MAX_OVER_FORECAST}x its point"
    else:
        return out
    out["lm_calls_cap"] = cap
    out["lm_calls_cap_from"] = source
    for key in ("lm_calls_max", "reflection_calls_max"):
        if isinstance(out.get(key), int | float):
            out[key] = min(out[key], cap)
    for key in ("lm_calls", "lm_calls_min", "reflection_calls", "reflection_calls_min"):
        if isinstance(out.get(key), int | float):
            out[key] = min(out[key], cap)
    return out


class Segments:
    """The wall time of a run over its segments (one per process that ran it).

    Each segment journals ``{"type": "segment", "segment": i, "wall_s": seconds}`` records as
    it goes (see :class:`policyopt.runtime.RunContext`), so a killed segment's time counts up
    to its last record.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.earlier: dict[int, float] = {}
        for record in records:
            index, wall = record.get("segment"), record.get("wall_s")
            if isinstance(index, int) and isinstance(wall, int | float):
                self.earlier[index] = max(self.earlier.get(index, 0.0), float(wall))
        self.index = max(self.earlier, default=0) + 1

    def record(self, wall_s: float) -> dict[str, Any]:
        """The journal record of this segment's time so far."""
        return {"type": "segment", "segment": self.index, "wall_s": round(wall_s, 3)}

    def total(self, wall_s: float) -> float:
        """Every earlier segment's time plus this one's ``wall_s``."""
        return math.fsum(self.earlier.values()) + wall_s
