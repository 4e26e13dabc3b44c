"""GEPA's settings: one frozen, validated model; unknown names are an error."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_serializer, field_validator

from policyopt.choice import FinalChoice, final_choice_field, final_z_field
from policyopt.gepa import strategies
from policyopt.gepa.reflection import (
    ADVICE_TEMPLATE,
    ARTIFACT_TEMPLATE,
    COMPACT_TEMPLATE,
    DEFAULT_TEMPLATE,
)
from policyopt.runtime import RESUMABLE, RunSettings
from policyopt.templates import check_template

__all__ = ["RESUMABLE_CHANGES", "TEMPLATES", "GEPASettings"]

#: built-in reflection templates by name: ``reflection_template="compact"`` works anywhere
TEMPLATES = {
    "default": DEFAULT_TEMPLATE,
    "compact": COMPACT_TEMPLATE,
    "advice": ADVICE_TEMPLATE,
    "artifact": ARTIFACT_TEMPLATE,
}
#: the placeholders a reflection template may use (see gepa.reflection.render_prompt)
PLACEHOLDERS = (
    "component",
    "current",
    "records",
    "feedback",
    "advice",
    "retry",
    "outputs",
    "length",
)

#: settings that may differ when a run_dir is resumed (they do not change the trajectory)
RESUMABLE_CHANGES = RESUMABLE | {"patience"}


class GEPASettings(RunSettings):
    """Everything that configures a GEPA run except the reflection LM itself."""

    minibatch_size: int = Field(3, ge=1, description="training examples per reflection")
    merge: bool = Field(True, description="combine lineages that improved different parts")
    max_merges: int = Field(5, ge=0, description="cap on accepted merges")
    merge_subsample_size: int = Field(5, ge=1, description="valset examples a merge is judged on")
    proposals_per_iteration: int | None = Field(
        None, ge=1, description="children proposed per iteration; None: from n_jobs"
    )
    proposals_per_reflection: int = Field(
        1,
        ge=1,
        le=16,
        description="proposals sampled from each reflection prompt (another seed each); all are "
        "tried on the parent's minibatch and race like siblings",
    )
    max_accepted_per_iteration: int = Field(
        1, ge=1, description="children (best gain first) scored on the valset"
    )
    candidate_selection: Any = Field(
        "pareto", description="how parents are chosen: pareto, current_best, epsilon_greedy"
    )
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="exploration rate of epsilon_greedy")
    component_selection: Any = Field(
        "round_robin", description="which components a reflection rewrites: round_robin, all"
    )
    minibatch_sampler: Any = Field(
        "epoch", description="training minibatches: epoch (seeded shuffles), or a factory"
    )
    acceptance: Any = Field(
        "improvement", description="child vs parent on a minibatch: improvement, non_decreasing"
    )
    merge_pairing: Any = Field(
        "common_ancestor", description="which lineages a merge combines: common_ancestor"
    )
    proposer: Any = Field(
        "reflection", description="who writes new texts: reflection (the LM), or your own"
    )
    acceptance_margin: float = Field(0.0, ge=0.0, description="mean gain a child must beat")
    tie_tolerance: float = Field(1e-6, ge=0.0, description="scores this close count as equal")
    skip_perfect: bool = Field(True, description="no reflection on a perfect minibatch")
    perfect_score: float | None = Field(
        None, description="score that counts as solved; None: the top of score_range"
    )
    stop_at_perfect: bool = Field(True, description="stop once the valset is solved")
    patience: int | None = Field(None, ge=1, description="iterations without a new best")
    max_proposal_retries: int = Field(2, ge=0, description="re-asks after an unusable proposal")
    max_prompt_chars: int = Field(20_000, ge=1, description="longest proposal accepted")
    max_record_chars: int = Field(1_500, ge=20, description="characters per rollout record shown")
    reject_copies: bool = Field(
        True,
        description="reject proposals that copy an example's input or answer from the reflection "
        "records (counted as copies_example in details['rejections']; guards.py)",
    )
    final_choice: FinalChoice = final_choice_field()
    final_z: float = final_z_field()
    reflection_template: str = Field(
        DEFAULT_TEMPLATE,
        description="the reflection meta-prompt, or a built-in by name (default, compact, advice, "
        "artifact; gepa-lib: the gepa library's own, if installed)",
    )

    min_rollouts_per_call: float | None = Field(
        None,
        ge=0.0,
        description="rollouts per reflection call kept to (None: 2 x minibatch_size; 0: none); "
        "while calls run ahead, children are judged on several minibatches",
    )

    @field_validator(*strategies.NAMES)
    @classmethod
    def _strategy(cls, value: Any, info: ValidationInfo) -> Any:
        return strategies.check(info.field_name or "", value)

    @field_serializer(*strategies.NAMES)
    def _dump_strategy(self, value: Any) -> Any:
        return strategies.describe_strategy(value)

    @field_validator("reflection_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value == "gepa-lib":  # the gepa library's own meta-prompt (equal-template runs)
            from policyopt.gepa.reflection import gepa_lib_template

            value = gepa_lib_template()
        value = TEMPLATES.get(value, value)  # a built-in template by name
        check_template(value, PLACEHOLDERS)  # only {name} fields: never str.format's extras
        shown = ("{records}", "{feedback}", "{advice}")
        if "{current}" not in value or not any(p in value for p in shown):
            raise ValueError(
                "must contain the placeholders {current} and {records}, {feedback} or {advice}"
            )
        return value

    def proposals(self) -> int:
        """Children per iteration: explicit, or one per ``minibatch_size`` threads (max 4).

        Several children keep ``n_jobs`` busy and overlap their reflection calls. Measured on
        the built-in task with the local model, two proposals per iteration (n_jobs=4) found
        better prompts than one in the same budget; with a reflection LM that is usually right,
        one is cheaper in reflection calls (``benchmarks/gepa_parallel_speedup.py``).
        """
        if self.proposals_per_iteration is not None:
            return self.proposals_per_iteration
        workers = self.n_jobs if self.n_jobs > 0 else 4
        return max(1, min(4, -(-workers // self.minibatch_size)))
