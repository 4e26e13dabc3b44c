"""``policyopt show RUN --examples`` on a run made by ``policyopt optimize``: each validation
example's input (optimize writes examples.jsonl) beside the seed's and the best prompt's
answers, scores and feedback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.runconfig.test_optimize_cli import invoke


def test_examples_show_inputs_answers_scores_and_feedback(project: Path) -> None:
    assert invoke("optimize", str(project / "config.toml"), "--no-progress").exit_code == 0
    run_dir = project / "runs" / "one"
    result = invoke("show", str(run_dir), "--examples", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)["examples"]}
    val = [json.loads(line) for line in (project / "val.jsonl").read_text().splitlines()]
    assert set(rows) == {v["id"] for v in val}
    for v in val:
        row = rows[v["id"]]
        assert row["input"] == v
        assert row["seed"]["score"] == 0.0 and row["seed"]["output"] == "hmm"
        assert row["seed"]["feedback"] == f"expected {v['answer']}"
        assert row["best"]["score"] == 1.0 and row["best"]["output"] == v["answer"]
    shown = invoke("show", str(run_dir), "--examples")
    assert shown.exit_code == 0, shown.output
    assert "open: {" in shown.stdout and "expected closed" in shown.stdout, shown.stdout
