"""HillClimb: a fourth optimizer, written on policyopt's public run kit as a user would write one.

Each step runs the best prompt so far on a few training examples, shows the LM those it failed
with the evaluator's feedback, asks for one rewrite, scores it on the whole valset and keeps the
best (feedback from the trainset, selection on the valset). What to try next is all this file
decides; the budget, stop rules, snapshots, resume, events, the LM's journal and bill, and the
result come from the kit (``policyopt.runtime``, ``book``, ``proposals``, ``steps``).
Importing it registers ``"hill-climb"``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from policyopt.errors import ConfigError
from policyopt.events import Listener
from policyopt.feedback import make_records, retry_note
from policyopt.lm import resolve_lm
from policyopt.prompts import PromptShape
from policyopt.proposals import (
    ProposalLoop,
    copy_guard,
    echo_guard,
    parse_complete,
    repeat_guard,
)
from policyopt.registry import OptimizerSpec, register_optimizer, with_settings_args
from policyopt.runtime import RESUMABLE, RunContext, RunSettings, settings_or_error
from policyopt.steps import StepLoop, perfect_score_field, stop_at_perfect_field
from policyopt.templates import render_template
from policyopt.types import OptimizationResult, Program, PromptValue

__all__ = ["SPEC", "TEMPLATE", "HillClimb", "HillClimbSettings", "estimate"]

#: the rewrite prompt: the best instruction (the first fenced block), its failures, a retry note
TEMPLATE = """\
An AI assistant follows this instruction (mean score {score} on held-out examples):
```
{prompt}
```

Examples it failed, with the evaluator's feedback:

{failures}

