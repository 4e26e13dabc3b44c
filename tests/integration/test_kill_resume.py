"""An optimizer killed with SIGKILL mid-run, then resumed: no finished rollout is paid again
and the result and the proposal verdicts equal an uninterrupted run's (GEPA and MIPRO)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from policyopt import OptimizationResult
from policyopt.state.journal import read_journal
from policyopt.testing.conformance import comparable

pytestmark = [pytest.mark.integration, pytest.mark.waits]

RUNNER = textwrap.dedent(
    """
    import json, sys, threading, time
    from policyopt import GEPA, MIPRO, Score
    from policyopt.testing import ScriptedLM
    from policyopt.testing.conformance import keyword_reflection_lm, keyword_task

    run_dir, calls_path, out_path, algorithm = sys.argv[1:5]
    lock = threading.Lock()

    def evaluate(prompt, example):
        time.sleep(0.01)
        ok = example["need"] in prompt
        with lock, open(calls_path, "a") as log:
            log.write(json.dumps([prompt, example["id"]]) + "\\n")
        missing = None if ok else f"The prompt lacks the word {example['need']}."
        return Score(float(ok), feedback=missing)

    program, train, val = keyword_task(n_train=18, n_val=18)
    program.evaluate = evaluate
    if algorithm == "gepa":
        optimizer = GEPA(reflection_lm=keyword_reflection_lm(), max_rollouts=200, n_jobs=2,
                         run_dir=run_dir, progress=False, seed=1)
    else:
        answer = lambda text: "```\\nSolve it: " + str(len(text) % 97) + " alpha\\n```"
        proposer = ScriptedLM(answer)
        optimizer = MIPRO(proposer_lm=proposer, max_rollouts=200, n_jobs=2, run_dir=run_dir,
                          progress=False, seed=1, num_candidates=5, num_trials=14,
                          minibatch_size=6)
    result = optimizer.optimize(program, train, val)
    open(out_path, "w").write(result.to_json())
    """
)


def run(
    script: Path, run_dir: Path, calls: Path, out: Path, algorithm: str
) -> subprocess.Popen[bytes]:
    args = [str(script), str(run_dir), str(calls), str(out), algorithm]
    return subprocess.Popen([sys.executable, *args])


def rollout_lines(run_dir: Path) -> int:
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"type":"rollout"' in line)


@pytest.mark.parametrize("algorithm", ["gepa", "mipro"])
def test_sigkill_then_resume(tmp_path: Path, algorithm: str) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)

    whole = run(
        script, tmp_path / "whole", tmp_path / "whole.calls", tmp_path / "whole.json", algorithm
    )
    assert whole.wait(timeout=120) == 0
    reference = OptimizationResult.from_json((tmp_path / "whole.json").read_text())
    total = reference.n_rollouts
    assert total > 50

    broken_dir, calls = tmp_path / "broken", tmp_path / "broken.calls"
    proc = run(script, broken_dir, calls, tmp_path / "broken.json", algorithm)
    deadline = time.monotonic() + 60
    while rollout_lines(broken_dir) < total // 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = rollout_lines(broken_dir)
    assert 0 < killed_at < total, "the kill did not land mid-run"

    resumed = run(script, broken_dir, calls, tmp_path / "broken.json", algorithm)
    assert resumed.wait(timeout=120) == 0
    result = OptimizationResult.from_json((tmp_path / "broken.json").read_text())

    counts = Counter(tuple(json.loads(line)) for line in calls.read_text().splitlines())
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 2, f"{duplicates} rollouts paid twice (only in-flight ones may be)"
    assert rollout_lines(broken_dir) == total
    assert comparable(result) == comparable(reference)
    # every proposal verdict journaled once, and the same ones as the uninterrupted run's
    verdicts = [json.dumps(r, sort_keys=True) for r in read_journal(broken_dir).of_type("verdict")]
    assert len(set(verdicts)) == len(verdicts) > 0
    whole_verdicts = read_journal(tmp_path / "whole").of_type("verdict")
    assert sorted(verdicts) == sorted(json.dumps(r, sort_keys=True) for r in whole_verdicts)
