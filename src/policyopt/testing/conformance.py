"""The conformance suite every optimizer passes: budget, determinism, JSON, errors, resume.

Give it a factory that builds your optimizer from a few standard settings::

    def factory(*, max_rollouts, seed, run_dir, max_errors, n_jobs):
        return GEPA(reflection_lm=keyword_reflection_lm(), max_rollouts=max_rollouts, seed=seed,
                    run_dir=run_dir, max_errors=max_errors, n_jobs=n_jobs, progress=False)

    suite = Conformance(factory)
    suite.check_all(tmp_path)        # or call the check_* methods one by one

The task is synthetic: each example needs a keyword in the prompt, and the feedback names it.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policyopt.errors import EvaluationError
from policyopt.protocol import Optimizer
from policyopt.testing.fake_lm import ScriptedLM
from policyopt.types import OptimizationResult, Program, Score

__all__ = [
    "KEYWORDS",
    "Conformance",
    "CountingEvaluate",
    "comparable",
    "keyword_reflection_lm",
    "keyword_task",
]

KEYWORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")

Factory = Callable[..., Optimizer]


class _Crash(BaseException):
    """Stands in for a process dying mid-run (not an Exception: no error policy catches it)."""


class CountingEvaluate:
    """The keyword task's evaluate: counts finished calls, can fail or crash on cue."""

    def __init__(
        self,
        fail_on: frozenset[str] | set[str] = frozenset(),
        crash_after: int | None = None,
    ) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.fail_on = set(fail_on)
        self.crash_after = crash_after
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        """Finished calls (the money spent)."""
        return sum(self.calls.values())

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        text = prompt if isinstance(prompt, str) else " ".join(prompt.values())
        with self._lock:
            if self.crash_after is not None and self.total >= self.crash_after:
                raise _Crash("simulated crash")
        if example["need"] in self.fail_on:
            raise RuntimeError(f"evaluate failed on {example['need']}")
        ok = example["need"] in text
        with self._lock:
            self.calls[(text, example["id"])] += 1
        return Score(
            float(ok),
            feedback=None if ok else f"The prompt lacks the word {example['need']}.",
            output="done" if ok else "unsure",
        )


def keyword_task(
    n_train: int = 12, n_val: int = 12, evaluate: CountingEvaluate | None = None
) -> tuple[Program, list[dict[str, str]], list[dict[str, str]]]:
    """``(program, trainset, valset)`` of the synthetic keyword task."""
    train = [{"id": f"t{i}", "need": KEYWORDS[i % len(KEYWORDS)]} for i in range(n_train)]
    val = [{"id": f"v{i}", "need": KEYWORDS[(i + 1) % len(KEYWORDS)]} for i in range(n_val)]
    return Program("Solve the task.", evaluate or CountingEvaluate()), train, val


def keyword_reflection_lm(words_per_fix: int = 1) -> ScriptedLM:
    """A reflection LM that adds ``words_per_fix`` missing keywords its feedback names."""

    def reflect(text: str) -> str:
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        base = current.group(1) if current else ""
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text)))[:words_per_fix]
        extra = " ".join(missing) or "carefully"
        return f"Here is a better one.\n```\n{base} {extra}\n```"

    return ScriptedLM(reflect)


def comparable(result: OptimizationResult) -> dict[str, Any]:
    """A result without what legitimately differs between equal runs (time, paths, resume).

    Rollouts a killed process started but never recorded are paid (they count in
    ``n_rollouts``) and not part of the trajectory: they are taken out.
    """
    data = result.model_dump(exclude={"wall_time_s"})
    data["settings"] = {k: v for k, v in data["settings"].items() if k != "run_dir"}
    data["n_rollouts"] -= int(data["details"].get("lost_rollouts") or 0)
    data["details"] = {
        k: v for k, v in data["details"].items() if k not in {"resumed_rollouts", "lost_rollouts"}
    }
    return data


