"""The command line's messages: ``--version``, help without Python types, and one clear line
for a config or data file that is not valid TOML (its name once, with line and column), a
directory, a binary or non-UTF-8 file (a UTF-8 BOM is fine), or a misspelled section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyopt._version import __version__
from policyopt.cli import app
from tests.unit.runconfig._project import CONFIG
from tests.unit.runconfig.test_optimize_cli import assert_one_line_error, invoke

README = Path(__file__).parents[3] / "README.md"
COMMANDS = [
    *(
        [
            "version",
            "optimizers",
            "tasks",
            "demo",
            "show",
            "plot",
            "compare",
            "optimize",
            "estimate",
            "bench",
        ]
    ),
    *(["task-app", "serve", "job"]),
    *(["job", name] for name in ["submit", "status", "stream", "cancel", "results"]),
]


def test_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == __version__


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_help_shows_no_python_types(command: str | list[str]) -> None:
    args = [command] if isinstance(command, str) else command
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    leaks = re.findall(r"<[^>]*\[[^>]*\]>|list\[|NoneType|Optional\[", result.stdout)
    assert not leaks, (leaks, result.stdout)


def test_bad_toml_names_the_file_once_with_line_and_column(project: Path) -> None:
    (project / "bad1.toml").write_text("[policy_optimization\nalgorithm = 1")
    result = invoke("estimate", str(project / "bad1.toml"))
    assert_one_line_error(result, "is not valid TOML", "(at line 1, column 21)")
    assert result.stderr.count("bad1.toml") == 1, result.stderr


def test_a_directory_is_a_directory(project: Path) -> None:
    assert_one_line_error(invoke("estimate", str(project)), "is a directory")
    text = CONFIG.replace('val = "val.jsonl"', 'val = "runs"')
    (project / "runs").mkdir()
    (project / "dir.toml").write_text(text)
    assert_one_line_error(invoke("estimate", str(project / "dir.toml")), "data.val:", "directory")


def test_encodings_bom_latin1_and_nul_bytes(project: Path) -> None:
    (project / "bom.toml").write_bytes(b"\xef\xbb\xbf" + CONFIG.encode())
    assert invoke("estimate", str(project / "bom.toml")).exit_code == 0  # Notepad's BOM is fine
    (project / "latin.toml").write_bytes(CONFIG.replace("gepa", "gépa", 1).encode("latin-1"))
    assert_one_line_error(
        invoke("estimate", str(project / "latin.toml")), "is not UTF-8 text (byte 0xe9 at line 3"
    )
    (project / "nul.toml").write_bytes(CONFIG.encode("utf-16"))
    assert_one_line_error(invoke("estimate", str(project / "nul.toml")), "NUL byte", "UTF-8")
    (project / "val.jsonl").write_bytes(
        '{"id": "é", "word": "x", "answer": "y"}\n'.encode("cp1252")
    )
    assert_one_line_error(
        invoke("estimate", str(project / "config.toml")), "data.val:", "not UTF-8 text", "line 1"
    )


def test_a_misspelled_section_gets_did_you_mean(project: Path) -> None:
    (project / "typo.toml").write_text(
        CONFIG.replace("[policy_optimization]", "[prompt_optimization]")
    )
    assert_one_line_error(
        invoke("estimate", str(project / "typo.toml")),
        "[prompt_optimization] is not a table policyopt reads; did you mean [policy_optimization]?",
    )


def test_the_readme_documents_the_limit_form_and_it_works(project: Path) -> None:
    assert '`{path = "train.jsonl", limit = 50}`' in README.read_text(encoding="utf-8")
    text = CONFIG.replace('train = "train.jsonl"', 'train = {path = "train.jsonl", limit = 2}')
    (project / "limit.toml").write_text(text)
    result = invoke("estimate", str(project / "limit.toml"))
    assert result.exit_code == 0 and "gepa on 2 train / 4 val" in result.stdout, result.output
