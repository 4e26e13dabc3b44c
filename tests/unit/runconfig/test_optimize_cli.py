"""``policyopt optimize`` / ``policyopt estimate`` on a user-style module with scripted LMs
(``models.task = "prog:task_lm"``): a run, its resume (no rollout paid twice), --set, the
estimate, data formats, and bad configs as one error line with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from policyopt.cli import app
from tests.unit.runconfig._project import CONFIG, PAIRS

runner = CliRunner()


def calls(project: Path) -> int:
    path = project / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


# --------------------------------------------------------------------------- optimize
def test_optimize_prints_estimate_and_best_prompt_and_resumes_without_paying_again(
    project: Path,
) -> None:
    config = str(project / "config.toml")
    first = invoke("optimize", config, "--no-progress")
    assert first.exit_code == 0, first.output
    assert "Estimate: gepa on 4 train / 4 val / 0 test examples, budget 30" in first.stdout
    assert "Best prompt (val score 1.000, seed prompt 0.000" in first.stdout
    assert "\nGive the opposite of the word.\n" in first.stdout  # in full, on its own line
    run_dir = project / "runs" / "one"
    outcome = json.loads((run_dir / "optimize.json").read_text())
    assert outcome["best_prompt"] == "Give the opposite of the word."
    assert (run_dir / "result.json").exists()
    paid = calls(project)
    assert 0 < paid <= 30 and outcome["n_rollouts"] == paid

    again = invoke("optimize", config, "--no-progress")
    assert again.exit_code == 0, again.output
    assert calls(project) == paid  # every finished rollout came from the journal
    assert "\nGive the opposite of the word.\n" in again.stdout

    changed = invoke("optimize", config, "--no-progress", "--set", "gepa.minibatch_size=3")
    # told when the optimizer opens the run dir (after the models load), as one error line
    assert changed.exit_code == 2 and "Traceback" not in changed.output
    last = changed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "config.toml: Cannot resume" in last
    assert "minibatch_size: 2 -> 3" in last
    assert calls(project) == paid


def test_a_resume_with_another_evaluate_or_task_model_is_refused_unless_accepted(
    project: Path,
) -> None:
    """The run dir's cached scores belong to its evaluate and task model: another one is one
    error line naming it and --accept-changed (before: the old cached scores were mixed in)."""
    config = str(project / "config.toml")
    assert invoke("optimize", config, "--no-progress").exit_code == 0
    paid = calls(project)
    louder = ("--set", 'evaluate="prog:evaluate_loud"')
    changed = invoke("optimize", config, "--no-progress", *louder)
    assert changed.exit_code == 2 and "Traceback" not in changed.output
    last = changed.stderr.strip().splitlines()[-1]
    assert "evaluate: " in last and "evaluate_loud" in last, last
    assert "--accept-changed evaluate" in last and "another run_dir" in last
    assert calls(project) == paid
    other_model = invoke("optimize", config, "--no-progress", "--set", 'models.task="prog:reflect"')
    assert other_model.exit_code == 2
    assert "task_model: " in other_model.stderr.strip().splitlines()[-1]
    accepted = invoke("optimize", config, "--no-progress", *louder, "--accept-changed", "evaluate")
    assert accepted.exit_code == 0, accepted.output


_FLAKY = """

def evaluate_flaky(prompt, example, lm):
    if Path(__file__).with_name("BROKEN").exists() and example["word"] == "hot":
        with CALLS.open("a") as f:
            f.write("hot\\n")
        raise RuntimeError("backend down")
    return evaluate(prompt, example, lm)
