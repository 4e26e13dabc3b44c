"""optimize_dspy on a real two-predictor DSPy program: the embedded model reached through DSPy's
own LM client (``dspy.LM`` on the local OpenAI-compatible server), GEPA's reflection on the
embedded model too."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyopt import LocalLM, OptimizationResult

dspy = pytest.importorskip("dspy")

from policyopt.integrations.dspy import PlainAdapter, optimize_dspy  # noqa: E402
from policyopt.integrations.dspy.examples import (  # noqa: E402
    CityCountry,
    city_country_data,
    country_metric,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET = 13  # the seed on 3 val examples (6 model calls), then one GEPA step (2 + 2 + 3)


@pytest.mark.timeout(600)  # ~1 min on a quiet 2-core machine; room for a loaded one
def test_gepa_optimizes_a_two_predictor_dspy_program(local_lm: LocalLM, tmp_path: Path) -> None:
    train, val, _ = city_country_data(0, n_train=4, n_val=3, n_test=0)
    task_lm = dspy.LM(
        f"openai/{LocalLM.MODEL_NAME}",
        api_base=local_lm.api_base,
        api_key="sk-local",
        temperature=0.0,
        max_tokens=16,
        stop=["\n"],
        cache=False,
        num_retries=0,
    )
    module = CityCountry()
    with (
        LocalLM.for_reflection(n_parallel=1) as reflection,
        dspy.context(lm=task_lm, adapter=PlainAdapter()),
    ):
        found = optimize_dspy(
            module,
            country_metric,
            train,
            val,
            optimizer="gepa",
            lm=reflection,
            max_rollouts=BUDGET,
            n_jobs=2,
            minibatch_size=2,
            merge=False,
            progress=False,
            run_dir=str(tmp_path / "run"),
        )
    result = found.result
    assert result.optimizer == "gepa" and result.n_rollouts <= BUDGET
    seed = result.candidates[0]
    assert seed.origin == "seed" and len(seed.val_scores) == 3
    assert result.best_score >= seed.val_score
    assert result.lm_usage["reflection"].calls >= 1  # GEPA reflected at least once
    assert OptimizationResult.from_json(result.to_json()) == result
    assert set(found.best_components) == {"extract.instructions", "locate.instructions"}
    # the best texts are in the returned copy; the user's module is unchanged
    for name, predictor in found.module.named_predictors():
        assert predictor.signature.instructions == found.best_components[f"{name}.instructions"]
    assert module.extract.signature.instructions == found.seed_components["extract.instructions"]
    # every rollout ran both predictors through DSPy's own client, each call one user message
    # that carries its predictor's instructions
    assert len(task_lm.history) >= 2 * result.n_rollouts
    first = task_lm.history[0]["messages"]
    assert [m["role"] for m in first] == ["user"]
    assert any(text in first[0]["content"] for text in found.seed_components.values())
