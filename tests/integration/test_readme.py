"""The README's Python example runs as written, on the real local model, and `policyopt show`
reads the run it leaves behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyopt import OptimizationResult
from policyopt.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    """The first Python block of the README's "Using it" section, exactly as printed."""
    section = README.read_text(encoding="utf-8").split("\n## Using it\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python example under '## Using it'"
    return match.group(1)


def _run_example(cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "example.py"], cwd=cwd, capture_output=True, text=True, timeout=850
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _paid(run_dir: Path) -> list[dict[str, object]]:
    """The journal's paid work: rollouts started and finished, and the optimizer LM's answers."""
    lines = (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r.get("type") in {"start", "rollout", "proposal"}]


# 117 s on the loaded 2-core machine (two model starts, 24 rollouts), the rerun a few seconds;
# 1800 s survives a busy CI
@pytest.mark.timeout(1800)
def test_readme_example_runs_as_written_and_resumes(tmp_path: Path) -> None:
    """Within its budget, a result that round-trips, `show` reading it, and the same command
    again replaying the finished run at no cost (test_gepa_local.py checks a gain)."""
    code = readme_example()
    assert "trainset, valset =" in code and "SMALL_MODEL_SETTINGS" in code
    assert "LocalLM.for_reflection()" in code
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    printed = _run_example(tmp_path).stdout.strip().splitlines()[-1]
    run_dir = tmp_path / "runs" / "antonyms"
    text = (run_dir / "result.json").read_text(encoding="utf-8")
    saved = json.loads(text)
    assert saved["n_rollouts"] <= 24 and saved["stop_reason"] in printed
    result = OptimizationResult.from_json(text)
    assert OptimizationResult.from_json(result.to_json()) == result
    assert result.lm_usage["reflection"].calls >= 1
    shown = CliRunner().invoke(app, ["show", str(run_dir), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["best"]["prompt"] == saved["best_prompt"]
    paid = _paid(run_dir)
    # the same command again: the finished run replays from its journal, paying nothing
    assert _run_example(tmp_path).stdout.strip().splitlines()[-1] == printed
    again = OptimizationResult.from_json((run_dir / "result.json").read_text(encoding="utf-8"))
    assert again.best_prompt == result.best_prompt and again.n_rollouts == result.n_rollouts
    assert again.details["resumed_rollouts"] == result.n_rollouts
    assert _paid(run_dir) == paid


def readme_chat_example() -> str:
    """The Python block of the README's "Chat prompts" section, exactly as printed."""
    section = README.read_text(encoding="utf-8").split("\n### Chat prompts\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section.split("\n### ", 1)[0], re.S)
    assert match, "no Python example under '### Chat prompts'"
    return match.group(1)


# two model starts, 20 short rollouts, 4 proposer calls: 148 s of search at load average ~14
# on the 2-core machine; 1200 s leaves room for a 3x slowdown
@pytest.mark.timeout(1200)
def test_readme_chat_example_runs_as_written(tmp_path: Path) -> None:
    code = readme_chat_example()
    assert '"role": "system"' in code and "MIPRO(" in code
    assert "LocalLM.for_reflection()" in code
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "runs" / "chat" / "result.json").read_text())
    assert saved["n_rollouts"] <= 24
    seed, best = saved["candidates"][0]["prompt"], saved["best_prompt"]
    assert seed == [{"role": "system", "content": "Answer the question."}]
    assert isinstance(best, list) and best[0]["role"] == "system"
    # every other message is a demo turn: user/assistant pairs after the system message
    assert [m["role"] for m in best[1:]] == ["user", "assistant"] * ((len(best) - 1) // 2)
    printed = proc.stdout.strip().splitlines()[-1].split()
    assert float(printed[1]) == saved["best_score"] >= float(printed[0])
