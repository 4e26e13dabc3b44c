"""Code as the artifact: a small Python function scored by its unit tests, run in a sandbox.

The candidate is the function's source; a test is one call and its expected result. Each run
of a candidate happens in a fresh ``python -I`` subprocess with a wall-clock timeout and (on
POSIX) CPU and memory limits, so a candidate that hangs, loops, exits or eats memory fails its
tests instead of stopping the optimizer. Every failing test is reported with
:func:`policyopt.log` as the assertion that failed, which becomes the rollout's feedback.

:func:`pass_rate` scores a candidate on all tests at once (single-task search:
``evaluate(candidate)``); :class:`UnitTest` scores it on one test (multi-task search and the
harness: ``evaluate(candidate, example)``). :func:`load_code_task` makes a built-in function
with its tests a :class:`~policyopt.tasks.base.Task` of kind ``"code"`` (``code:<name>`` in
``policyopt bench``).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from policyopt.errors import ConfigError
from policyopt.sideinfo import log
from policyopt.tasks.base import Task
from policyopt.types import Program, Score

__all__ = [
    "CODE_TASKS",
    "CodeTask",
    "Outcome",
    "PassRate",
    "UnitTest",
    "load_code_task",
    "pass_rate",
    "run_tests",
]

#: seconds one sandboxed run of a candidate may take (all its tests together)
DEFAULT_TIMEOUT_S = 5.0
_MEMORY_BYTES = 512 * 1024 * 1024

# The sandbox's side: define the candidate, call it on each test, print one JSON line last.
_RUNNER = r"""
import json, sys
payload = json.loads(sys.stdin.read())
try:  # POSIX: cap the candidate's memory and CPU time (the parent's timeout caps wall time)
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (payload["memory"], payload["memory"]))
    resource.setrlimit(resource.RLIMIT_CPU, (payload["cpu"], payload["cpu"]))
except (ImportError, ValueError, OSError):
    pass
def report(value):
    sys.stdout.write("\n" + payload["marker"] + json.dumps(value) + "\n")
    sys.stdout.flush()
space = {"__name__": "candidate"}
try:
    exec(compile(payload["code"], "<candidate>", "exec"), space)
except BaseException as exc:
    report({"error": "the code does not run: %s: %s" % (type(exc).__name__, exc)})
    raise SystemExit(0)
fn = space.get(payload["function"])
if not callable(fn):
    report({"error": "the code defines no function %r" % payload["function"]})
    raise SystemExit(0)
results = []
for args, expected in payload["tests"]:
    try:
        got = fn(*args)
        results.append([got == expected, repr(got)[:200]])
    except BaseException as exc:
        results.append([False, "raised %s: %s" % (type(exc).__name__, str(exc)[:160])])
report({"results": results})
"""


@dataclass(frozen=True)
class Outcome:
    """One test's result: passed or not, and what the call gave (or why it failed)."""

    passed: bool
    got: str


def run_tests(
    code: str, function: str, tests: Sequence[tuple[Sequence[Any], Any]], *, timeout: float
) -> list[Outcome]:
    """Run ``function`` from ``code`` on each ``(args, expected)`` in a sandboxed subprocess;
    every test fails alike (with the reason) when the code does not load, hangs or crashes."""
    marker = f"@@policyopt-{os.getpid()}-{random.getrandbits(64):x}@@"
    payload = json.dumps(
        {
            "code": code,
            "function": function,
            "tests": [list(t) for t in tests],
            "marker": marker,
            "memory": _MEMORY_BYTES,
            "cpu": max(1, math.ceil(timeout)),
        }
    )
    with tempfile.TemporaryDirectory(prefix="policyopt-code-") as cwd:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _RUNNER],
                input=payload,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=cwd,
                env={"PATH": os.environ.get("PATH", "")},
                check=False,
            )
        except subprocess.TimeoutExpired:
            return [Outcome(False, f"timed out after {timeout:g} s")] * len(tests)
    line = done.stdout.rpartition(marker)[2].strip() if marker in done.stdout else ""
    if not line:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return [Outcome(False, f"crashed: {reason[:200]}")] * len(tests)
    report = json.loads(line)
    if "error" in report:
        return [Outcome(False, str(report["error"])[:300])] * len(tests)
    return [Outcome(bool(ok), str(got)) for ok, got in report["results"]]


def _call(function: str, args: Sequence[Any]) -> str:
    return f"{function}({', '.join(repr(a) for a in args)})"


def _report(function: str, test: tuple[Sequence[Any], Any], outcome: Outcome) -> None:
    """A failing test as the assertion that failed, through :func:`policyopt.log`."""
    if not outcome.passed:
        args, expected = test
        log(f"assert {_call(function, args)} == {expected!r}  # got {outcome.got}")


