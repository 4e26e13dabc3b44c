"""JobConfig: TOML in both spellings, id ranges, overrides, errors with paths, round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from policyopt import GEPA, MIPRO
from policyopt.errors import ConfigError
from policyopt.remote.config import JobConfig, job_config_schema, resolve_ids
from policyopt.tasks import get_task

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_FILE = ROOT / "docs" / "job_config.schema.json"
EXAMPLES = sorted((ROOT / "examples" / "jobs").glob("*.toml"))

GEPA_TOML = """
[policy_optimization]
algorithm = "gepa"
initial_prompt = "Answer the question."
seed = 3

[policy_optimization.task_app]
url = "http://127.0.0.1:8001/"
api_key = "k"

[policy_optimization.ids]
train = {start = 0, end = 6}
val = ["a", "b", 7]
test = {start = 100, end = 110, step = 5}

[policy_optimization.budget]
max_rollouts = 50
max_cost_usd = 1.5

[policy_optimization.models]
reflection = "openai/gpt-4o-mini"
policy = {model = "m", temperature = 0.0}

[policy_optimization.gepa]
minibatch_size = 4
merge = false
"""


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "algorithm": "gepa",
        "task_app": {"url": "http://127.0.0.1:8001"},
        "initial_prompt": "p",
        "train_ids": ["a", "b"],
        "budget": {"max_rollouts": 10},
    }
    data.update(changes)
    return data


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        JobConfig.from_dict(data)
    return str(info.value)


# --------------------------------------------------------------------------------- loading
def test_toml_loads_with_ranges_and_int_ids() -> None:
    job = JobConfig.from_toml(GEPA_TOML)
    assert job.algorithm == "gepa"
    assert job.task_app.url == "http://127.0.0.1:8001"  # trailing slash dropped
    assert job.train_ids == ["0", "1", "2", "3", "4", "5"]  # end is exclusive
    assert job.val_ids == ["a", "b", "7"]
    assert job.test_ids == ["100", "105"]
    assert job.gepa == {"minibatch_size": 4, "merge": False}
    assert job.models.policy == {"model": "m", "temperature": 0.0}
    assert job.budget.max_cost_usd == 1.5 and job.seed == 3


def test_both_spellings_mean_the_same() -> None:
    old = GEPA_TOML.replace("[policy_optimization", "[prompt_learning")
    assert JobConfig.from_toml(old) == JobConfig.from_toml(GEPA_TOML)
    both = GEPA_TOML + "\n[prompt_learning]\nalgorithm = 'gepa'\n"
    with pytest.raises(ConfigError, match="both"):
        JobConfig.from_toml(both)


def test_from_dict_accepts_the_wrapped_and_the_bare_table() -> None:
    bare = minimal()
    assert JobConfig.from_dict({"policy_optimization": bare}) == JobConfig.from_dict(bare)
    assert JobConfig.from_dict({"prompt_learning": bare}) == JobConfig.from_dict(bare)
    assert "everything goes inside" in error_of({"policy_optimization": bare, "x": 1})


def test_from_toml_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(GEPA_TOML)
    assert JobConfig.from_toml(path) == JobConfig.from_toml(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        JobConfig.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        JobConfig.from_toml("[policy_optimization\nalgorithm = 1")


def test_synth_style_flat_task_app_keys() -> None:
    flat = {k: v for k, v in minimal().items() if k != "task_app"}
    job = JobConfig.from_dict(flat | {"task_app_url": "http://h:1", "task_app_api_key": "s"})
    assert job.task_app.url == "http://h:1" and job.task_app.api_key == "s"
    clash = minimal(task_app_url="http://other:2")
    assert "conflicts with task_app.url" in error_of(clash)


# -------------------------------------------------------------------------------- ids
@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ([1, "b", 3], ["1", "b", "3"]),
        ({"end": 3}, ["0", "1", "2"]),
        ({"start": 2, "end": 8, "step": 3}, ["2", "5"]),
        ((), []),
    ],
)
def test_resolve_ids(value: Any, ids: list[str]) -> None:
    assert resolve_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"start": 5, "end": 5}, "end is exclusive"),
        ({"start": 0}, "needs 'end'"),
        ({"start": 0, "end": 2, "stop": 1}, "unknown key"),
        ({"start": 0, "end": 2, "step": 0}, "step must be >= 1"),
        ({"start": 0, "end": True}, "must be an integer"),
        (["a", "a"], "duplicate id 'a'"),
        (["a", 1.5], "id 1 must be a string or an integer"),
        ([""], "empty string"),
        ("abc", "list of strings"),
        ({"end": 10**9}, "1,000,000"),
    ],
)
def test_bad_ids(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_ids(value)


def test_ids_table_and_flat_fields_are_one_thing() -> None:
    flat = JobConfig.from_dict(minimal(train_ids=["x"], val_ids={"end": 2}))
    table = {k: v for k, v in minimal().items() if k != "train_ids"}
    spread = JobConfig.from_dict(table | {"ids": {"train": ["x"], "val": {"end": 2}}})
    assert flat == spread
    assert "ids.train: conflicts with train_ids" in error_of(minimal(ids={"train": ["y"]}))
    assert "ids.trian: unknown key; did you mean train?" in error_of(minimal(ids={"trian": []}))


def test_train_ids_are_required_and_test_ids_are_held_out() -> None:
    assert "train_ids: at least one" in error_of(minimal(train_ids=[]))
    missing = {k: v for k, v in minimal().items() if k != "train_ids"}
    assert "train_ids: required key is missing" in error_of(missing)
    text = error_of(minimal(test_ids=["b", "z"]))
    assert "test_ids: 1 id(s) also in train_ids" in text


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"sed": 1}, "sed: unknown key; did you mean seed?"),
        (
            {"budget": {"max_rolouts": 5}},
            "budget.max_rolouts: unknown key; did you mean max_rollouts?",
        ),
        (
            {"task_app": {"url": "http://h", "apikey": "k"}},
            "task_app.apikey: unknown key; did you mean api_key?",
        ),
        ({"models": {"reflexion": "x"}}, "models.reflexion: unknown key; did you mean reflection?"),
        (
            {"gepa": {"minibatch_sise": 5}},
            "gepa.minibatch_sise: unknown key; did you mean minibatch_size?",
        ),
        ({"gepa": {"run_dir": "/etc"}}, "gepa.run_dir: not a job setting: the job server gives"),
        (
            {"gepa": {"max_rollouts": 5}},
            "gepa.max_rollouts: not a job setting: set it in budget.max_rollouts",
        ),
        (
            {"gepa": {"minibatch_size": 0}},
            "gepa.minibatch_size: Input should be greater than or equal to 1 (got int 0)",
        ),
        (
            {"gepa": {"candidate_selection": "best"}},
            "gepa.candidate_selection: unknown candidate_selection 'best'; built-in: pareto",
        ),
        (
            {"budget": {"max_rollouts": 0}},
            "budget.max_rollouts: Input should be greater than or equal to 1",
        ),
        ({"budget": {}}, "budget.max_rollouts: required"),
        (
            {"budget": {"max_rollouts": 5, "max_time_s": -1}},
            "budget.max_time_s: Input should be greater than 0",
        ),
        ({"task_app": {"url": "ftp://h"}}, "task_app.url: must start with http:// or https://"),
        (
            {"task_app": {"url": "http://h", "api_key": "a", "api_key_env": "B"}},
            "task_app: give api_key or api_key_env, not both",
        ),
        ({"initial_prompt": ""}, "initial_prompt: the seed prompt is empty; give its text"),
        ({"seed": "x"}, "seed: Input should be a valid integer"),
    ],
)
def test_errors_name_the_dotted_path(changes: dict[str, Any], line: str) -> None:
    text = error_of({"policy_optimization": minimal(**changes)})
    assert text.startswith("Invalid job config:")
    assert f"  policy_optimization.{line}" in text


@pytest.mark.parametrize("algorithm", ["gpea", "dspy", "", 3, None])
def test_a_bad_algorithm_lists_the_valid_names(algorithm: Any) -> None:
    text = error_of(minimal(algorithm=algorithm))
    assert "algorithm: unknown algorithm" in text
    assert "gepa, mipro" in text


def test_algorithm_is_required_and_case_insensitive() -> None:
    no_algorithm = {k: v for k, v in minimal().items() if k != "algorithm"}
    assert "algorithm: required key is missing" in error_of(no_algorithm)
    assert JobConfig.from_dict(minimal(algorithm="GEPA")).algorithm == "gepa"


def test_mipro_settings_are_checked_as_a_whole() -> None:
    # a budget alone is a valid MIPRO job (MIPRO plans it); auto with counts is not
    assert JobConfig.from_dict(minimal(algorithm="mipro")).algorithm == "mipro"
    text = error_of(minimal(algorithm="mipro", mipro={"auto": "light", "num_trials": 3}))
    assert "mipro: give either auto='light'|'medium'|'heavy' or num_candidates" in text
    job = JobConfig.from_dict(minimal(algorithm="mipro", mipro={"auto": "light"}))
    assert job.optimizer_kwargs() == {"auto": "light", "seed": 0, "max_rollouts": 10}


def test_a_mipro_job_whose_budget_cannot_run_a_trial_is_refused_at_submit() -> None:
    # 2 train ids, validated on them: seed 2 + bootstrap 2 + one trial + a full evaluation = 7
    text = error_of(minimal(algorithm="mipro", budget={"max_rollouts": 6}))
    assert "budget.max_rollouts" in text and "cannot run a single trial" in text
    assert "at least 7 rollouts" in text
    job = JobConfig.from_dict(minimal(algorithm="mipro", budget={"max_rollouts": 7}))
    assert job.optimizer_kwargs()["max_rollouts"] == 7


def test_the_inactive_section_is_kept_but_its_keys_are_checked() -> None:
    job = JobConfig.from_dict(minimal(mipro={"num_trials": 3}))  # gepa job, mipro section
    assert job.mipro == {"num_trials": 3}
    assert "mipro.num_trails: unknown key; did you mean num_trials?" in error_of(
        minimal(mipro={"num_trails": 3})
    )


def test_several_problems_are_all_reported() -> None:
    text = error_of(minimal(sed=1, budget={"max_rollouts": 0, "max_rolouts": 1}))
    assert "sed: unknown key" in text
    assert "budget.max_rolouts: unknown key" in text
    assert "budget.max_rollouts: Input should be greater than or equal to 1" in text


def test_non_mapping_inputs() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        JobConfig.from_dict(["algorithm"])  # type: ignore[arg-type]
    assert "must be a table" in error_of({"policy_optimization": 3})


# ---------------------------------------------------------------------------- overrides
def test_overrides_are_applied_before_validation() -> None:
    job = JobConfig.from_dict(
        minimal(
            gepa={"minibatch_size": 3},
            overrides={
                "gepa.minibatch_size": 5,
                "budget.max_rollouts": 100,
                "policy_optimization.seed": 9,  # the Synth-style prefix is accepted
                "task_app_url": "http://other:9",
                "ids.val": {"start": 0, "end": 2},
                "models.policy.temperature": 0.7,
            },
        )
    )
    assert job.gepa == {"minibatch_size": 5}
    assert job.budget.max_rollouts == 100 and job.seed == 9
    assert job.task_app.url == "http://other:9"
    assert job.val_ids == ["0", "1"]
    assert job.models.policy == {"temperature": 0.7}
    assert job.overrides["gepa.minibatch_size"] == 5  # kept, for the record


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("gepa.minibatch_sise", "gepa.minibatch_sise: unknown key; did you mean minibatch_size?"),
        ("budget.max_rolouts", "budget.max_rolouts: unknown key; did you mean max_rollouts?"),
        ("nope", "nope: unknown key"),
        ("seed.x", "seed is not a table"),
        ("gepa", "name one gepa setting"),
        ("gepa.run_dir", "not a job setting"),
        ("ids.dev", "ids.train, ids.val or ids.test"),
        ("overrides.x", "cannot override overrides"),
        ("a..b", "not a dotted key"),
    ],
)
def test_an_override_of_a_key_that_does_not_exist_is_an_error(key: str, message: str) -> None:
    text = error_of(minimal(overrides={key: 1}))
    assert f"overrides[{key!r}]" in text
    assert message in text


def test_an_override_value_is_validated_like_any_value() -> None:
    text = error_of(minimal(overrides={"budget.max_rollouts": -3}))
    assert "budget.max_rollouts: Input should be greater than or equal to 1" in text


# ---------------------------------------------------------------------------- outputs
@pytest.mark.parametrize(
    "source", [GEPA_TOML, *EXAMPLES], ids=lambda s: getattr(s, "name", "inline")
)
def test_round_trips(source: Any) -> None:
    job = JobConfig.from_toml(source)
    data = job.to_dict()
    assert json.loads(json.dumps(data)) == data  # JSON-able
    assert JobConfig.from_dict(data) == job
    assert JobConfig.from_dict(json.loads(json.dumps(data))) == job
    assert JobConfig.from_toml(job.to_toml()) == job


def test_optimizer_kwargs_build_the_optimizers() -> None:
    job = JobConfig.from_toml(GEPA_TOML)
    kwargs = job.optimizer_kwargs()
    assert kwargs == {
        "minibatch_size": 4,
        "merge": False,
        "seed": 3,
        "max_rollouts": 50,
        "max_cost_usd": 1.5,
    }
    gepa = GEPA(reflection_lm=lambda text: "x", **kwargs)
    assert gepa.settings.minibatch_size == 4 and gepa.settings.max_rollouts == 50
    mipro = JobConfig.from_dict(minimal(algorithm="mipro", mipro={"auto": "light"}))
    built = MIPRO(proposer_lm=lambda text: "x", **mipro.optimizer_kwargs())
    assert built.settings.auto == "light"


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    job = JobConfig.from_dict(minimal(task_app={"url": "http://h", "api_key_env": "MY_KEY"}))
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_KEY"):
        job.task_app.resolved_api_key()
    monkeypatch.setenv("MY_KEY", "secret")
    assert job.task_app.resolved_api_key() == "secret"
    assert "secret" not in json.dumps(job.to_dict())  # the config holds the name, not the key


def test_example_job_files_name_real_antonyms_ids() -> None:
    task = get_task("antonyms")
    splits = {name: {e["id"] for e in task.split(name)} for name in ("train", "val", "test")}
    assert EXAMPLES, "examples/jobs/*.toml are missing"
    for path in EXAMPLES:
        job = JobConfig.from_toml(path)
        assert set(job.train_ids) <= splits["train"], path
        assert set(job.val_ids) <= splits["val"], path
        assert set(job.test_ids) <= splits["test"], path


# ------------------------------------------------------------------------------- schema
def test_the_committed_schema_is_up_to_date() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == job_config_schema(), (
        "docs/job_config.schema.json is stale: regenerate it with "
        "python -c 'from policyopt.remote.config import write_schema; "
        'write_schema("docs/job_config.schema.json")\''
    )


def test_the_schema_accepts_the_examples_and_rejects_unknown_keys() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = job_config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    for source in [GEPA_TOML, *(p.read_text() for p in EXAMPLES)]:
        data = tomllib.loads(source)
        table = data.get("policy_optimization") or data["prompt_learning"]
        assert not list(validator.iter_errors(table))
        assert list(validator.iter_errors({**table, "sed": 1}))
    assert not list(validator.iter_errors(JobConfig.from_toml(GEPA_TOML).to_dict()))


# ------------------------------------------------------------------------------- fuzzing
_EDGE = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["/etc", "../x", "a\\..\\b", "\x00", {"end": 2}, {"start": 1}]),
)
_FIELDS = [
    "algorithm",
    "task_app",
    "initial_prompt",
    "train_ids",
    "val_ids",
    "budget",
    "gepa",
    "seed",
    "overrides",
    "models",
]


@given(field=st.sampled_from(_FIELDS), value=_EDGE)
@example(field="budget", value={"max_rollouts": True})
@example(field="gepa", value={"run_dir": "/etc"})
@example(field="overrides", value={"gepa.n_jobs": math.nan})
@example(field="initial_prompt", value='\x7f\x00"\\ é')  # control characters in TOML
def test_near_valid_configs_give_a_job_or_a_config_error(field: str, value: Any) -> None:
    """A valid config with one field swapped for an edge case: a JobConfig or a ConfigError."""
    try:
        job = JobConfig.from_dict(minimal(**{field: value}))
    except ConfigError:
        return
    assert type(job.budget.max_rollouts) is int and job.budget.max_rollouts >= 1
    assert type(job.seed) is int
    assert all(isinstance(i, str) for i in job.train_ids)
    assert JobConfig.from_dict(job.to_dict()) == job
    assert JobConfig.from_toml(job.to_toml()) == job


# --------------------------------------------------------------------- chat-message seeds
CHAT_SEED = [
    {"role": "system", "content": "Answer."},
    {"role": "user", "content": "Word:", "name": "question"},
]


def test_a_chat_seed_from_json_toml_and_the_schema() -> None:
    """A job's seed may be chat messages (JSON or TOML), kept as messages and round-tripped."""
    sent = json.loads(json.dumps({"policy_optimization": minimal(initial_prompt=CHAT_SEED)}))
    job = JobConfig.from_dict(sent)
    assert job.initial_prompt == CHAT_SEED
    assert JobConfig.from_toml(job.to_toml()) == job
    toml = GEPA_TOML.replace(
        'initial_prompt = "Answer the question."\n',
        "initial_prompt = [\n"
        '  {role = "system", content = "Answer."},\n'
        '  {role = "user", content = "Word:", name = "question"},\n'
        "]\n",
    )
    assert JobConfig.from_toml(toml).initial_prompt == CHAT_SEED
    bad = error_of(minimal(initial_prompt=[{"role": "bot", "content": "x"}]))
    assert bad.splitlines()[1:] == [
        "  initial_prompt: Message 0 of the 'initial_prompt' has the role 'bot'; use one of "
        "system, user, assistant, developer."
    ]
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(job_config_schema())
    assert not list(validator.iter_errors(job.to_dict()))
    for wrong in ([], [{"role": "bot", "content": "x"}], [{"role": "user"}], {}, ""):
        assert list(validator.iter_errors(minimal(initial_prompt=wrong))), wrong