"""


def test_retry_failures_pays_the_recorded_failures_again(project: Path) -> None:
    """A resume replays the failed rollouts as recorded (nothing paid, the same best prompt);
    with --retry-failures it pays them again, here with the backend fixed."""
    with (project / "prog.py").open("a") as handle:
        handle.write(_FLAKY)
    (project / "BROKEN").touch()
    config = str(project / "config.toml")
    flaky = ("--no-progress", "--set", 'evaluate="prog:evaluate_flaky"')
    first = invoke("optimize", config, *flaky)
    assert first.exit_code == 0, first.output
    run_dir = project / "runs" / "one"
    failed = json.loads((run_dir / "result.json").read_text())["details"]["failed_rollouts"]
    paid = calls(project)
    assert failed > 0
    again = invoke("optimize", config, *flaky)
    assert again.exit_code == 0, again.output
    assert calls(project) == paid
    details = json.loads((run_dir / "result.json").read_text())["details"]
    assert (details["replayed_failures"], details["resume_exact"]) == (failed, True)

    (project / "BROKEN").unlink()
    retried = invoke("optimize", config, *flaky, "--retry-failures")
    assert retried.exit_code == 0, retried.output
    details = json.loads((run_dir / "result.json").read_text())["details"]
    assert calls(project) > paid and details["retried_failures"] > 0
    assert details["resume_exact"] is False
    settings = json.loads((run_dir / "result.json").read_text())["settings"]
    assert settings["retry_failures"] is True


def test_set_overrides_and_run_dir_option(project: Path, tmp_path_factory: Any) -> None:
    where = tmp_path_factory.mktemp("elsewhere") / "run"
    result = invoke(
        "optimize",
        str(project / "config.toml"),
        "--no-progress",
        "--set",
        "budget.max_rollouts=6",
        "--set",
        'models.reflection="prog:task_lm"',  # proposals that never help
        "--run-dir",
        str(where),
    )
    assert result.exit_code == 0, result.output
    assert calls(project) <= 6
    assert json.loads((where / "optimize.json").read_text())["n_rollouts"] <= 6
    assert not (project / "runs").exists()


def test_program_object_module_loader_and_variant(project: Path) -> None:
    (project / "variant.toml").write_text(
        """
