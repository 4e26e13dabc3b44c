"""Several proposals per reflection (``proposals_per_reflection``) and the ``{advice}`` template."""

from __future__ import annotations

import re
import threading
from collections import Counter
from typing import Any

import pytest

from policyopt import GEPA
from policyopt.errors import ConfigError
from policyopt.gepa.budget import gepa_estimate
from policyopt.gepa.config import GEPASettings
from policyopt.gepa.reflection import ADVICE_TEMPLATE, common_advice, render_prompt
from policyopt.lm.base import LM, Completion
from policyopt.testing.conformance import KEYWORDS, keyword_task


class SeededLM(LM):
    """A policyopt LM whose answer depends on the request's ``seed``: no network.

    Like the keyword reflection LM, it adds a keyword the feedback names, but which one depends
    on the seed (seed 0 or none: the first), so samples differ the way a sampled LM's do.
    """

    def __init__(self) -> None:
        super().__init__("scripted/seeded", seed=7)
        self.requests: list[dict[str, Any]] = []
        self._seen = threading.Lock()

    def _request(self, request: dict[str, Any]) -> Completion:
        with self._seen:
            self.requests.append(request)
        return self._answer(request)

    def _answer(self, request: dict[str, Any]) -> Completion:
        text = request["messages"][-1]["content"]
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        base = current.group(1) if current else ""
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text))) or ["carefully"]
        pick = missing[(int(request.get("seed", 7)) - 7) % len(missing)]
        return Completion(f"```\n{base} {pick}\n```", finish_reason="stop")


def _run(samples: int, lm: LM, **kwargs: Any) -> Any:
    program, train, val = keyword_task()
    gepa = GEPA(
        reflection_lm=lm,
        max_rollouts=120,
        seed=1,
        n_jobs=2,
        progress=False,
        proposals_per_reflection=samples,
        merge=False,
        **kwargs,
    )
    return gepa.optimize(program, train, val)


def test_each_reflection_is_sampled_with_new_seeds_and_siblings_race() -> None:
    lm = SeededLM()
    result = _run(3, lm, proposals_per_iteration=1, minibatch_size=6)
    seeds = Counter(r.get("seed") for r in lm.requests)
    # every call of the run draws on its own seed (the LM's own, 7, plus a draw number), so
    # two slots or iterations with the same reflection prompt do not repeat each other
    assert all(isinstance(seed, int) and seed > 7 for seed in seeds)
    assert max(seeds.values()) == 1 and len(seeds) > 3
    assert all(r.get("drop_params") for r in lm.requests)
    reflections = len(lm.requests) / 3
    counts = result.details["counts"]
    # the samples differ (another keyword each), and every distinct one met its minibatch
    assert counts["proposed"] > 1.5 * reflections
    assert counts["accepted"] + counts["rejected"] == counts["proposed"]
    assert counts["raced_out"] > 0  # siblings of one reflection passed together; one went on


def test_more_samples_find_more_per_reflection_than_one() -> None:
    """With one keyword missing per sample, three samples cover more keywords per call."""
    one = _run(1, SeededLM(), proposals_per_iteration=1, minibatch_size=6)
    three = _run(3, SeededLM(), proposals_per_iteration=1, minibatch_size=6)
    assert three.details["counts"]["proposed"] > one.details["counts"]["proposed"]
    assert three.n_rollouts <= 120 and one.n_rollouts <= 120


def test_a_plain_callable_gives_one_proposal_per_reflection() -> None:
    """A callable cannot be reseeded: its samples are one answer, deduplicated, never retried."""
    calls: list[str] = []

    def reflect(text: str) -> str:
        calls.append(text)
        return f"```\nSolve the task {KEYWORDS[len(calls) % len(KEYWORDS)]}.\n```"

    result = _run(2, reflect, proposals_per_iteration=1)  # type: ignore[arg-type]
    assert result.details["counts"]["proposed"] <= len(calls)


def test_a_users_proposer_without_sample_still_works() -> None:
    class Mine:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def propose(self, key: str, component: str, current: str, records: Any) -> str | None:
            self.keys.append(key)
            return f"{current} {KEYWORDS[len(self.keys) % len(KEYWORDS)]}"

    mine = Mine()
    _run(2, SeededLM(), proposer=mine, proposals_per_iteration=1)
    assert any(k.endswith("/s1") for k in mine.keys)
    assert sum(not k.endswith("/s1") for k in mine.keys) == sum(
        k.endswith("/s1") for k in mine.keys
    )


