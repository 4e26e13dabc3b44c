"""The conformance suite every optimizer passes: budget, determinism, JSON, errors, resume.

Give it a factory that builds your optimizer from a few standard settings::

    def factory(*, max_rollouts, seed, run_dir, max_errors, n_jobs):
        return GEPA(reflection_lm=keyword_reflection_lm(), max_rollouts=max_rollouts, seed=seed,
                    run_dir=run_dir, max_errors=max_errors, n_jobs=n_jobs, progress=False)

    suite = Conformance(factory)
    suite.check_all(tmp_path)        # or call the check_* methods one by one

The task is synthetic: each example needs a keyword in the prompt, and the feedback names it.
:meth:`Conformance.check_chat_prompts` runs it with a chat-message seed prompt.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError, EvaluationError
from policyopt.protocol import Optimizer
from policyopt.testing import faults
from policyopt.testing.fake_lm import ScriptedLM
from policyopt.types import OptimizationResult, Program, Score

__all__ = [
    "CHAT_SEED",
    "CHECKS",
    "KEYWORDS",
    "ChatEvaluate",
    "Conformance",
    "CountingEvaluate",
    "chat_problem",
    "comparable",
    "keyword_reflection_lm",
    "keyword_task",
]

KEYWORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")

#: the contract's checks by name: ``Conformance.run(name, tmp_path)`` runs ``check_<name>``, so
#: an optimizer's tests are one test parametrized over these
CHECKS = (
    "budget_never_exceeded",
    "determinism",
    "json_round_trip",
    "error_policy",
    "resume_spends_nothing",
    "chat_prompts",
    "faults",
    "stops_while_a_rollout_hangs",
)

#: The keyword task's seed as chat messages (both contents are optimizable components).
CHAT_SEED = [
    {"role": "system", "content": "Solve the task."},
    {"role": "user", "content": "Here is the input."},
]


def _text(prompt: Any) -> str:
    """Every text of a prompt, joined: a str, a dict's values or chat messages' contents."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Mapping):
        return " ".join(prompt.values())
    return " ".join(m["content"] for m in prompt)


def chat_problem(prompt: Any) -> str | None:
    """What is wrong with a prompt built from :data:`CHAT_SEED` (None: nothing).

    It must be a list of message dicts: the system message, optional user/assistant
    demonstration pairs, then the user message, every content a str.
    """
    if not isinstance(prompt, list) or not all(isinstance(m, dict) for m in prompt):
        return f"not a list of message dicts: {type(prompt).__name__}"
    if not all(isinstance(m.get("content"), str) for m in prompt):
        return "a message content is not a str"
    roles = [m.get("role") for m in prompt]
    pairs = (len(roles) - 2) // 2
    if len(roles) < 2 or roles != ["system", *(["user", "assistant"] * pairs), "user"]:
        return f"unexpected roles {roles}"
    return None


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
        text = _text(prompt)
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
    n_train: int = 12,
    n_val: int = 12,
    evaluate: CountingEvaluate | None = None,
    prompt: Any = "Solve the task.",
) -> tuple[Program, list[dict[str, str]], list[dict[str, str]]]:
    """``(program, trainset, valset)`` of the synthetic keyword task (``prompt``: its seed)."""
    train = [{"id": f"t{i}", "need": KEYWORDS[i % len(KEYWORDS)]} for i in range(n_train)]
    val = [{"id": f"v{i}", "need": KEYWORDS[(i + 1) % len(KEYWORDS)]} for i in range(n_val)]
    return Program(prompt, evaluate or CountingEvaluate()), train, val


class ChatEvaluate(CountingEvaluate):
    """The keyword task's evaluate for :data:`CHAT_SEED`: also records every prompt it got
    that is not chat messages of the seed's shape (see :func:`chat_problem`)."""

    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__(crash_after=crash_after)
        self.problems: list[str] = []

    def __call__(self, prompt: Any, example: dict[str, str]) -> Score:
        problem = chat_problem(prompt)
        if problem is not None:
            with self._lock:
                self.problems.append(problem)
        return super().__call__(prompt, example)


