"""OPRO's settings: one frozen, validated model; unknown names are an error."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator

from policyopt.opro.meta import ARTIFACT_TEMPLATE, COMPACT_TEMPLATE, DEFAULT_TEMPLATE
from policyopt.runtime import RESUMABLE, RunSettings
from policyopt.steps import perfect_score_field, stop_at_perfect_field
from policyopt.templates import check_template

__all__ = ["RESUMABLE_CHANGES", "TEMPLATES", "OPROSettings", "estimate"]

#: built-in meta-prompts by name: ``meta_template="artifact"`` works anywhere
TEMPLATES = {
    "default": DEFAULT_TEMPLATE,
    "compact": COMPACT_TEMPLATE,
    "artifact": ARTIFACT_TEMPLATE,
}

#: settings that may differ when a run_dir is resumed (they change where a run ends, not its path)
RESUMABLE_CHANGES = RESUMABLE | {"patience", "max_steps"}

_ASSUMED_PROMOTION_RATE = 0.5  # for the up-front estimate only


class OPROSettings(RunSettings):
    """Everything that configures an OPRO run except the meta LM itself."""

    proposals_per_step: int = Field(4, ge=1, description="new instructions asked per step")
    max_history: int = Field(20, ge=1, description="best scored instructions in the meta-prompt")
    n_exemplars: int = Field(3, ge=0, description="training examples shown per meta-prompt")
    exemplar_feedback: bool = Field(
        True, description="run the best prompt on the exemplars and show its answer and feedback"
    )
    minibatch_size: int | None = Field(
        10, ge=1, description="valset examples a proposal is scored on (None: the whole valset)"
    )
    max_steps: int | None = Field(None, ge=1, description="cap on optimization steps")
    patience: int | None = Field(None, ge=1, description="steps without a new best")
    perfect_score: float | None = perfect_score_field()
    stop_at_perfect: bool = stop_at_perfect_field()
    max_proposal_retries: int = Field(2, ge=0, description="re-asks after an unusable proposal")
    max_prompt_chars: int = Field(4000, ge=1, description="longest instruction accepted")
    max_exemplar_chars: int = Field(300, ge=20, description="characters per exemplar field shown")
    reject_copies: bool = Field(
        True, description="reject proposals that copy an exemplar's input or answer (guards.py)"
    )
    meta_template: str = Field(
        DEFAULT_TEMPLATE,
        description="the meta-prompt, or a built-in by name (default, compact, artifact)",
    )

    @field_validator("meta_template")
    @classmethod
    def _template(cls, value: str) -> str:
        value = TEMPLATES.get(value, value)  # a built-in template by name
        if "history" not in check_template(value, ("history", "exemplars", "length")):
            raise ValueError(
                "must contain the placeholder {history} (and may use {exemplars} and {length})"
            )
        return value


def estimate(settings: OPROSettings, n_train: int, n_val: int) -> dict[str, Any]:
    """What the settings imply: rollouts per step (at most), steps and meta LM calls (a forecast).

    A step pays at most ``k * minibatch`` proposal rollouts, ``k * n_exemplars`` exemplar runs
    (fewer once cached) and one full evaluation (``n_val - minibatch`` more rollouts), assumed to
    happen every other step.
    """
    k = settings.proposals_per_step
    batch = n_val if settings.minibatch_size is None else min(settings.minibatch_size, n_val)
    feedback = k * min(settings.n_exemplars, n_train) if settings.exemplar_feedback else 0
    per_step_max = k * batch + feedback + (n_val - batch)
    per_step = k * batch + feedback + _ASSUMED_PROMOTION_RATE * (n_val - batch)
    steps = max(0, math.floor((settings.max_rollouts - n_val) / max(per_step, 1)))
    if settings.max_steps is not None:
        steps = min(steps, settings.max_steps)
    # The keys every estimate shares (see policyopt.registry.Estimator). OPRO steps until its
    # budget (or max_steps, patience, a perfect score) ends it. Its calls are a range: a step
    # costs between its proposals' minibatch runs (exemplars cached, no promotion) and
    # per_step_max, and a repeated or unusable proposal is re-asked. Every proposal new and
    # paid is the point's upper end; one new one a step (the others repeated, each re-asked
    # max_proposal_retries times) is the range's top.
    left = max(0, settings.max_rollouts - n_val)
    steps_all_new = left // max(1, k * batch)
    steps_max = left // max(1, batch)
    steps_min = left // max(1, per_step_max)
    if settings.max_steps is not None:
        steps_max, steps_min = (
            min(steps_max, settings.max_steps),
            min(steps_min, settings.max_steps),
        )
        steps_all_new = min(steps_all_new, settings.max_steps)
    # a step the budget cannot pay in full runs with fewer proposals: one call at least
    fewest = max(steps_min * k, 1 if left >= batch else 0)
    point = round(math.sqrt(fewest * max(fewest, steps_all_new * k)))
    return {
        "max_rollouts": settings.max_rollouts,
        "seed_evaluation": n_val,
        "minibatch": batch,
        "proposals_per_step": k,
        "rollouts_per_step_max": per_step_max,
        "steps": steps,
        "meta_calls": steps * k,
        "assumed_promotion_rate": _ASSUMED_PROMOTION_RATE,
        "rollouts": settings.max_rollouts,
        "lm_calls": point,
        "lm_calls_min": fewest,
        "lm_calls_max": steps_max * k * (settings.max_proposal_retries + 1),
        "why_a_range": "repeated or unusable proposals are re-asked and cost no rollout, cached "
        "exemplar runs and unpromoted steps cost fewer, so the budget buys more steps; a meta LM "
        "that keeps repeating itself adds calls until the run stalls (10 steps with nothing new)",
    }
