"""The peer adapters (gepa library, DSPy GEPA, DSPy MIPROv2) on a tiny task with scripted LMs."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from policyopt.bench import BenchOptimizer, CellContext, get_optimizer
from policyopt.bench.peers import DSPyGEPA, DSPyMIPROv2, GEPALibrary
from policyopt.bench.peers._common import peer_log
from policyopt.bench.peers.dspy_mipro import plan, planned_metric_calls
from policyopt.errors import ConfigError, EvaluationError
from policyopt.gepa.config import GEPASettings
from policyopt.lm.metered import MeteredLM
from policyopt.tasks.base import Task
from policyopt.testing import ScriptedLM
from policyopt.types import Score

HAVE_GEPA = importlib.util.find_spec("gepa") is not None
HAVE_DSPY = importlib.util.find_spec("dspy") is not None
needs_gepa = pytest.mark.skipif(not HAVE_GEPA, reason="the `gepa` package is not installed")
needs_dspy = pytest.mark.skipif(
    not (HAVE_GEPA and HAVE_DSPY), reason="the `dspy` (and `gepa`) packages are not installed"
)
PEERS = [
    pytest.param(GEPALibrary, marks=needs_gepa, id="gepa-lib"),
    pytest.param(DSPyGEPA, marks=needs_dspy, id="dspy-gepa"),
    pytest.param(DSPyMIPROv2, marks=needs_dspy, id="dspy-mipro"),
]
GEPA_PEERS = PEERS[:2]

PAIRS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("wet", "dry"), ("fast", "slow"),
    ("day", "night"), ("yes", "no"), ("in", "out"), ("left", "right"), ("old", "new"),
    ("high", "low"), ("near", "far"), ("black", "white"), ("full", "empty"),
]  # fmt: skip
OPPOSITE = dict(PAIRS)
ROWS = [{"id": w, "word": w, "answers": [a]} for w, a in PAIRS]
RULE = "Give the opposite of the word."


class CountingMetric:
    """The tiny task's metric (right when the reply names the opposite), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, output: str, example: dict[str, Any]) -> Score:
        with self._lock:
            self.calls += 1
        ok = example["answers"][0] in output.lower()
        feedback = (
            "Correct."
            if ok
            else f"Wrong: expected {example['answers'][0]!r}. Tell the assistant to give the "
            "opposite of the word."
        )
        return Score(float(ok), feedback=feedback, output=output)


def tiny_task(metric: CountingMetric | None = None) -> Task:
    return Task(
        name="tiny",
        description="reply with the opposite of a word",
        seed_prompt="Answer the question.",
        reference_prompt=RULE,
        train=ROWS[:6],
        val=ROWS[6:10],
        test=ROWS[10:],
        render_input=lambda e: f"Input: {e['word']}\nAnswer:",
        metric=metric or CountingMetric(),
        lm_kwargs={"max_tokens": 8},
    )


def _word(prompt: str) -> str:
    found = re.findall(r"Input: (\w+)\nAnswer:", prompt)
    return found[-1] if found else ""


def rule_follower(prompt: str) -> str:
    """A task model that names the opposite only when told to."""
    return OPPOSITE.get(_word(prompt), "?") if "opposite" in prompt.lower() else "I do not know."


def make_ctx(
    tmp_path: Path,
    *,
    budget: int = 40,
    task_script: Callable[[str], str] = rule_follower,
    reflection: ScriptedLM | None = None,
    metric: CountingMetric | None = None,
    **extra: Any,
) -> tuple[CellContext, ScriptedLM, ScriptedLM]:
    task_lm = ScriptedLM(task_script)
    reflection_lm = reflection or ScriptedLM(lambda prompt: RULE)
    ctx = CellContext(
        task=tiny_task(metric),
        task_lm=MeteredLM(task_lm),
        reflection_lm=MeteredLM(reflection_lm),
        budget=budget,
        seed=0,
        n_jobs=2,
        run_dir=tmp_path / "cell",
        **extra,
    )
    return ctx, task_lm, reflection_lm