Write one improved instruction that fixes these failures and keeps what already works. State
the general rule; quote no example. Reply with the new instruction in a fenced block (```).\
{retry}"""


class HillClimbSettings(RunSettings):
    """HillClimb's own settings; the budget, limits, error policy and run dir are the kit's."""

    max_steps: int | None = Field(None, ge=1, description="cap on steps (one rewrite each)")
    patience: int | None = Field(None, ge=1, description="steps without a new best")
    perfect_score: float | None = perfect_score_field()
    stop_at_perfect: bool = stop_at_perfect_field()
    minibatch_size: int = Field(
        3, ge=1, description="training examples the best prompt runs on a step (failures shown)"
    )
    max_proposal_retries: int = Field(2, ge=0, description="re-asks after an unusable rewrite")
    max_prompt_chars: int = Field(4000, ge=1, description="longest instruction accepted")
    max_example_chars: int = Field(300, ge=20, description="characters per example field shown")


def estimate(settings: Mapping[str, Any], budget: int, n_train: int, n_val: int) -> dict[str, Any]:
    """The up-front forecast: the seed on the valset, then a step pays a training minibatch and
    one rewrite's valset score, for one LM call; a rejected rewrite is asked again."""
    s = HillClimbSettings(**{**settings, "max_rollouts": budget})
    left, batch = max(0, budget - n_val), min(s.minibatch_size, n_train)
    per = batch + n_val  # the most a step pays
    steps = left // per
    rewrites = left // max(1, n_val)  # scored rewrites, were every minibatch cached
    if s.max_steps is not None:
        steps, rewrites = min(steps, s.max_steps), min(rewrites, s.max_steps)
    return {
        "seed_evaluation": n_val,
        "rollouts_per_step_max": per,
        "steps": steps,
        "rollouts": budget if s.max_steps is None else min(budget, n_val + s.max_steps * per),
        "lm_calls": steps,
        "lm_calls_min": min(1, steps),
        "lm_calls_max": rewrites * (s.max_proposal_retries + 1),
        "why_a_range": "a perfect score ends the run early; a minibatch the best prompt passes "
        "costs no call, a cached one no rollout; an unusable rewrite is asked again",
    }


@with_settings_args(HillClimbSettings)
class HillClimb:
    """``HillClimb(lm=..., max_rollouts=...).optimize(program, trainset, valset)``.

    ``lm`` is a litellm model string, a :class:`policyopt.LM` or a callable ``str -> str``: the
    LM that rewrites the prompt. The prompt must be a ``str`` or chat messages (the system
    message is rewritten). ``listeners`` receive every event of the run.
    """

    name = "hill-climb"

    def __init__(self, *, lm: Any, listeners: Sequence[Listener] = (), **settings: Any) -> None:
        self.lm = resolve_lm(lm, name="lm")
        self.listeners = list(listeners)
        self.settings = settings_or_error(HillClimbSettings, settings, "HillClimb")

    def optimize(
        self, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None = None
    ) -> OptimizationResult:
        """Climb from the seed prompt; the best prompt found on the full valset."""
        if not isinstance(program, Program) or isinstance(program.prompt, dict):
            raise ConfigError(
                "HillClimb optimizes a Program whose prompt is a str or chat messages."
            )
        return _Run(self, program, trainset, valset).run()


class _Run:
    """One optimize() call: the kit's context, the LM's proposal loop and the step loop."""

    def __init__(
        self, hc: HillClimb, program: Program, trainset: Sequence[Any], valset: Sequence[Any] | None
    ) -> None:
        self.s = s = hc.settings
        self.shape = PromptShape.of(program.prompt)  # a chat prompt: its system message changes
        self.fixed = self.shape.components(program.prompt)
        self.ctx = RunContext(
            optimizer="hill-climb",
            settings=s,
            resumable=RESUMABLE | {"max_steps", "patience"},
            identity={"seed_prompt": program.prompt},
            program=program,
            trainset=trainset,
            valset=valset,
            listeners=hc.listeners,
        )
        self.rng = random.Random(s.seed)  # the minibatches
        n_val = len(self.ctx.val_ids)
        self.lm = self.ctx.journaled_lm(hc.lm, kind="rewrite", rollouts_per_call=n_val)
        self.proposals = ProposalLoop(
            self.lm, max_retries=s.max_proposal_retries, max_chars=s.max_prompt_chars
        )
        self.tried = [self.fixed[self.shape.instruction]]  # every instruction scored
        self.loop = StepLoop(
            self.ctx,
            usage=lambda: self.lm.usage,
            state=lambda: {"tried": self.tried},
            end=lambda: "max_steps" if s.max_steps and self.loop.steps >= s.max_steps else None,
        )

    def wrap(self, text: str) -> PromptValue:
        """The prompt ``evaluate`` receives for an instruction, in the seed's shape."""
        return self.shape.shaped({**self.fixed, self.shape.instruction: text})

    def run(self) -> OptimizationResult:
        ctx, s = self.ctx, self.s
        return ctx.execute(
            seed_prompt=self.wrap(self.tried[0]),
            estimate=estimate(s.model_dump(), s.max_rollouts, len(ctx.train_ids), len(ctx.val_ids)),
            body=self.body,
            finish=self.finish,
        )

    def body(self) -> str:
        if self.ctx.book.add(self.wrap(self.tried[0]), parents=[], origin="seed") is None:
            raise ConfigError("the budget ran out while scoring the seed prompt")
        return self.loop.run(self.step, made=lambda: len(self.tried))

    def step(self) -> str | None:
        """The best prompt on a minibatch; one rewrite from its failures, scored on the valset."""
        ctx, s, best = self.ctx, self.s, self.ctx.book.best
        ids = sorted(
            self.rng.sample(list(ctx.train_ids), min(s.minibatch_size, len(ctx.train_ids)))
        )
        batch = [(best.prompt, i) for i in ids]
        if not ctx.affordable(batch, ctx.train_split, extra=len(ctx.val_ids)):
            return "budget"  # never start a step the budget cannot finish
        runs = ctx.engine.run(batch, split=ctx.train_split, label="minibatch")
        if not runs.complete:
            return "budget"
        failed = [r for r in runs.done() if r.value < s.perfect()]
        if not failed:
            return None  # nothing to fix here: the next step draws another minibatch
        rows = []
        for r in failed:  # a failed rollout's error is its feedback
            example = ctx.engine.example(ctx.train_split, r.example_id)
            rows.append((example, r.score.output, r.value, r.error or r.score.feedback))
        records = make_records(rows, max_chars=s.max_example_chars)
        current = self.shape.components(best.prompt)[self.shape.instruction]
        failures = "\n\n".join("\n".join(f"{k}: {v}" for k, v in rec.items()) for rec in records)
        values = {"prompt": current, "score": f"{best.val_score:.2f}", "failures": failures}
        text = self.proposals.propose(
            str(self.loop.steps),
            lambda _, why: render_template(TEMPLATE, {**values, "retry": retry_note(why)}),
            current=current,
            parse=parse_complete,  # the last whole fenced block, whatever the LM wrote after it
            guards=[
                repeat_guard(self.tried),
                copy_guard(current, records),
                echo_guard(TEMPLATE, current),
            ],
        )
        if not isinstance(text, str):  # rejected every time, or the LM failed: try again
            return None
        self.tried.append(text)
        candidate = ctx.book.add(self.wrap(text), parents=[best.index], origin="hill-climb")
        return None if candidate is not None else "budget"

    def finish(self, reason: str) -> OptimizationResult:
        return self.loop.finish(
            reason,
            best=self.ctx.book.best,
            role="rewrite",
            details={
                "steps": self.loop.steps,
                "rewrites_scored": len(self.tried) - 1,
                "rejections": dict(self.proposals.rejections),
            },
        )


SPEC = register_optimizer(
    OptimizerSpec(
        name="hill-climb",
        cls=HillClimb,
        settings=HillClimbSettings,
        lm_param="lm",
        lm_role="rewrite",
        description="one LM rewrite of the best prompt a step, kept when it scores higher",
        estimator=estimate,
        small_model_lm={"stop": None, "max_tokens": 96},  # room for a fenced block
    ),
    replace=True,  # importing the file again (a notebook's reload) registers it again
)
