"""Code as the artifact (issue 25): the sandboxed test runner, the code task and the harness."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest

import policyopt
from policyopt.bench import (
    BenchSettings,
    load_records,
    markdown_report,
    resolve_task,
    run_benchmark,
)
from policyopt.errors import ConfigError
from policyopt.tasks.code import (
    PALINDROME_CASES,
    PALINDROME_REFERENCE,
    PALINDROME_SEED,
    CodeTask,
    load_code_task,
    pass_rate,
    run_tests,
)
from policyopt.testing import ScriptedLM

TESTS = [([text], answer) for text, answer in PALINDROME_CASES]


def test_the_seed_passes_some_tests_and_the_reference_all() -> None:
    evaluate = pass_rate("is_palindrome", TESTS)
    assert evaluate(PALINDROME_SEED).score == pytest.approx(13 / 30)
    assert evaluate(PALINDROME_REFERENCE).score == 1.0


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("while True:\n    pass\n", "timed out after 2 s"),
        ("def f(x):\n    while True:\n        pass\n", "timed out after 2 s"),
        ("import os\nos._exit(3)\n", "crashed: exit status 3"),
        ("def f(x) return x\n", "the code does not run: SyntaxError"),
        ("g = 1\n", "the code defines no function 'f'"),
        ("import sys\nsys.exit(0)\n", "the code does not run: SystemExit"),
        ("x = bytearray(2 * 1024**3)\n", "the code does not run: MemoryError"),
    ],
)
def test_a_hostile_or_broken_candidate_fails_its_tests_without_hanging(code: str, why: str) -> None:
    started = time.perf_counter()
    outcomes = run_tests(code, "f", [([1], 1), ([2], 2)], timeout=2.0)
    assert time.perf_counter() - started < 20  # 2 s timeout, slack for a loaded machine
    assert [o.passed for o in outcomes] == [False, False]
    assert all(o.got.startswith(why) for o in outcomes), outcomes


def test_printing_and_exceptions_are_reported_per_test() -> None:
    code = "def f(x):\n    print('noise')\n    return 10 // x\n"
    outcomes = run_tests(code, "f", [([1], 10), ([0], 0), ([2], 4)], timeout=5.0)
    assert [o.passed for o in outcomes] == [True, False, False]
    assert outcomes[1].got.startswith("raised ZeroDivisionError")
    assert outcomes[2].got == "5"


def test_a_proposed_fix_is_scored_and_returned() -> None:
    evaluate = pass_rate("is_palindrome", TESTS[8:10])  # Racecar, Level: the seed fails both
    result = policyopt.optimize_anything(
        PALINDROME_SEED,
        evaluate,
        lm=ScriptedLM([f"```python\n{PALINDROME_REFERENCE}```"]),
        max_rollouts=5,
        progress=False,
    )
    assert result.best_score == 1.0 and result.best_prompt == PALINDROME_REFERENCE.strip()


def test_the_feedback_names_each_failing_assertion() -> None:
    lm = ScriptedLM([f"```python\n{PALINDROME_REFERENCE}```"])
    policyopt.optimize_anything(
        PALINDROME_SEED, pass_rate("is_palindrome", TESTS), lm=lm, max_rollouts=5, progress=False
    )
    prompt = lm.prompts[0]
    assert "Answer: 13 of 30 tests pass" in prompt
    assert "assert is_palindrome('Racecar') == True  # got False" in prompt
    assert "assert is_palindrome('racecar')" not in prompt  # passing tests are not reported


def test_the_code_task_splits_are_seeded_and_its_program_runs_the_tests() -> None:
    task = load_code_task("palindrome", seed=0)
    assert isinstance(task, CodeTask) and task.kind == "code" and task.name == "code:palindrome"
    ids = [e["id"] for split in (task.train, task.val, task.test) for e in split]
    assert len(ids) == len(set(ids)) == 30
    assert [e["id"] for e in load_code_task("palindrome", seed=0).test] == [
        e["id"] for e in task.test
    ]
    assert [e["id"] for e in load_code_task("palindrome", seed=1).test] != [
        e["id"] for e in task.test
    ]
    program = task.program()
    assert all(program.evaluate(task.reference_prompt, e).score == 1.0 for e in task.test)
    clone = pickle.loads(pickle.dumps(program.evaluate))  # process backends pickle evaluate
    assert clone(task.reference_prompt, task.test[0]).score == 1.0
    assert resolve_task("code:palindrome").name == "code:palindrome"
    with pytest.raises(ConfigError, match="Unknown code task 'nope'"):
        load_code_task("nope")


def test_the_harness_runs_a_code_task_into_its_report(tmp_path: Path) -> None:
    fixed = ScriptedLM(lambda prompt: f"```python\n{PALINDROME_REFERENCE}```")
    settings = BenchSettings(
        tasks=["code:palindrome"], optimizers=["gepa", "opro"], seeds=[0], budget=40, n_jobs=2
    )
    run_benchmark(settings, tmp_path, task_lm=ScriptedLM(["unused"]), reflection_lm=fixed)
    records = load_records(tmp_path)
    assert [r.key.optimizer for r in records] == ["gepa", "opro"]
    for record in records:
        assert record.status == "ok", record.error
        assert record.baseline_test is not None and record.optimized_test is not None
        assert record.baseline_test.score < 1.0 and record.optimized_test.score == 1.0
        assert record.task_usage.calls == 0  # the program runs code, not a task LM
    assert "code:palindrome" in markdown_report(records)


def test_the_harness_skips_peers_on_a_code_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policyopt.bench import registry
    from policyopt.bench.cell import CellContext, OptimizerOutcome

    class Peer:
        name = "peer-for-code-test"

        def unavailable(self) -> str | None:
            return None

        def run(self, ctx: CellContext) -> OptimizerOutcome:
            raise AssertionError("a peer must not search a code task")

    monkeypatch.setitem(registry._FACTORIES, "peer-for-code-test", Peer)  # undone after
    said: list[str] = []
    settings = BenchSettings(
        tasks=["code:palindrome"], optimizers=["peer-for-code-test"], seeds=[0], budget=20
    )
    run = run_benchmark(
        settings,
        tmp_path,
        task_lm=ScriptedLM(["unused"]),
        reflection_lm=ScriptedLM(["unused"]),
        log=said.append,
    )
    assert run.records == []
    assert any("skipping peer-for-code-test on code:palindrome" in line for line in said)