[policy_optimization]
algorithm = "gepa[merge=false]"
program = "prog:program"
data = "prog:load"
run_dir = "runs/v"
[policy_optimization.models]
reflection = "prog:reflect"
[policy_optimization.budget]
max_rollouts = 20
"""
    )
    result = invoke("optimize", str(project / "variant.toml"), "--no-progress")
    assert result.exit_code == 0, result.output
    settings = json.loads((project / "runs" / "v" / "result.json").read_text())["settings"]
    assert settings["merge"] is False


def test_program_factory_gets_the_task_model_and_test_split_is_scored(project: Path) -> None:
    rows = [{"id": f"t{w}", "word": w, "answer": a} for w, a in PAIRS[:3]]
    with (project / "test.csv").open("w") as f:
        f.write(
            "id,word,answer\n" + "".join(f"{r['id']},{r['word']},{r['answer']}\n" for r in rows)
        )
    text = CONFIG.replace('evaluate = "prog:evaluate"', 'program = "prog:make_program"')
    text = text.replace('val = "val.jsonl"', 'val = "val.jsonl"\ntest = "test.csv"')
    (project / "factory.toml").write_text(text)
    result = invoke("optimize", str(project / "factory.toml"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "Test split (3 examples): seed 0.000 -> best 1.000" in result.stdout


def test_parquet_data(project: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    rows = [{"id": w, "word": w, "answer": a} for w, a in PAIRS]
    pq.write_table(pa.Table.from_pylist(rows[:4]), project / "train.parquet")
    text = CONFIG.replace('train = "train.jsonl"', 'train = "train.parquet"')
    (project / "pq.toml").write_text(text)
    result = invoke("estimate", str(project / "pq.toml"))
    assert result.exit_code == 0, result.output
    assert "on 4 train / 4 val" in result.stdout


# --------------------------------------------------------------------------- estimate
def test_estimate_counts_rollouts_calls_tokens_and_dollars(project: Path) -> None:
    config = str(project / "config.toml")
    scripted = invoke("estimate", config)
    assert scripted.exit_code == 0, scripted.output
    assert "rollouts: at most 30 in the search (hard cap 30)" in scripted.stdout
    assert "task LM (prog:task_lm): ~30 calls" in scripted.stdout
    assert "unknown price" in scripted.stdout
    priced = invoke(
        "estimate",
        config,
        "--set",
        "models.reflection=openai/gpt-4o-mini",
        "--set",
        "models.task=local",
        "--json",
    )
    assert priced.exit_code == 0, priced.output
    est = json.loads(priced.stdout)
    task, reflection = est["lms"]
    assert task["cost_usd"] == 0.0 and task["calls"] == 30
    assert reflection["price_known"] and reflection["calls"] >= 1
    assert 0 < est["cost_usd"] < 0.1 and est["cost_unknown_for"] == []
    assert calls(project) == 0  # nothing ran


# ------------------------------------------------------------------------ chat seeds
CHAT_CONFIG = CONFIG.replace('initial_prompt = "Answer the question."\n', "").replace(
    '"prog:evaluate"', '"prog:evaluate_chat"'
) + (
    '\n[[policy_optimization.initial_prompt]]\nrole = "system"\ncontent = "Answer the question."\n'
    '\n[[policy_optimization.initial_prompt]]\nrole = "user"\ncontent = "Reply with one word."\n'
)


def test_a_chat_seed_runs_end_to_end_and_the_best_prompt_is_printed_whole(
    project: Path,
) -> None:
    """A chat-message seed in TOML (an array of tables): estimate, optimize (the scripted LMs),
    the best prompt printed whole as messages and written to optimize.json, then resumed."""
    (project / "chat.toml").write_text(CHAT_CONFIG)
    config = str(project / "chat.toml")
    estimate = invoke("estimate", config, "--json")
    assert estimate.exit_code == 0, estimate.output
    assert json.loads(estimate.stdout)["lms"][0]["calls"] == 30
    assert calls(project) == 0

    first = invoke("optimize", config, "--no-progress")
    assert first.exit_code == 0, first.output
    assert "Estimate: gepa on 4 train / 4 val / 0 test examples, budget 30" in first.stdout
    assert "Best prompt (val score 1.000, seed prompt 0.000" in first.stdout
    outcome = json.loads((project / "runs" / "one" / "optimize.json").read_text())
    best = outcome["best_prompt"]
    assert [m["role"] for m in best] == ["system", "user"]
    assert "Give the opposite of the word." in [m["content"] for m in best]
    printed = first.stdout.split("stop: ", 1)[1].split("\n", 1)[1].split("\nRun dir: ")[0]
    assert json.loads(printed) == best  # the whole prompt, every message
    paid = calls(project)
    assert 0 < paid <= 30

    again = invoke("optimize", config, "--no-progress")
    assert again.exit_code == 0, again.output
    assert calls(project) == paid


def test_a_bad_chat_seed_is_one_error_line(project: Path) -> None:
    (project / "bad.toml").write_text(CHAT_CONFIG.replace('role = "user"', 'role = "human"'))
    for command in ("optimize", "estimate"):
        assert_one_line_error(
            invoke(command, str(project / "bad.toml")),
            "bad.toml",
            "initial_prompt: Message 1 of the 'initial_prompt' has the role 'human'; use one of "
            "system, user, assistant, developer.",
        )
    assert calls(project) == 0


# ------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (
            ("[policy_optimization.gepa]", "[policy_optimization.gepa]\nminibatch_sise = 3"),
            ["gepa.minibatch_sise: unknown key; did you mean minibatch_size?"],
        ),
        (("run_dir = ", "rundir = 1\nrun_dir = "), ["rundir: unknown key; did you mean run_dir?"]),
        (
            ('"prog:evaluate"', '"nowhere:evaluate"'),
            ["evaluate: no module named 'nowhere'", "next to the config file"],
        ),
        (('"prog:evaluate"', '"prog:evaluat"'), ["evaluate: module 'prog' has no attribute"]),
        (
            ("max_rollouts = 30", 'max_rollouts = "many"'),
            ["budget.max_rollouts: Input should be a valid integer"],
        ),
        (
            ('train = "train.jsonl"', 'train = "missing.jsonl"'),
            ["data.train: data file", "missing.jsonl", "does not exist"],
        ),
        (('train = "train.jsonl"', 'train = "train.txt"'), ["data.train:", ".jsonl, .json"]),
        (
            ('algorithm = "gepa"', 'algorithm = "gepo"'),
            ["algorithm: unknown algorithm 'gepo'", "gepa, mipro, opro"],
        ),
        (
            ("[policy_optimization.data]", 'task_app_url = "http://x"\n[policy_optimization.data]'),
            ["task_app_url: is for remote jobs"],
        ),
        (
            ('evaluate = "prog:evaluate"', 'evaluate = "prog:evaluate"\nprogram = "prog:program"'),
            ["program: give program"],
        ),
        (
            ("[policy_optimization.gepa]", "[policy_optimization.gepa]\nrun_dir = 'x'"),
            ["gepa.run_dir: set run_dir at the top"],
        ),
        (
            ('task = "prog:task_lm"', ""),
            ["evaluate: it must be callable as evaluate(prompt, example)"],
        ),
        (("max_rollouts = 30", "max_rollouts = 2"), ["cannot score the seed prompt on the 4"]),
    ],
)
def test_bad_configs_are_one_error_line(
    project: Path, change: tuple[str, str], needles: list[str]
) -> None:
    text = CONFIG.replace(*change)
    assert text != CONFIG
    (project / "bad.toml").write_text(text)
    for command in ("optimize", "estimate"):
        assert_one_line_error(invoke(command, str(project / "bad.toml")), "bad.toml", *needles)
    assert calls(project) == 0


def test_bad_data_file_line_and_bad_toml_and_missing_file(project: Path) -> None:
    (project / "val.jsonl").write_text('{"id": "a", "word": "x", "answer": "y"}\n{oops\n')
    assert_one_line_error(
        invoke("optimize", str(project / "config.toml")), "data.val: val.jsonl line 2 is not JSON"
    )
    (project / "broken.toml").write_text("[policy_optimization\nalgorithm = 1")
    assert_one_line_error(invoke("optimize", str(project / "broken.toml")), "is not valid TOML")
    assert_one_line_error(invoke("estimate", str(project / "nope.toml")), "does not exist")
    assert_one_line_error(
        invoke("estimate", str(project / "config.toml"), "--set", "gepa.minibatch=2"),
        "did you mean minibatch_size?",
    )
    assert_one_line_error(
        invoke("estimate", str(project / "config.toml"), "--set", "novalue"),
        "is not key.path=value",
    )


def test_a_hugging_face_dataset_without_datasets_is_a_clear_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    text = CONFIG.replace('train = "train.jsonl"', 'train = "hf:rotten_tomatoes"')
    (project / "hf.toml").write_text(text)
    assert_one_line_error(
        invoke("estimate", str(project / "hf.toml")), "data.train:", "pip install 'policyopt[data]'"
    )


def test_a_hugging_face_dataset_folder(
    project: Path, tmp_path_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real datasets library (offline) reads a dataset folder named relative to the config."""
    pytest.importorskip("datasets")
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    (project / "ds").mkdir()
    (project / "train.jsonl").rename(project / "ds" / "train.jsonl")
    (project / "val.jsonl").rename(project / "ds" / "validation.jsonl")
    text = CONFIG.replace(
        'train = "train.jsonl"', 'train = {hf = "ds", split = "train", limit = 3}'
    )
    (project / "hf.toml").write_text(text.replace('val = "val.jsonl"', 'val = "hf:ds"'))
    result = invoke("estimate", str(project / "hf.toml"), "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)
    assert (est["n_train"], est["n_val"]) == (3, 4)


@pytest.mark.slow
def test_mlflow_tracking_logs_the_run(project: Path) -> None:
    """The config's [tracking.mlflow] names the experiment; --mlflow URI picks the store."""
    pytest.importorskip("mlflow")
    pytest.importorskip("policyopt.tracking.mlflow")
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{project / 'mlflow.db'}"
    unused = f"sqlite:///{project / 'unused.db'}"
    text = (
        CONFIG + f'\n[policy_optimization.tracking.mlflow]\nuri = "{unused}"\nexperiment = "own"\n'
    )
    (project / "tracked.toml").write_text(text)
    result = invoke("optimize", str(project / "tracked.toml"), "--no-progress", "--mlflow", store)
    assert result.exit_code == 0, result.output
    assert not (project / "unused.db").exists()
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("own")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["best_score"] == 1.0
    assert run.data.params["config"].endswith("tracked.toml")
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "best_prompt.txt"} <= artifacts, artifacts  # log_run_dir ran


