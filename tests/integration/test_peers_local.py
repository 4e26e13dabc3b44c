"""Each peer (gepa library, DSPy GEPA, DSPy MIPROv2) on the antonyms task with the local model,
through the harness contract: a CellContext with metered views of the shared models."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from policyopt import LocalLM
from policyopt.bench import CellContext, get_optimizer
from policyopt.lm.metered import MeteredLM
from policyopt.tasks import get_task

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: name -> (budget, settings): small, to keep this test quick on two cores. gepa needs the valset
#: (4) and one step (2 x 3); MIPROv2 with 2 candidates (the zero-shot and the labeled demo sets:
#: no bootstrap pass, two proposer calls, the LM-bound part) needs 12 for one trial (the default
#: program on 4, a trial on 4, its full evaluation on 4).
CASES = {
    "gepa-lib": (16, {}),
    # the equal-preset peer: policyopt's advice proposer in gepa's search; the valset and one step
    "gepa-lib[proposer=advice]": (10, {"proposer": "advice"}),
    "dspy-gepa": (16, {"reflection_max_tokens": 48}),
    "dspy-mipro": (16, {"num_candidates": 2, "proposer_max_tokens": 48}),
}


@pytest.fixture(scope="module")
def reflection_lm() -> Iterator[LocalLM]:
    with LocalLM.for_reflection() as lm:
        yield lm


# A class per peer: ./scripts/test keeps a module's tests on one xdist worker (--dist loadscope)
# but splits a module by class, and the three peers in a row were one of the suite's longest chains.
class TestGepaLib:
    def test_peer_on_antonyms_with_the_local_model(
        self, local_lm: LocalLM, reflection_lm: LocalLM, tmp_path: Path
    ) -> None:
        _peer_on_antonyms("gepa-lib", local_lm, reflection_lm, tmp_path)


class TestGepaLibAdvice:
    def test_peer_on_antonyms_with_the_local_model(
        self, local_lm: LocalLM, reflection_lm: LocalLM, tmp_path: Path
    ) -> None:
        _peer_on_antonyms("gepa-lib[proposer=advice]", local_lm, reflection_lm, tmp_path)


class TestDspyGepa:
    def test_peer_on_antonyms_with_the_local_model(
        self, local_lm: LocalLM, reflection_lm: LocalLM, tmp_path: Path
    ) -> None:
        _peer_on_antonyms("dspy-gepa", local_lm, reflection_lm, tmp_path)


class TestDspyMipro:
    def test_peer_on_antonyms_with_the_local_model(
        self, local_lm: LocalLM, reflection_lm: LocalLM, tmp_path: Path
    ) -> None:
        _peer_on_antonyms("dspy-mipro", local_lm, reflection_lm, tmp_path)


def _peer_on_antonyms(name: str, local_lm: LocalLM, reflection_lm: LocalLM, tmp_path: Path) -> None:
    budget, settings = CASES[name]
    optimizer = get_optimizer(name.split("[")[0])
    missing = optimizer.unavailable()
    if missing is not None or importlib.util.find_spec("gepa") is None:
        pytest.skip(missing or "the `gepa` package is not installed")
    full = get_task("antonyms")
    task = dataclasses.replace(full, train=full.train[:6], val=full.val[:4], test=full.test[:4])
    ctx = CellContext(
        task=task,
        task_lm=MeteredLM(local_lm, **task.lm_kwargs),
        reflection_lm=MeteredLM(reflection_lm),
        budget=budget,
        seed=0,
        n_jobs=2,
        run_dir=tmp_path,
        settings=settings,
    )
    outcome = optimizer.run(ctx)

    assert isinstance(outcome.best_prompt, str) and outcome.best_prompt.strip()
    assert 0 < outcome.rollouts <= budget
    assert outcome.best_val_score is not None and 0.0 <= outcome.best_val_score <= 1.0
    # the peer's calls reached the real models through the cell's views, with tokens counted
    task_usage, reflection_usage = ctx.task_lm.usage, ctx.reflection_lm.usage
    assert task_usage.calls >= outcome.rollouts and task_usage.prompt_tokens > 0
    assert reflection_usage.calls > 0 and reflection_usage.completion_tokens > 0
    assert task_usage.errors == reflection_usage.errors == 0
    # the best prompt runs in the task's own program
    score = task.program(ctx.task_lm).evaluate(outcome.best_prompt, task.test[0])
    assert 0.0 <= float(score.score) <= 1.0
    assert (tmp_path / f"{optimizer.name}.log").stat().st_size > 0