@pytest.mark.parametrize("peer", PEERS)
def test_peer_finds_the_rule_through_the_cells_lms_within_budget(
    peer: type[BenchOptimizer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metric = CountingMetric()
    ctx, task_lm, reflection_lm = make_ctx(tmp_path, budget=60, metric=metric)
    optimizer = peer()
    assert isinstance(optimizer, BenchOptimizer) and optimizer.unavailable() is None

    outcome = optimizer.run(ctx)

    assert isinstance(outcome.best_prompt, str) and RULE in outcome.best_prompt
    assert outcome.best_val_score == 1.0
    # every model call went through the cell's metered views, to the scripted models
    assert ctx.task_lm.usage.calls == task_lm.calls > 0
    assert ctx.reflection_lm.usage.calls == reflection_lm.calls > 0
    rendered = {ctx.task.render_input(row) for row in ROWS}
    assert all(any(p.endswith(r) for r in rendered) for p in task_lm.prompts)
    assert any("Answer the question." in p for p in reflection_lm.prompts)
    # the rollouts are the task program's runs, one task-model call each, within the budget
    assert outcome.rollouts == task_lm.calls
    if peer is DSPyMIPROv2:
        assert outcome.rollouts == metric.calls  # its true metric calls, not its plan
        assert outcome.rollouts <= outcome.details["planned_metric_calls"]["total"]
    assert 0 < outcome.rollouts <= ctx.budget
    # the curve: best val score after so many rollouts, rising, ending at the best
    xs = [x for x, _ in outcome.curve]
    ys = [y for _, y in outcome.curve]
    assert xs == sorted(xs) and ys == sorted(ys) and 0 < xs[-1] <= outcome.rollouts
    assert ys[-1] == outcome.best_val_score
    assert outcome.details["version"]
    # quiet: the peer's chatter went to its log in the run dir, not to the console
    assert capsys.readouterr() == ("", "")
    assert (ctx.run_dir / f"{optimizer.name}.log").stat().st_size > 0


def _noisy_task_model(prompt: str) -> str:
    """Right on a pseudo-random half of (instruction, word) pairs: candidates keep improving on
    some examples and not others, so gepa accepts, evaluates on the valset and merges often."""
    instruction = prompt.split("\n\nInput:")[0]
    word = _word(prompt)
    digest = hashlib.sha256(f"{instruction}|{word}".encode()).digest()
    return OPPOSITE.get(word, "?") if digest[0] % 2 else "no"


def _counting_reflection() -> ScriptedLM:
    count = iter(range(10**6))
    return ScriptedLM(lambda prompt: f"Variant number {next(count)} of the instruction.")


@pytest.mark.parametrize("peer", GEPA_PEERS)
@pytest.mark.parametrize("budget", [10, 17, 26, 41, 63])
def test_gepa_peers_never_exceed_the_budget_and_use_most_of_it(
    peer: type[BenchOptimizer], budget: int, tmp_path: Path
) -> None:
    ctx, task_lm, _ = make_ctx(
        tmp_path, budget=budget, task_script=_noisy_task_model, reflection=_counting_reflection()
    )
    outcome = peer().run(ctx)
    assert outcome.rollouts == task_lm.calls <= budget
    # stops only when the next step might not fit: two minibatches, or a merge and the valset
    assert outcome.rollouts >= budget - max(2 * 3, 4 + 4)
    assert outcome.details["gepa_metric_calls"] == outcome.rollouts


@pytest.mark.parametrize("peer", GEPA_PEERS)
def test_gepa_peers_refuse_a_budget_below_one_step(
    peer: type[BenchOptimizer], tmp_path: Path
) -> None:
    ctx, task_lm, _ = make_ctx(tmp_path, budget=9)  # valset 4 + two minibatches of 3 = 10
    with pytest.raises(ConfigError, match="at least 10"):
        peer().run(ctx)
    assert task_lm.calls == 0


def test_mipro_plan_fits_the_budget_from_dspys_stages() -> None:
    shape = {
        "num_candidates": 4,
        "minibatch_size": 4,
        "max_bootstrapped_demos": 4,
        "max_labeled_demos": 4,
        "full_eval_steps": 5,
    }
    stages = planned_metric_calls(9, 6, 4, **shape)
    # 2 bootstrapped demo sets over 6 examples, the default program, 9 trials, 2 full evals
    assert stages == {
        "bootstrap": 12,
        "default_program": 4,
        "minibatch_trials": 36,
        "full_evals": 8,
        "total": 60,
    }
    assert plan(60, 6, 4, **shape) == (9, stages)
    assert plan(63, 6, 4, **shape)[0] == 9  # a tenth trial needs 4 more
    assert planned_metric_calls(3, 6, 4, **{**shape, "max_bootstrapped_demos": 0})["bootstrap"] == 0
    with pytest.raises(ConfigError, match="cannot run one trial"):
        plan(23, 6, 4, **shape)


@pytest.mark.parametrize("peer", PEERS)
def test_unknown_setting_is_a_config_error(peer: type[BenchOptimizer], tmp_path: Path) -> None:
    ctx, task_lm, _ = make_ctx(tmp_path, settings={"minibatch": 3})
    with pytest.raises(ConfigError, match="minibatch"):
        peer().run(ctx)
    assert task_lm.calls == 0


@pytest.mark.parametrize("peer", [GEPALibrary, DSPyGEPA])
def test_a_dead_task_model_fails_the_cell(peer: type[BenchOptimizer], tmp_path: Path) -> None:
    if peer().unavailable():
        pytest.skip(str(peer().unavailable()))

    def dead(prompt: str) -> str:
        raise ConnectionError("server gone")

    ctx, _, _ = make_ctx(tmp_path, task_script=dead)
    with pytest.raises(
        EvaluationError, match="all .* runs of the task program failed.*server gone"
    ):
        peer().run(ctx)


@pytest.mark.parametrize(
    ("peer", "package"),
    [(GEPALibrary, "gepa"), (DSPyGEPA, "dspy"), (DSPyGEPA, "gepa"), (DSPyMIPROv2, "dspy")],
)
def test_unavailable_names_the_missing_package(
    peer: type[BenchOptimizer], package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    assert peer().unavailable() == (
        f"the `{package}` package is not installed: pip install 'policyopt[peers]'"
    )


def test_registry_makes_the_peers_by_name() -> None:
    for name, cls in [
        ("gepa-lib", GEPALibrary),
        ("dspy-gepa", DSPyGEPA),
        ("dspy-mipro", DSPyMIPROv2),
    ]:
        optimizer = get_optimizer(name)
        assert isinstance(optimizer, cls) and optimizer.name == name


def test_importing_the_peers_imports_neither_gepa_nor_dspy() -> None:
    import subprocess

    code = (
        "import sys, policyopt.bench.peers; "
        "print(sorted(m for m in ('gepa', 'dspy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_peer_log_routes_this_contexts_output_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("dspy.some.module")
    peer_logger = logging.getLogger("dspy")
    before = (peer_logger.level, peer_logger.propagate, list(peer_logger.handlers))
    outside: list[str] = []

    def other_cell() -> None:  # a thread started elsewhere: not this context
        print("other cell")
        outside.append("done")

    with peer_log(tmp_path, "peer"):
        print("to the log")
        sys.stderr.write("progress bar\n")
        logger.warning("a peer's log line")
        thread = threading.Thread(target=other_cell)
        thread.start()
        thread.join()
    print("after")
    text = (tmp_path / "peer.log").read_text()
    assert "to the log" in text and "progress bar" in text and "a peer's log line" in text
    assert "other cell" not in text and "after" not in text
    assert capsys.readouterr() == ("other cell\nafter\n", "")
    # the peers' loggers and the streams are as they were
    assert (peer_logger.level, peer_logger.propagate, list(peer_logger.handlers)) == before
    assert outside == ["done"] and type(sys.stdout).__name__ != "_Router"


@needs_gepa
def test_gepa_lib_with_policyopts_advice_proposer(tmp_path: Path) -> None:
    """The equal-preset peer: gepa's search with policyopt's small-model proposer through
    gepa's propose_new_texts hook (the advice prompt; an echo of it rejected and re-asked)."""

    def reflect(prompt: str) -> str:
        echo = "Rewrite the advice as one instruction to the assistant."
        return RULE if "was rejected" in prompt else echo

    reflection = ScriptedLM(reflect)
    ctx, _, _ = make_ctx(
        tmp_path, budget=60, reflection=reflection, settings={"proposer": "advice"}
    )
    outcome = GEPALibrary().run(ctx)
    assert outcome.best_prompt == RULE and outcome.best_val_score == 1.0
    first = reflection.prompts[0]
    assert "Rewrite the advice as one instruction" in first  # policyopt's advice template
    assert "Tell the assistant to give the opposite of the word." in first  # the shared advice
    assert any("was rejected" in p for p in reflection.prompts)  # the echo, re-asked
    assert outcome.details["settings"]["reflection_template"] == "advice"
    assert outcome.details["reflection_calls"] == reflection.calls == ctx.reflection_lm.usage.calls
    with pytest.raises(ConfigError, match="proposer must be"):
        GEPALibrary().run(make_ctx(tmp_path / "b", settings={"proposer": "mine"})[0])


@needs_gepa
def test_policyopt_gepa_with_the_gepa_librarys_template(tmp_path: Path) -> None:
    """The other equal-template run: policyopt's GEPA asking with gepa's own meta-prompt."""
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    from policyopt import GEPA, Program

    settings = GEPASettings(max_rollouts=10, reflection_template="gepa-lib")
    theirs = InstructionProposalSignature.default_prompt_template
    head = theirs.split("<curr_param>")[0]
    assert settings.reflection_template.startswith(head)
    assert "{current}" in settings.reflection_template
    assert "{records}" in settings.reflection_template and "<side_info>" not in str(settings)
    reflection = ScriptedLM(lambda prompt: f"```\n{RULE}\n```")
    task, metric = tiny_task(), CountingMetric()
    program = Program(
        task.seed_prompt,
        lambda prompt, ex: metric(rule_follower(f"{prompt}\n\n{task.render_input(ex)}"), ex),
    )
    result = GEPA(
        reflection_lm=reflection, max_rollouts=30, reflection_template="gepa-lib", progress=False
    ).optimize(program, task.train, task.val)
    assert result.best_prompt == RULE
    first = reflection.prompts[0]
    assert first.startswith(head) and "Answer the question." in first and "### Example 1" in first