# --------------------------------------------------------------------------- plugins
EXAMPLES = Path(__file__).parents[3] / "examples" / "own_optimizer"


def test_a_plugin_module_registers_the_users_own_optimizer_for_the_cli(project: Path) -> None:
    """`plugins = ["hill_climb"]` imports the module next to the config before `algorithm` is
    checked, so the user's own registered optimizer runs from the command line."""
    (project / "hill_climb.py").write_text((EXAMPLES / "hill_climb.py").read_text())
    config = (project / "config.toml").read_text()
    config = config.replace(
        'algorithm = "gepa"', 'algorithm = "hill-climb"\nplugins = ["hill_climb"]'
    )
    config = config.split("[policy_optimization.gepa]")[0]
    (project / "plugin.toml").write_text(config)
    try:
        result = invoke("optimize", str(project / "plugin.toml"), "--no-progress")
        assert result.exit_code == 0, result.output
        outcome = json.loads((project / "runs" / "one" / "optimize.json").read_text())
        assert outcome["best_prompt"] == "Give the opposite of the word."
        saved = json.loads((project / "runs" / "one" / "result.json").read_text())
        assert saved["optimizer"] == "hill-climb"
        estimate = invoke("estimate", str(project / "plugin.toml"))
        assert estimate.exit_code == 0 and "hill-climb" in estimate.stdout, estimate.output
    finally:
        sys.modules.pop("hill_climb", None)


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ('plugins = ["no_such_module"]', ("plugins: importing 'no_such_module' failed",)),
        ("plugins = 3", ("plugins: expected a list of module names", "got 3")),
    ],
)
def test_a_bad_plugin_is_one_error_line(project: Path, line: str, needles: tuple[str, ...]) -> None:
    config = (project / "config.toml").read_text()
    (project / "bad.toml").write_text(
        config.replace('algorithm = "gepa"', f'algorithm = "gepa"\n{line}')
    )
    assert_one_line_error(invoke("optimize", str(project / "bad.toml")), *needles)
