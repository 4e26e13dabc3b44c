"""``policyopt optimize`` on a run dir whose journal is damaged in the middle: refused with one
line offering ``--salvage``, which resumes from the records before the damage (never silently),
keeping the whole file beside."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.runconfig.test_optimize_cli import assert_one_line_error, calls, invoke


def test_a_damaged_journal_is_refused_then_salvaged_on_request(project: Path) -> None:
    config = str(project / "config.toml")
    assert invoke("optimize", config, "--no-progress").exit_code == 0
    paid = calls(project)
    journal = project / "runs" / "one" / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    whole = len(lines)
    lines[9] = b'{"type": "rollout", "n"\n'  # line 10: damage, not a kill's torn tail
    journal.write_bytes(b"".join(lines))
    damaged = journal.read_bytes()

    refused = invoke("optimize", config, "--no-progress")
    assert_one_line_error(refused, "journal.jsonl line 10 is damaged", "--salvage", "9 records")
    assert journal.read_bytes() == damaged and calls(project) == paid  # nothing touched, run

    salvaged = invoke("optimize", config, "--no-progress", "--salvage")
    assert salvaged.exit_code == 0, salvaged.output
    assert "Salvaged 9 journal records before line 10" in salvaged.stderr
    assert (journal.parent / "journal.jsonl.damaged").read_bytes() == damaged
    records = [json.loads(line) for line in journal.read_bytes().splitlines()]
    assert len(records) >= 9 and records[:9] == [json.loads(x) for x in lines[:9]]
    # only what the dropped lines held is paid again
    assert paid < calls(project) <= paid + (whole - 9)
    assert "\nGive the opposite of the word.\n" in salvaged.stdout
