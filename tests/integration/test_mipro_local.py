"""MIPRO on the built-in task with the real local model as task and proposer LM, through
`policyopt demo --algorithm mipro`: the small-model defaults (advice proposals) planned from a
budget alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# a minute quiet on the 2-core machine, a few beside the suite; 900 s survives a 3x slowdown
@pytest.mark.timeout(1200)
def test_mipro_demo_plans_from_a_budget_and_proposes_the_rule(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    command = [sys.executable, "-m", "policyopt.cli", "demo", "--algorithm", "mipro"]
    command += ["--limit", "6", "--budget", "30", "--json", str(out), "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "MIPRO spent" in proc.stdout
    result = json.loads(out.read_text(encoding="utf-8"))["result"]
    details = result["details"]
    assert result["optimizer"] == "mipro" and 0 < result["n_rollouts"] <= 30
    # from a budget alone: a plan with at least one trial, an estimate the run keeps to
    plan, estimate = details["plan"], details["estimate"]
    assert plan["source"] == "budget" and plan["num_trials"] >= 1 and len(details["trials"]) >= 1
    assert result["n_rollouts"] <= estimate["rollouts_max"] <= 30
    proposer = result["lm_usage"]["proposer"]
    assert 2 <= proposer["calls"] <= estimate["proposer_calls_max"]  # the summary and proposals
    seed_scores = result["candidates"][0]["val_scores"].values()
    assert result["best_score"] >= sum(seed_scores) / len(seed_scores)
    # the small-model default: SmolLM2 restates the feedback's rule as instructions (its grounded
    # proposals were all unusable on this task): what the feedback says, not an example pair
    assert result["settings"]["instruction_proposer"] == "advice"
    instructions = details["instructions"]["prompt"]
    assert instructions[0] == "Answer the question." and len(instructions) >= 2, instructions
    assert any("opposite" in text.lower() for text in instructions[1:]), instructions
    assert details["final_choice"]["rule"] == "lower_bound"
