"""Scripted LMs and evaluates for the keyword task that the run-kit tests, the golden journals
and ``benchmarks/lm_bill.py`` share (one copy, so they exercise the same runs)."""

from __future__ import annotations

import re
from typing import Any

from policyopt.testing.conformance import CountingEvaluate, keyword_reflection_lm, keyword_task
from policyopt.testing.fake_lm import ScriptedLM
from policyopt.types import OptimizationResult, Score

__all__ = [
    "FailsOnSomeExamples",
    "flaky_lm",
    "keyword_meta_lm",
    "keyword_proposer_lm",
    "lenient_gepa_run",
]

#: the instruction :func:`keyword_proposer_lm` proposes third: every keyword, so val 1.0
BEST = "Solve the task with alpha beta gamma delta epsilon zeta."


def keyword_proposer_lm(best_at: int | None = 3) -> ScriptedLM:
    """A MIPRO proposer LM: weak instructions, and :data:`BEST` as its ``best_at``-th proposal
    (never when None)."""
    count = {"n": 0}

    def answer(text: str) -> str:
        if "describe what this dataset" in text:
            return "Each example needs a keyword in the instruction."
        count["n"] += 1
        if count["n"] == best_at:
            return f"Here:\n```\n{BEST}\n```"
        return f"```\nSolve the task, version {count['n']}, alpha.\n```"

    return ScriptedLM(answer)


def keyword_meta_lm() -> ScriptedLM:
    """An OPRO meta LM: the best instruction shown plus one keyword its feedback says it lacks."""

    def answer(text: str) -> str:
        entries = re.findall(r"text: (.*)\nscore: (\d+)", text)
        best = entries[-1][0] if entries else ""
        named = re.findall(r"lacks the word (\w+)", text)
        missing = [w for w in dict.fromkeys(named) if w not in best.split()]
        return f"```\n{best} {' '.join(missing[:1]) or 'carefully'}\n```"

    return ScriptedLM(answer)


def flaky_lm() -> ScriptedLM:
    """Every other answer is empty (unusable); the others are new instructions."""
    count = {"n": 0}

    def answer(text: str) -> str:
        count["n"] += 1
        return "" if count["n"] % 2 else f"```\nInstruction number {count['n']}.\n```"

    return ScriptedLM(answer)


class FailsOnSomeExamples(CountingEvaluate):
    """The keyword task's evaluate, failing on two thirds of the training examples while
    ``broken``."""

    def __init__(self, broken: bool) -> None:
        super().__init__()
        self.broken = broken

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        if self.broken and example["id"].startswith("t") and int(example["id"][1:]) % 3:
            raise RuntimeError("backend down")
        return super().__call__(prompt, example)


def lenient_gepa_run(
    run_dir: str, evaluate: CountingEvaluate, budget: int, *, retry_failures: bool = False
) -> OptimizationResult:
    """GEPA on the keyword task in ``run_dir``, one rollout at a time, never stopping for
    failed rollouts: the resumed-bill scenario of the run-kit tests and ``lm_bill.py``."""
    from policyopt.gepa import GEPA

    program, train, val = keyword_task(evaluate=evaluate)
    return GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=budget,
        n_jobs=1,
        progress=False,
        run_dir=run_dir,
        max_error_rate=None,
        quarantine_after=None,
        retry_failures=retry_failures,
    ).optimize(program, train, val)
