"""How ``policyopt optimize`` ends: exit code 0 only for a scored result, 1 with one line when
every rollout of the seed prompt failed (whatever the valset size), 130 after Ctrl-C and 143
after SIGTERM, with the result written and the run dir's lock released, in a second or two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.runconfig._project import CONFIG
from tests.unit.runconfig.test_optimize_cli import invoke

BROKEN = """
def evaluate(prompt, example, lm):
    return Score(1.0)   # Score not imported: the README's snippet did this
"""


@pytest.mark.parametrize("n_val", [4, 8, 10])
def test_every_rollout_failing_is_exit_1_and_one_line(project: Path, n_val: int) -> None:
    (project / "broken.py").write_text(BROKEN)
    rows = "".join(
        json.dumps({"id": f"v{i}", "word": "w", "answer": "a"}) + "\n" for i in range(n_val)
    )
    (project / "val.jsonl").write_text(rows)
    config = CONFIG.replace('"prog:evaluate"', '"broken:evaluate"').replace("= 30", "= 60")
    (project / "broken.toml").write_text(config)
    result = invoke("optimize", str(project / "broken.toml"), "--no-progress")
    assert result.exit_code == 1, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "NameError: name 'Score' is not defined" in errors[0], errors
    assert len(errors[0]) < 1000
    assert not any(line.rstrip().endswith("Failures:") for line in result.stderr.splitlines())
    assert "seed prompt 0.000" not in result.stdout and "Best prompt" not in result.stdout
    sys.modules.pop("broken", None)


@pytest.mark.timeout(120)
def test_every_rollout_failing_is_said_once_on_the_console(project: Path) -> None:
    """In a real process (pytest's log capture would hide it): the run's "stopping the run"
    warning is not printed beside the error line that says the same."""
    (project / "broken.py").write_text(BROKEN)
    (project / "broken.toml").write_text(CONFIG.replace('"prog:evaluate"', '"broken:evaluate"'))
    proc = subprocess.run(
        [sys.executable, "-m", "policyopt.cli", "optimize", "broken.toml", "--no-progress"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=100,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    said = [line for line in proc.stderr.splitlines() if "NameError" in line]
    assert len(said) == 1 and said[0].startswith("error: broken.toml: "), proc.stderr


SLOW = """
import time
from pathlib import Path
from policyopt import Score

HERE = Path(__file__).parent


def evaluate(prompt, example):
    time.sleep(0.02)
    return Score(0.0, feedback="say the opposite")


def reflect(text):
    (HERE / "reflecting").touch()
    time.sleep(120)  # an LM call in flight when the signal comes: abandoned, not awaited
    return "```\\nGive the opposite.\\n```"
"""

SLOW_CONFIG = """
[policy_optimization]
algorithm = "gepa"
initial_prompt = "Answer the question."
evaluate = "slow:evaluate"
run_dir = "runs/slow"

[policy_optimization.data]
train = "train.jsonl"
val = "val.jsonl"

[policy_optimization.models]
reflection = "slow:reflect"

[policy_optimization.budget]
max_rollouts = 100

[policy_optimization.test]
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_writes_the_result_and_exits_fast(
    project: Path, signum: int, code: int
) -> None:
    (project / "slow.py").write_text(SLOW)
    (project / "slow.toml").write_text(SLOW_CONFIG.replace("[policy_optimization.test]\n", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "policyopt.cli", "optimize", "slow.toml", "--no-progress"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 150
        while not (project / "reflecting").exists():  # the seed is scored, an LM call is out
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == code, (proc.returncode, out, err)
    assert took < 10, took  # ~0.1 s on a quiet machine; was as long as the LM call in flight
    assert "stop: interrupted" in out and "Traceback" not in err
    run_dir = project / "runs" / "slow"
    assert json.loads((run_dir / "result.json").read_text())["stop_reason"] == "interrupted"
    import fcntl

    with (run_dir / ".lock").open("a") as handle:  # the lock is free
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