def keyword_reflection_lm(words_per_fix: int = 1) -> ScriptedLM:
    """A reflection LM that adds ``words_per_fix`` missing keywords its feedback names."""

    def reflect(text: str) -> str:
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        base = current.group(1) if current else ""
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text)))[:words_per_fix]
        extra = " ".join(missing) or "carefully"
        return f"Here is a better one.\n```\n{base} {extra}\n```"

    return ScriptedLM(reflect)


#: details that say how a run was resumed, not what it found
_RESUME_DETAILS = frozenset(
    {"resumed_rollouts", "lost_rollouts", "resume_exact", "replayed_failures", "retried_failures"}
)


def comparable(result: OptimizationResult) -> dict[str, Any]:
    """A result without what legitimately differs between equal runs (time, paths, resume).

    Rollouts a killed process started but never recorded are paid (they count in
    ``n_rollouts``) and not part of the trajectory: they are taken out.
    """
    data = result.model_dump(exclude={"wall_time_s"})
    data["settings"] = {k: v for k, v in data["settings"].items() if k != "run_dir"}
    data["n_rollouts"] -= int(data["details"].get("lost_rollouts") or 0)
    data["details"] = {k: v for k, v in data["details"].items() if k not in _RESUME_DETAILS}
    return data


class Conformance:
    """Checks an optimizer factory against the contract every policyopt optimizer keeps."""

    def __init__(
        self, factory: Factory, *, budget: int = 120, lm_name: str = "reflection_lm"
    ) -> None:
        self.factory = factory
        self.budget = budget
        self.lm_name = lm_name  # the factory keyword that takes the optimizer's LM

    def _run(
        self,
        *,
        max_rollouts: int | None = None,
        seed: int = 0,
        run_dir: Path | None = None,
        max_errors: int | None = 10,
        n_jobs: int = 2,
        evaluate: CountingEvaluate | None = None,
        **extra: Any,
    ) -> tuple[OptimizationResult, CountingEvaluate]:
        evaluate = evaluate or CountingEvaluate()
        program, train, val = keyword_task(evaluate=evaluate)
        optimizer = self.factory(
            max_rollouts=max_rollouts or self.budget,
            seed=seed,
            run_dir=None if run_dir is None else str(run_dir),
            max_errors=max_errors,
            n_jobs=n_jobs,
            **extra,
        )
        return optimizer.optimize(program, train, val), evaluate

    def check_budget_never_exceeded(self) -> None:
        """For several budgets: finished evaluate calls <= budget == or > reported rollouts."""
        for budget in (12, 13, 17, 30, 50, self.budget):
            evaluate = CountingEvaluate()
            try:
                result, evaluate = self._run(max_rollouts=budget, evaluate=evaluate)
            except ConfigError as exc:  # a budget too small for one step may be refused ...
                assert evaluate.total == 0, "a refused budget spent rollouts"  # ... up front
                assert "max_rollouts" in str(exc), str(exc)
                continue
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
        """Examples that keep failing are quarantined, not fatal; strict mode raises."""
        result, evaluate = self._run(evaluate=CountingEvaluate(fail_on={"beta"}), max_errors=None)
        assert result.n_rollouts >= evaluate.total  # failed calls are paid too
        assert result.candidates, "a run with some failing examples still returns candidates"
        assert result.stop_reason != "evaluate_errors", result.details.get("stop_detail")
        quarantined = result.details["quarantined_examples"]
        assert isinstance(quarantined, dict) and quarantined, "failing examples not quarantined"
        assert all("beta" in str(message) for message in quarantined.values())
        try:
            self._run(evaluate=CountingEvaluate(fail_on={"beta"}), max_errors=0, strict=True)
        except EvaluationError as exc:
            assert "beta" in str(exc)
        else:
            raise AssertionError("strict max_errors=0 did not stop a run whose evaluate fails")

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

    def check_chat_prompts(self, tmp_path: Path) -> None:
        """A chat-message seed: ``evaluate`` always gets chat messages of the seed's shape
        (never a flattened string), the contents improve, every candidate keeps the shape, the
        result round-trips through JSON and a finished run_dir replays at no cost."""

        def run(evaluate: ChatEvaluate) -> OptimizationResult:
            program, train, val = keyword_task(evaluate=evaluate, prompt=CHAT_SEED)
            optimizer = self.factory(
                max_rollouts=self.budget,
                seed=0,
                run_dir=str(tmp_path / "chat"),
                max_errors=10,
                n_jobs=2,
            )
            return optimizer.optimize(program, train, val)

        evaluate = ChatEvaluate()
        result = run(evaluate)
        assert evaluate.total > 0 and not evaluate.problems, evaluate.problems[:3]
        assert result.n_rollouts == evaluate.total <= self.budget
        for candidate in result.candidates:
            assert chat_problem(candidate.prompt) is None, candidate.prompt
        assert chat_problem(result.best_prompt) is None, result.best_prompt
        assert result.best_score > result.candidates[0].val_score, "chat contents never improved"
        assert OptimizationResult.from_json(result.to_json()) == result
        replay = ChatEvaluate()
        again = run(replay)
        assert replay.total == 0, f"replaying a finished chat run paid {replay.total} rollouts"
        assert comparable(again) == comparable(result)

    def run(self, check: str, tmp_path: Path) -> None:
        """One check of :data:`CHECKS` by name (those that write files get ``tmp_path``)."""
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; the checks: {', '.join(CHECKS)}")
        method = getattr(self, f"check_{check}")
        if inspect.signature(method).parameters:
            method(tmp_path)
        else:
            method()

    def check_all(self, tmp_path: Path) -> None:
        """Every check above."""
        for check in CHECKS:
            self.run(check, tmp_path)

    # ------------------------------------------------------------------ faults
    def _guarded(self, limit_s: float, **kwargs: Any) -> tuple[Any, CountingEvaluate | None]:
        """Run in a watchdog thread: ``(result or raised exception, evaluate)``; a hang fails."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"], box["evaluate"] = self._run(**kwargs)
            except Exception as exc:
                box["result"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(limit_s)
        assert not thread.is_alive(), f"the run hung (> {limit_s:g} s) under {kwargs}"
        return box.get("result"), box.get("evaluate")

    def fault_table(self, tmp_path: Path) -> list[dict[str, Any]]:
        """Run every fault of :mod:`policyopt.testing.faults`; one row per fault (what happened).

        Rows: ``fault``, ``outcome`` (``result`` or the exception type), ``stop_reason``,
        ``calls`` (real evaluate calls), ``budget``, ``detail``.
        """
        rows = []
        cases = self._fault_cases(tmp_path)
        for name, kwargs in cases:
            started = time.monotonic()
            outcome, evaluate = self._guarded(60.0, max_errors=None, **kwargs)
            calls = getattr(evaluate, "total", None)
            row: dict[str, Any] = {
                "fault": name,
                "budget": self.budget,
                "calls": calls,
                "seconds": round(time.monotonic() - started, 2),
            }
            if isinstance(outcome, OptimizationResult):
                row.update(
                    outcome="result",
                    stop_reason=outcome.stop_reason,
                    n_rollouts=outcome.n_rollouts,
                    quarantined=len(dict(outcome.details.get("quarantined_examples") or {})),  # type: ignore[arg-type]
                    detail=str(outcome.details.get("stop_detail") or "")[:120],
                )
            else:
                row.update(outcome=type(outcome).__name__, detail=str(outcome)[:160])
            rows.append(row)
        for _, kwargs in cases:  # let hung calls go
            if isinstance(kwargs.get("evaluate"), faults.Hanging):
                kwargs["evaluate"].release()
        return rows

    def _fault_cases(self, tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
        base = keyword_reflection_lm()
        flaky = faults.Flaky(CountingEvaluate(), rate=0.1)
        broken = faults.BreaksAfter(CountingEvaluate(), 30)
        lm = self.lm_name
        return [
            ("evaluate: 10% flaky", {"evaluate": flaky}),
            (
                "evaluate: one example always raises",
                {"evaluate": faults.AlwaysFails(CountingEvaluate(), {"v1", "t1"})},
            ),
            (
                "evaluate: NaN on one example",
                {"evaluate": faults.NaNScores(CountingEvaluate(), {"v2"})},
            ),
            ("evaluate: NaN everywhere", {"evaluate": faults.NaNScores(CountingEvaluate())}),
            ("evaluate: backend dies after 30 calls", {"evaluate": broken}),
            ("evaluate: score 1.7", {"evaluate": faults.OutOfRange(CountingEvaluate())}),
            (
                "evaluate: hangs on one example (timeout 0.5 s)",
                {"evaluate": faults.Hanging(CountingEvaluate(), {"v3"}), "timeout": 0.5},
            ),
            ("LM: empty answers", {lm: faults.empty_lm()}),
            ("LM: no fenced block", {lm: faults.unfenced_lm()}),
            ("LM: 1 MB answers", {lm: faults.huge_lm(base), "run_dir": str(tmp_path / "huge")}),
            ("LM: lone surrogates", {lm: faults.surrogate_lm(base)}),
            ("LM: answers a number", {lm: faults.non_str_lm()}),
            ("LM: raises RuntimeError", {lm: faults.raising_lm()}),
            ("LM: 429 from a plain callable", {lm: faults.rate_limited_lm()}),
            ("LM: slow (0.05 s per call)", {lm: faults.slow_lm(base, 0.05)}),
        ]

    def check_faults(self, tmp_path: Path) -> None:
        """Each fault ends in a valid result with a clear stop reason, or a clear error."""
        rows = {row["fault"]: row for row in self.fault_table(tmp_path)}
        for name, row in rows.items():
            if row["calls"] is not None:
                assert row["calls"] <= self.budget, (name, row)
        # evaluate faults that a run survives, with its best result so far
        for name in (
            "evaluate: 10% flaky",
            "evaluate: one example always raises",
            "evaluate: NaN on one example",
        ):
            assert rows[name]["outcome"] == "result", rows[name]
            assert rows[name]["stop_reason"] != "evaluate_errors", rows[name]
        assert rows["evaluate: one example always raises"]["quarantined"] >= 1
        assert rows["evaluate: NaN on one example"]["quarantined"] >= 1
        died = rows["evaluate: backend dies after 30 calls"]
        assert died["outcome"] == "result" and died["stop_reason"] == "evaluate_errors", died
        assert "connection refused" in died["detail"] or "backend" in died["detail"], died
        assert rows["evaluate: NaN everywhere"]["outcome"] == "EvaluationError"
        out_of_range = rows["evaluate: score 1.7"]
        assert out_of_range["outcome"] == "ScoreTypeError", out_of_range
        assert "score_range" in out_of_range["detail"], out_of_range
        hung = rows["evaluate: hangs on one example (timeout 0.5 s)"]
        assert hung["outcome"] in {"result", "EvaluationError"}, hung
        # LM faults: the proposal is skipped; a dead LM stops the run with lm_errors
        for name in (
            "LM: answers a number",
            "LM: raises RuntimeError",
            "LM: 429 from a plain callable",
        ):
            assert rows[name]["outcome"] == "result", rows[name]
            assert rows[name]["stop_reason"] == "lm_errors", rows[name]
        for name in (
            "LM: empty answers",
            "LM: no fenced block",
            "LM: 1 MB answers",
            "LM: lone surrogates",
            "LM: slow (0.05 s per call)",
        ):
            assert rows[name]["outcome"] == "result", rows[name]
            assert rows[name]["stop_reason"] != "lm_errors", rows[name]
        journal = tmp_path / "huge" / "journal.jsonl"
        assert journal.stat().st_size < 64 * 1024 * 1024, "1 MB LM answers were journaled whole"

    def check_stops_while_a_rollout_hangs(self, tmp_path: Path) -> None:
        """The STOP file ends a run within seconds while a rollout hangs, with its result."""
        hanging = faults.Hanging(CountingEvaluate(), {f"t{i}" for i in range(12)})
        run_dir = tmp_path / "stop"

        def stop_soon() -> None:
            time.sleep(1.0)
            (run_dir / "STOP").touch()

        threading.Thread(target=stop_soon, daemon=True).start()
        started = time.monotonic()
        try:
            result, _ = self._guarded(
                30.0, evaluate=hanging, run_dir=run_dir, n_jobs=2, timeout=None, max_errors=None
            )
            assert isinstance(result, OptimizationResult), result
            assert result.stop_reason == "stop_file", result.stop_reason
            assert time.monotonic() - started < 15.0
            assert hanging.live <= 2, f"{hanging.live} hung evaluate calls for n_jobs=2"
        finally:
            hanging.release()
