"""Data files are checked before anything runs: duplicate ids and lines that are not objects
fail in ``estimate`` and ``optimize`` with one line naming the file (and line), and no run
directory is left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.runconfig.test_optimize_cli import assert_one_line_error, calls, invoke


@pytest.mark.parametrize("command", ["estimate", "optimize"])
def test_duplicate_ids_fail_before_the_search(project: Path, command: str) -> None:
    rows = [{"id": "same", "word": "open", "answer": "closed"}, {"id": "same", "word": "a"}]
    (project / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke(command, str(project / "config.toml"))
    assert_one_line_error(result, "data.val:", "Duplicate example id 'same'", "unique 'id'")
    assert "Searching" not in result.output
    assert not (project / "runs").exists() and calls(project) == 0


@pytest.mark.parametrize("line", ["[1, 2, 3]", '"just text"', "42"])
def test_a_jsonl_line_that_is_not_an_object_is_refused_with_file_and_line(
    project: Path, line: str
) -> None:
    good = json.dumps({"id": "a", "word": "open", "answer": "closed"})
    (project / "train.jsonl").write_text(f"{good}\n{line}\n")
    result = invoke("estimate", str(project / "config.toml"))
    assert_one_line_error(result, "data.train: train.jsonl line 2 is a JSON", "not an object")
