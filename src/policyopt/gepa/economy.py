"""What a GEPA reflection costs: its samples' seeds, one LM call for all of them (the API's
``n``), and how wide the minibatch gate is, so that the calls keep to the rollouts' pace."""

from __future__ import annotations

import contextlib
import io
import math
from typing import TYPE_CHECKING, Any

from policyopt.lm.base import LM
from policyopt.lm.local import LocalLM
from policyopt.state.memo import JournaledLM

if TYPE_CHECKING:
    from policyopt.gepa.optimizer import _Run

__all__ = ["batches_samples", "prefetch", "sample_seed", "serves_n", "widen"]


def batches_samples(proposer: Any) -> bool:
    """Whether a reflection's samples share one call: the built-in proposer with a policyopt
    LM that serves ``n`` (a plain callable cannot be asked for it)."""
    lm = getattr(proposer, "lm", None)
    return isinstance(lm, JournaledLM) and isinstance(lm.lm, LM) and serves_n(lm.lm)


def serves_n(lm: LM) -> bool:
    """Whether ``lm`` answers several choices in one request: its own ``serves_n`` if it says,
    the embedded LocalLM (it serves ``n`` itself), else what litellm lists for its provider."""
    declared = getattr(lm, "serves_n", None)
    if isinstance(declared, bool):
        return declared
    if isinstance(lm, LocalLM):
        return True
    try:
        import litellm

        with contextlib.redirect_stdout(io.StringIO()):  # it prints on an unknown provider
            params = litellm.get_supported_openai_params(model=lm.model)
    except Exception:
        return False
    return "n" in (params or [])


def widen(run: _Run) -> int:
    """Minibatches this iteration's children are judged on: more while the reflection calls
    run ahead of ``min_rollouts_per_call`` rollouts each (default ``2 * minibatch_size``, what
    the gepa library's loop pays for one), so a budget buys no more calls here than there."""
    s, usage = run.s, getattr(run.proposer, "usage", None)
    floor = 2 * s.minibatch_size if s.min_rollouts_per_call is None else s.min_rollouts_per_call
    # the calls after this iteration (one per slot at least) against the rollouts it pays
    calls = (usage.calls if usage else 0) + run.k
    need = calls * floor - run.engine.rollouts_spent
    wide = math.ceil(need / (run.k * s.minibatch_size * run.samples))
    most = len(run.train_ids) // s.minibatch_size
    if wide <= 1 or most < 2:
        return 1
    run.counts["widened"] += 1
    return min(most, wide)


def sample_seed(run: _Run, slot: int, sample: int) -> int:
    """The sampling seed of a reflection's sample (0: one sample, the LM's own seed)."""
    n = run.s.proposals_per_reflection
    local = ((run.iteration - 1) * run.k + slot) * n + sample
    return 1 + (run.s.seed * 1_000_003 + local) % (2**31 - 2) if n > 1 else 0


def prefetch(run: _Run, job: Any) -> None:
    """One LM call for the first attempt of every sample of a job (seeds in a row)."""
    slot, parent, _, _, names, records = job
    first = sample_seed(run, slot, 0)
    if sample_seed(run, slot, run.samples - 1) != first + run.samples - 1:
        return  # the seeds wrap around: each sample asks alone
    for name in names:
        keys = [
            f"{run.iteration}/{slot}/{name}" + (f"/s{i}" if i else "") for i in range(run.samples)
        ]
        run.proposer.prefetch(keys, name, run.pop.prompts[parent][name], records, sample=first)