def test_the_estimate_counts_every_sample() -> None:
    base = {"max_rollouts": 300, "n_jobs": 4, "min_rollouts_per_call": 0}
    one = gepa_estimate(GEPASettings(**base), n_train=30, n_val=30, n_components=1)
    settings = GEPASettings(**base, proposals_per_reflection=4)
    alone = gepa_estimate(settings, n_train=30, n_val=30, n_components=1, batched=False)
    shared = gepa_estimate(settings, n_train=30, n_val=30, n_components=1)
    assert alone["lm_calls"] > one["lm_calls"]
    assert alone["iterations"] < one["iterations"]  # each iteration pays four children a slot
    # one call for a reflection's four samples: the re-asks of unusable ones are the rest
    assert shared["iterations"] == alone["iterations"]
    assert shared["lm_calls"] < alone["lm_calls"] / 2
    assert shared["lm_calls_max"] <= 3 * shared["lm_calls"]


def test_less_than_one_iteration_is_a_fraction_not_zero() -> None:
    # the README's own-program config: 8 / 8 examples, budget 24, the small-model settings
    settings = GEPASettings(max_rollouts=24, proposals_per_reflection=4)
    est = gepa_estimate(settings, n_train=8, n_val=8, n_components=1)
    assert 0 < est["iterations"] < 1 and est["lm_calls"] >= 1


def test_the_forecast_keeps_to_the_rollouts_per_call() -> None:
    """With the gate widening as calls run ahead, the point is at most budget / (2 x minibatch),
    the gepa library's share; without it, the unusable answers' re-asks add to it."""
    free = gepa_estimate(
        GEPASettings(max_rollouts=150, min_rollouts_per_call=0), n_train=12, n_val=12,
        n_components=1,
    )  # fmt: skip
    kept = gepa_estimate(GEPASettings(max_rollouts=150), n_train=12, n_val=12, n_components=1)
    assert kept["lm_calls"] == 150 // 6 < free["lm_calls"]
    assert kept["lm_calls_min"] <= kept["lm_calls"] < kept["lm_calls_max"] <= 3 * kept["lm_calls"]


def test_samples_are_bounded() -> None:
    with pytest.raises(ConfigError, match="proposals_per_reflection"):
        GEPA(reflection_lm=SeededLM(), max_rollouts=50, proposals_per_reflection=0)


def test_common_advice_keeps_the_sentences_feedback_repeats() -> None:
    rule = "Tell the assistant to give the opposite of the word."
    records = [
        {"Feedback": f"Wrong: expected 'cold', the opposite of 'hot'; got 'warm'. {rule}"},
        {"Feedback": f"Wrong: expected 'up', the opposite of 'down'; got 'Down.'. {rule}"},
        {"Feedback": "Correct: the answer names 'big'."},
    ]
    assert common_advice(records) == [rule]
    # nothing repeated: every distinct line
    assert common_advice(records[:1]) == [records[0]["Feedback"]]
    assert common_advice([]) == []
    prompt = render_prompt(ADVICE_TEMPLATE, "instruction", "Answer.", records)
    assert rule in prompt and "'hot'" not in prompt and '"Answer."' in prompt


def test_the_advice_template_is_a_builtin_and_needs_a_placeholder() -> None:
    assert GEPASettings(max_rollouts=10, reflection_template="advice").reflection_template == (
        ADVICE_TEMPLATE
    )
    with pytest.raises(ValueError, match="advice"):
        GEPASettings(max_rollouts=10, reflection_template="Improve {current}.")


def test_the_run_seed_moves_the_sampling_seeds() -> None:
    first, second = SeededLM(), SeededLM()
    _run(3, first, proposals_per_iteration=1)
    program, train, val = keyword_task()
    GEPA(
        reflection_lm=second,
        max_rollouts=120,
        seed=2,
        n_jobs=2,
        progress=False,
        proposals_per_reflection=3,
        merge=False,
        proposals_per_iteration=1,
    ).optimize(program, train, val)
    seeds = [{r["seed"] for r in lm.requests} for lm in (first, second)]
    assert seeds[0] and seeds[1] and not seeds[0] & seeds[1]


def test_a_small_budget_takes_fewer_samples_rather_than_none() -> None:
    """In a tiny budget the reflection gets the samples it can pay for with room left to score a
    winner on val: budget 16 on 4 val examples leaves 12, which cannot pay 3 parents + 4 x 3
    children, but can pay 3 parents + 1 x 3 children + 4 val."""
    lm = SeededLM()
    program, train, val = keyword_task(n_train=4, n_val=4)
    result = GEPA(
        reflection_lm=lm,
        max_rollouts=16,
        n_jobs=2,
        progress=False,
        proposals_per_reflection=4,
        merge=False,
    ).optimize(program, train, val)
    assert len(lm.requests) >= 1 and result.n_rollouts <= 16
    assert result.details["counts"]["proposed"] >= 1
    assert len(result.candidates) == 2  # the child passed its minibatch and was scored on val