def test_a_job_with_a_chat_seed_reaches_the_task_app_as_messages(
    tmp_path: Path, app_url: str, scripted: Any
) -> None:
    """The job server hands the chat seed to the optimizer as is; every rollout reaches the
    task app (over HTTP) as messages of the seed's roles, and the best prompt is messages."""
    from policyopt.remote.server.runner import JobRunner
    from policyopt.remote.store import JobState, JobStore
    from policyopt.testing import ScriptedLM
    from tests.unit.remote.conftest import API_KEY, wait_for

    config = JobConfig.from_dict(
        minimal(
            initial_prompt=CHAT_SEED,
            task_app={"url": app_url, "api_key": API_KEY},
            train_ids=["hot", "big"],
            val_ids=["wet"],
            budget={"max_rollouts": 12},
            gepa={"minibatch_size": 2, "n_jobs": 2},
        )
    )
    store = JobStore(tmp_path / "jobs.db")
    runner = JobRunner(
        store,
        tmp_path / "runs",
        max_concurrent_jobs=1,
        reflection_lm_factory=lambda _config: ScriptedLM(
            lambda text: "```\nSay the opposite.\n```"
        ),
        poll_s=0.05,
    )
    runner.start()
    try:
        record = store.create_job(
            owner="o", algorithm="gepa", config=config.to_dict(), max_rollouts=12
        )
        runner.submit(record.id)
        terminal = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}

        def finished() -> Any:
            job = store.get_job(record.id)
            return job if job is not None and job.status in terminal else None

        assert wait_for(finished, 60)
        job = store.get_job(record.id)
    finally:
        runner.shutdown(timeout=10)
        store.close()
    assert job is not None and job.status == JobState.SUCCEEDED, job
    prompts = [prompt for prompt, _example, _policy in scripted.calls]
    assert prompts and prompts[0] == CHAT_SEED
    for prompt in prompts:
        assert [(m["role"], m.get("name")) for m in prompt] == [
            ("system", None),
            ("user", "question"),
        ]
    assert any(m["content"] == "Say the opposite." for p in prompts for m in p)
    best = job.best_prompt
    assert isinstance(best, list) and [m["role"] for m in best] == ["system", "user"]
    assert job.best_score == 1.0