class PassRate:
    """``evaluate(candidate)``: the share of ``tests`` the code passes (single-task search);
    failing assertions go to :func:`policyopt.log`. Picklable."""

    def __init__(
        self,
        function: str,
        tests: Sequence[tuple[Sequence[Any], Any]],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not tests:
            raise ConfigError("PassRate needs at least one test.")
        self.function = function
        self.tests = [(list(args), expected) for args, expected in tests]
        self.timeout = timeout

    def __call__(self, code: str) -> Score:
        outcomes = run_tests(code, self.function, self.tests, timeout=self.timeout)
        for test, outcome in zip(self.tests, outcomes, strict=True):
            _report(self.function, test, outcome)
        passed = sum(o.passed for o in outcomes)
        return Score(passed / len(outcomes), output=f"{passed} of {len(outcomes)} tests pass")


def pass_rate(
    function: str, tests: Sequence[tuple[Sequence[Any], Any]], timeout: float = DEFAULT_TIMEOUT_S
) -> PassRate:
    """The single-task evaluator of ``function`` against ``tests`` (see :class:`PassRate`)."""
    return PassRate(function, tests, timeout=timeout)


class UnitTest:
    """``evaluate(candidate, example)``: 1.0 when the code passes the example's test
    (``{"args": [...], "expected": ...}``), else 0.0 and the failing assertion logged."""

    def __init__(self, function: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.function = function
        self.timeout = timeout

    def __call__(self, code: str, example: dict[str, Any]) -> Score:
        test = (list(example["args"]), example["expected"])
        outcome = run_tests(code, self.function, [test], timeout=self.timeout)[0]
        _report(self.function, test, outcome)
        return Score(float(outcome.passed), output=outcome.got)


@dataclass(frozen=True)
class CodeTask(Task):
    """A task whose candidate is code: its program runs the tests (no task LM is called)."""

    function: str = ""
    timeout: float = DEFAULT_TIMEOUT_S

    def program(self, lm: Any = None) -> Program:
        """The candidate code scored by one unit test per example; ``lm`` is not used."""
        return Program(self.seed_prompt, UnitTest(self.function, timeout=self.timeout))


# ---------------------------------------------------------------------- built-in code tasks

PALINDROME_SEED = '''\
def is_palindrome(text):
    """True when text reads the same backwards."""
    return text == text[::-1]
'''

PALINDROME_REFERENCE = '''\
def is_palindrome(text):
    """True when text reads the same backwards, ignoring case, spaces and punctuation."""
    letters = [c.lower() for c in text if c.isalnum()]
    return letters == letters[::-1]
'''

#: (text, is it a palindrome when case, spaces and punctuation are ignored)
PALINDROME_CASES: tuple[tuple[str, bool], ...] = (
    ("racecar", True),
    ("level", True),
    ("hello", False),
    ("", True),
    ("a", True),
    ("ab", False),
    ("noon", True),
    ("python", False),
    ("Racecar", True),
    ("Level", True),
    ("Noon", True),
    ("Madam", True),
    ("Hello", False),
    ("Abba", True),
    ("never odd or even", True),
    ("step on no pets", True),
    ("top spot", True),
    ("no lemon no melon", True),
    ("not a palindrome", False),
    ("Was it a car or a cat I saw", True),
    ("Step on no pets", True),
    ("Never odd or even", True),
    ("A man, a plan, a canal: Panama", True),
    ("Madam, I'm Adam.", True),
    ("Eva, can I see bees in a cave?", True),
    ("No 'x' in Nixon", True),
    ("Hello, world!", False),
    ("Mr. Owl ate my metal worm", True),
    ("Red rum, sir, is murder", True),
    ("This is not one.", False),
)


def _palindrome(seed: int) -> CodeTask:
    rows = [
        {"id": f"p{i:02d}", "args": [text], "expected": answer}
        for i, (text, answer) in enumerate(PALINDROME_CASES)
    ]
    random.Random(seed).shuffle(rows)
    return CodeTask(
        name="code:palindrome",
        description="fix is_palindrome so that it ignores case, spaces and punctuation",
        seed_prompt=PALINDROME_SEED,
        reference_prompt=PALINDROME_REFERENCE,
        train=rows[:10],
        val=rows[10:20],
        test=rows[20:],
        render_input=lambda example: _call("is_palindrome", example["args"]),
        metric=UnitTest("is_palindrome"),
        kind="code",
        expected=lambda example: repr(example["expected"]),
        notes="the seed passes the plain lowercase cases only; the reference passes all 30",
        function="is_palindrome",
    )


#: name -> factory(seed) of every built-in code task (``code:<name>``)
CODE_TASKS = {"palindrome": _palindrome}


def load_code_task(name: str, seed: int = 0) -> CodeTask:
    """A built-in code task by name (without its ``code:`` prefix), its splits from ``seed``."""
    if name not in CODE_TASKS:
        raise ConfigError(f"Unknown code task {name!r}; built-in code tasks: {sorted(CODE_TASKS)}.")
    return CODE_TASKS[name](seed)
