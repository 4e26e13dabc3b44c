"""MIPRO's settings (its ``auto`` presets live in :mod:`policyopt.mipro.presets`, re-exported)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_serializer, field_validator, model_validator

from policyopt.choice import FinalChoice, final_choice_field, final_z_field
from policyopt.mipro import strategies
from policyopt.mipro.budget import plan_for_budget
from policyopt.mipro.presets import PRESETS, preset
from policyopt.runtime import RESUMABLE, RunSettings
from policyopt.steps import perfect_score_field, stop_at_perfect_field

__all__ = ["PRESETS", "RESUMABLE_CHANGES", "MIPROSettings", "preset"]

#: settings that may differ when a run_dir is resumed (they do not change the trajectory)
RESUMABLE_CHANGES = RESUMABLE


class MIPROSettings(RunSettings):
    """Everything that configures a MIPRO run except the proposer LM itself."""

    auto: Literal["light", "medium", "heavy"] | None = Field(
        None, description="preset sizes (DSPy's light/medium/heavy)"
    )
    num_candidates: int | None = Field(None, ge=1, description="instructions and demo sets")
    num_trials: int | None = Field(None, ge=1, description="minibatch trials of the search")
    max_bootstrapped_demos: int = Field(4, ge=0, description="demos from the seed's own runs")
    max_labeled_demos: int = Field(4, ge=0, description="demos from labeled examples")
    metric_threshold: float | None = Field(
        None, description="a bootstrapped demo must score at least this (None: the max, 1.0)"
    )
    label_key: str | None = Field(
        None, description="example key holding the answer, for labeled demos (None: detect)"
    )
    minibatch_size: int | None = Field(
        None, ge=1, description="valset examples per trial (None: 10 from a budget, else 35)"
    )
    full_eval_every: int = Field(5, ge=1, description="trials between full valset evaluations")
    trials_per_batch: int = Field(2, ge=1, description="trials asked of Optuna at once")
    n_startup_trials: int | None = Field(
        None, ge=0, description="random trials before TPE models (None: max(4, 2 x variables))"
    )
    program_description: str | None = Field(
        None, description="what the program does, for the proposer"
    )
    tips: bool = Field(True, description="a random proposal tip per instruction")
    max_prompt_chars: int = Field(4000, ge=1, description="longest instruction accepted")
    max_proposal_retries: int = Field(2, ge=0, description="re-asks after an unusable proposal")
    sampler: Any = Field(
        "tpe", description="the search's Optuna sampler: tpe, random, a sampler or a factory"
    )
    instruction_proposer: Any = Field(
        "grounded",
        description="who proposes instructions: grounded (the LM), advice (the LM restates "
        "the metric's feedback on bootstrap runs: for tiny models; needs feedback in the scores), "
        "or your own",
    )
    demo_bootstrapper: Any = Field(
        "bootstrap", description="how demo sets are built: bootstrap, none, or your own"
    )
    final_choice: FinalChoice = final_choice_field()
    final_z: float = final_z_field()
    demo_placement: Literal["turns", "inline"] | None = Field(
        None,
        description="demos as earlier user/assistant chat turns, or inline in the instruction "
        "(None: turns for a chat-message prompt, else inline)",
    )
    perfect_score: float | None = perfect_score_field()
    stop_at_perfect: bool = stop_at_perfect_field()

    @field_validator(*strategies.NAMES)
    @classmethod
    def _strategy(cls, value: Any, info: ValidationInfo) -> Any:
        return strategies.check(info.field_name or "", value)

    @field_serializer(*strategies.NAMES)
    def _dump_strategy(self, value: Any) -> Any:
        return strategies.describe_strategy(value)

    @model_validator(mode="after")
    def _budget_shape(self) -> MIPROSettings:
        if self.auto is not None and (self.num_candidates or self.num_trials):
            raise ValueError(
                "give either auto='light'|'medium'|'heavy' or num_candidates and num_trials, "
                "not both (or neither: the plan then comes from max_rollouts)"
            )
        return self

    def demo_threshold(self) -> float:
        """The score a bootstrap run needs to become a demo (``metric_threshold``, default 1.0);
        below it, the run counts as a failure whose feedback the advice proposer reads."""
        return 1.0 if self.metric_threshold is None else self.metric_threshold

    @property
    def zero_shot(self) -> bool:
        """No demos at all: the search is over instructions only."""
        if self.demo_bootstrapper == "none":
            return True
        return self.max_bootstrapped_demos == 0 and self.max_labeled_demos == 0

    def plan(self, n_train: int, n_val: int, n_components: int = 1) -> Any:
        """The run's :class:`~policyopt.mipro.budget.MIPROPlan` for these data sizes (a budget
        alone, ``auto`` or explicit counts, fitted to or checked against ``max_rollouts``)."""
        return plan_for_budget(
            dict(self),
            budget=self.max_rollouts,
            n_train=n_train,
            n_val=n_val,
            n_components=n_components,
        )

    def sizes(self, n_components: int, n_train: int = 0, n_val: int = 0) -> tuple[int, int]:
        """``(num_candidates, num_trials)`` after presets (and the budget fit, given sizes)."""
        if self.auto is not None and not n_val:
            return preset(self.auto, n_components, self.zero_shot)
        if self.num_candidates is not None and self.num_trials is not None:
            return self.num_candidates, self.num_trials
        plan = self.plan(n_train, n_val, n_components)
        return plan.num_candidates, plan.num_trials