class Conformance:
    """Checks an optimizer factory against the contract every policyopt optimizer keeps."""

    def __init__(self, factory: Factory, *, budget: int = 120) -> None:
        self.factory = factory
        self.budget = budget

    def _run(
        self,
        *,
        max_rollouts: int | None = None,
        seed: int = 0,
        run_dir: Path | None = None,
        max_errors: int | None = 10,
        n_jobs: int = 2,
        evaluate: CountingEvaluate | None = None,
    ) -> tuple[OptimizationResult, CountingEvaluate]:
        evaluate = evaluate or CountingEvaluate()
        program, train, val = keyword_task(evaluate=evaluate)
        optimizer = self.factory(
            max_rollouts=max_rollouts or self.budget,
            seed=seed,
            run_dir=None if run_dir is None else str(run_dir),
            max_errors=max_errors,
            n_jobs=n_jobs,
        )
        return optimizer.optimize(program, train, val), evaluate

    def check_budget_never_exceeded(self) -> None:
        """For several budgets: finished evaluate calls <= budget == or > reported rollouts."""
        for budget in (12, 13, 17, 30, self.budget):
            result, evaluate = self._run(max_rollouts=budget)
            assert evaluate.total <= budget, (budget, evaluate.total)
            assert result.n_rollouts == evaluate.total, (result.n_rollouts, evaluate.total)
            assert max(evaluate.calls.values()) == 1, "a rollout was paid twice"

    def check_determinism(self) -> None:
        """Same seed, same (scripted) LM: the same result, whatever order threads finish in."""
        first, _ = self._run(seed=3, n_jobs=4)
        second, _ = self._run(seed=3, n_jobs=4)
        assert comparable(first) == comparable(second)

    def check_json_round_trip(self) -> None:
        """``from_json(to_json())`` gives back an equal result."""
        result, _ = self._run()
        assert OptimizationResult.from_json(result.to_json()) == result

    def check_error_policy(self) -> None:
        """Failures are recorded and counted; past ``max_errors`` the run stops with an error."""
        result, evaluate = self._run(evaluate=CountingEvaluate(fail_on={"beta"}), max_errors=None)
        assert result.n_rollouts >= evaluate.total  # failed calls are paid too
        assert result.candidates, "a run with some failing examples still returns candidates"
        try:
            self._run(evaluate=CountingEvaluate(fail_on={"beta"}), max_errors=0)
        except EvaluationError as exc:
            assert "beta" in str(exc)
        else:
            raise AssertionError("max_errors=0 did not stop a run whose evaluate fails")

    def check_resume_spends_nothing(self, tmp_path: Path) -> None:
        """A crashed run, resumed, pays no finished rollout twice and ends like an unbroken one."""
        reference, whole = self._run(run_dir=tmp_path / "whole", n_jobs=1)
        # re-running a finished run_dir replays it: nothing paid, same result
        again, idle = self._run(run_dir=tmp_path / "whole", n_jobs=1)
        assert idle.total == 0, f"resuming a finished run paid {idle.total} rollouts"
        assert comparable(again) == comparable(reference)
        # crash part-way, then resume
        crash_at = max(1, whole.total // 2)
        broken = CountingEvaluate(crash_after=crash_at)
        try:
            self._run(run_dir=tmp_path / "broken", n_jobs=1, evaluate=broken)
        except _Crash:
            pass
        else:
            raise AssertionError("the simulated crash did not happen")
        resumed, rest = self._run(run_dir=tmp_path / "broken", n_jobs=1)
        assert broken.total + rest.total == whole.total, (broken.total, rest.total, whole.total)
        assert not set(broken.calls) & set(rest.calls), "a finished rollout was paid again"
        assert comparable(resumed) == comparable(reference)

    def check_all(self, tmp_path: Path) -> None:
        """Every check above."""
        self.check_budget_never_exceeded()
        self.check_determinism()
        self.check_json_round_trip()
        self.check_error_policy()
        self.check_resume_spends_nothing(tmp_path)
