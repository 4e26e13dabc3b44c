"""`policyopt show | plot | compare` on real run directories, and one-line CLI errors.

The runs are GEPA with the scripted keyword LM (`policyopt.testing.conformance`): about a second
each. Every bad input must give one ``error:`` line on stderr, exit code 2 and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from policyopt import GEPA
from policyopt.cli import app
from policyopt.testing.conformance import CountingEvaluate, keyword_reflection_lm, keyword_task

runner = CliRunner()


def make_run(path: Path, *, seed: int = 0, fail_on: frozenset[str] = frozenset()) -> Path:
    program, train, val = keyword_task(evaluate=CountingEvaluate(fail_on=fail_on))
    GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=150,
        seed=seed,
        n_jobs=2,
        run_dir=str(path),
        progress=False,
    ).optimize(program, train, val)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # "zeta" fails in evaluate: the run has failures and quarantined examples to show
    return make_run(tmp_path_factory.mktemp("runs") / "run", fail_on=frozenset({"zeta"}))


def assert_one_line_error(result: Result, *needles: str) -> None:
    exit_code, stderr, stdout = result.exit_code, result.stderr, result.stdout
    assert exit_code == 2, (exit_code, stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr + stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_show_prints_summary_lineage_and_proposals(run_dir: Path) -> None:
    result = runner.invoke(app, ["show", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in [
        "gepa run, finished",
        "best: candidate 5, val score 0.833",
        "stop reason: stalled",
        "rollouts: 114/150 (12 failed)",
        "last failure: RuntimeError: evaluate failed on zeta",
        "LM calls: 23 (reflection 23)",
        "cost: $0.0000",
        "wall time:",
        "Solve the task. epsilon beta alpha gamma delta",  # the best prompt, whole
        "candidates (lineage)",
        "proposals (23: 5 accepted, 18 rejected)",
        "became candidate 5",
        "minibatch score 0.667 on 3 examples",
    ]:
        assert needle in out, needle


def test_show_json_is_complete_and_matches_the_result(run_dir: Path) -> None:
    result = runner.invoke(app, ["show", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    saved = json.loads((run_dir / "result.json").read_text())
    assert data["best"]["prompt"] == saved["best_prompt"]
    assert data["best_score"] == saved["best_score"]
    assert data["n_rollouts"] == saved["n_rollouts"] <= data["max_rollouts"] == 150
    assert data["stop_reason"] == saved["stop_reason"]
    assert data["lm_calls"] == saved["lm_usage"]["reflection"]["calls"]
    assert data["failed_rollouts"] == 12 and "zeta" in data["last_failure"]
    assert [c["index"] for c in data["candidates"]] == list(range(len(saved["candidates"])))
    assert all(c["parents"] == [c["index"] - 1] for c in data["candidates"][1:])
    assert data["proposal_counts"] == {"accepted": 5, "rejected": 18}
    accepted = [p for p in data["proposals"] if p["status"] == "accepted"]
    assert [p["candidate"] for p in accepted] == [1, 2, 3, 4, 5]
    assert [p["rollouts"] for p in data["curve"]] == sorted(p["rollouts"] for p in data["curve"])
    assert data["curve"][-1]["best_score"] == saved["best_score"]


def test_plot_writes_pngs_and_one_self_contained_html(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    result = runner.invoke(app, ["plot", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ["curve.png", "lineage.png", "coverage.png"]:
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and 'src="http' not in page
    assert "Solve the task. epsilon beta alpha gamma delta" in page


def test_compare_overlays_runs(run_dir: Path, tmp_path: Path) -> None:
    other = make_run(tmp_path / "seed1", seed=1)
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(run_dir), str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")
    page = (out / "compare.html").read_text()
    assert str(run_dir) in page and str(other) in page and "data:image/png;base64," in page
    assert f"{other}: gepa, best 1.000" in result.stdout


def test_show_reads_a_run_with_a_torn_last_journal_record(run_dir: Path, tmp_path: Path) -> None:
    torn = tmp_path / "torn"
    shutil.copytree(run_dir, torn)
    with (torn / "journal.jsonl").open("a") as handle:
        handle.write('{"type":"rollout","n":999,"prompt":"ab')  # a kill mid-write
    before = (torn / "journal.jsonl").read_bytes()
    result = runner.invoke(app, ["show", str(torn)])
    assert result.exit_code == 0, result.output
    assert "torn record" in result.stdout
    assert (torn / "journal.jsonl").read_bytes() == before  # show never writes


def test_show_and_plot_skip_a_damaged_journal_line_with_a_warning(
    run_dir: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    lines = (damaged / "journal.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"  # record 4 of many, torn: damage, not a kill
    (damaged / "journal.jsonl").write_text("".join(lines))
    before = (damaged / "journal.jsonl").read_bytes()
    shown = runner.invoke(app, ["show", str(damaged), "--json"])
    assert shown.exit_code == 0, shown.output  # was: an error advising to move the run away
    assert "1 damaged line(s) in the middle, skipped; the run is read from result.json" in (
        shown.stderr
    )
    data = json.loads(shown.stdout)
    saved = json.loads((run_dir / "result.json").read_text())
    assert data["best"]["prompt"] == saved["best_prompt"] and data["journal_damaged_lines"] == 1
    plotted = runner.invoke(app, ["plot", str(damaged), "--out", str(tmp_path / "plots")])
    assert plotted.exit_code == 0, plotted.output
    assert "damaged line" in plotted.stderr and (tmp_path / "plots" / "report.html").exists()
    assert (damaged / "journal.jsonl").read_bytes() == before  # show and plot never write


def test_bad_run_directories_are_one_clear_line(run_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["show", str(missing)])
    assert_one_line_error(result, str(missing), "does not exist")

    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    for command in ["show", "plot"]:
        result = runner.invoke(app, [command, str(not_a_run)])
        assert_one_line_error(result, "not a policyopt run directory", "config.json")
    result = runner.invoke(app, ["compare", str(run_dir), str(not_a_run)])
    assert_one_line_error(result, "not a policyopt run directory")

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "result.json").write_text('{"optimizer": "gepa", "best_')
    result = runner.invoke(app, ["show", str(broken), "--json"])
    assert_one_line_error(result, "result.json is not a valid result (Invalid JSON")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--task", "nope"], ["--task 'nope' is not a built-in task", "antonyms"]),
        (["--budget", "0"], ["--budget must be a positive number"]),
        (["--budget=-3", "--algorithm", "mipro"], ["--budget must be a positive number"]),
        (["--algorithm", "nope"], ["--algorithm 'nope'", "gepa"]),
        (["--budget", "5"], ["cannot score the seed prompt", "--budget 39 or more"]),
        (["--n-jobs", "0"], ["--n-jobs must be 1 or more"]),
    ],
)
def test_demo_errors_are_one_line_before_any_model_loads(
    args: list[str], needles: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import policyopt.lm

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must not load for a bad command line")

    monkeypatch.setattr(policyopt.lm, "LocalLM", no_model)
    result = runner.invoke(app, ["demo", *args])
    assert_one_line_error(result, *needles)


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "policyopt.cli", "show", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_an_unfinished_run_shows_and_plots_from_its_state(run_dir: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(run_dir, killed)
    (killed / "result.json").unlink()  # killed before the end: state.json and the journal remain
    result = runner.invoke(app, ["show", str(killed), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["finished"] is False and data["best"]["candidate"] == 5
    assert data["n_rollouts"] == 114 and len(data["candidates"]) == 6
    result = runner.invoke(app, ["plot", str(killed)])
    assert result.exit_code == 0, result.output
    assert (killed / "plots" / "report.html").stat().st_size > 0


def test_show_says_running_with_the_pid_holding_the_lock(run_dir: Path, tmp_path: Path) -> None:
    from policyopt.state.rundir import lock_run_dir

    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    (live / "result.json").unlink()
    with lock_run_dir(live):  # as a live run holds it
        result = runner.invoke(app, ["show", str(live)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"gepa run, running (pid {os.getpid()})" in result.stdout
    after = runner.invoke(app, ["show", str(live)], env={"COLUMNS": "200"})
    assert "gepa run, unfinished (no result.json yet)" in after.stdout  # a dead lock: not running


def test_a_run_killed_before_its_first_snapshot_shows_the_seed_score(
    run_dir: Path, tmp_path: Path
) -> None:
    early = tmp_path / "early"
    shutil.copytree(run_dir, early)
    (early / "result.json").unlink()
    (early / "state.json").unlink()  # killed after the seed's rollouts, before any snapshot
    result = runner.invoke(app, ["show", str(early), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    saved = json.loads((run_dir / "result.json").read_text())
    seed = saved["candidates"][0]
    assert [c["index"] for c in data["candidates"]] == [0]
    assert data["candidates"][0]["n_val"] == len(seed["val_scores"])
    assert data["best"]["score"] == pytest.approx(
        sum(seed["val_scores"].values()) / len(seed["val_scores"])
    )


def test_show_examples_lists_seed_and_best_answers_per_example(run_dir: Path) -> None:
    result = runner.invoke(app, ["show", str(run_dir), "--examples", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["examples"]
    saved = json.loads((run_dir / "result.json").read_text())
    best = saved["candidates"][saved["best_candidate"]]
    assert [r["id"] for r in rows] == list(saved["candidates"][0]["val_scores"])
    run = [r for r in rows if r["best"] is not None]  # a quarantined example is not run
    assert len(run) >= len(rows) // 2
    for row in run:
        assert row["best"]["score"] == best["val_scores"][row["id"]]
        assert row["seed"]["output"] is not None or row["seed"]["error"]
    assert any(r["seed"]["feedback"] for r in rows)
    shown = runner.invoke(app, ["show", str(run_dir), "--examples"], env={"COLUMNS": "160"})
    assert shown.exit_code == 0 and "validation examples (12)" in shown.stdout
    assert "The prompt lacks the word" in shown.stdout


def test_the_proposals_table_keeps_room_for_the_reasons_at_80_columns(run_dir: Path) -> None:
    result = runner.invoke(app, ["show", str(run_dir), "--all-proposals"], env={"COLUMNS": "80"})
    header = next(line for line in result.stdout.splitlines() if "why" in line and "┃" in line)
    cells = [cell.strip() for cell in header.strip("┃").split("┃")]
    assert cells == ["proposal", "why", "proposed text"], cells
    widths = [len(cell) for cell in header.strip("┃").split("┃")]
    assert widths[1] >= 20, widths  # the key and status no longer squeeze the reasons
