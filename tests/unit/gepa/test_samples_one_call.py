"""A reflection's samples asked in one LM call (the API's ``n``): the same proposals, fewer calls,
the prompt paid once, journaled and replayed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policyopt import GEPA
from policyopt.lm.base import Completion
from policyopt.lm.local import LocalLM
from policyopt.state.memo import JournaledLM
from policyopt.testing.conformance import keyword_task
from tests.unit.gepa.test_samples import SeededLM


class NSeededLM(SeededLM):
    """:class:`SeededLM` honouring ``n``: choice ``i`` is the answer to seed ``seed + i``; the
    prompt's tokens are counted once, as an API that serves ``n`` bills them."""

    serves_n = True

    def __init__(self, most: int = 16) -> None:
        super().__init__()
        self.most = most  # choices it returns at most (an API may serve fewer than asked)

    def _request(self, request: dict[str, Any]) -> Completion:
        with self._seen:
            self.requests.append(request)
        n = min(int(request.get("n", 1) or 1), self.most)
        seed = int(request.get("seed", 7))
        answers = [self._answer({**request, "seed": seed + i}) for i in range(n)]
        return Completion(
            answers[0].text,
            "stop",
            prompt_tokens=100,
            completion_tokens=10 * n,
            choices=tuple((a.text, a.finish_reason) for a in answers) if n > 1 else (),
        )


def _run(lm: SeededLM, run_dir: Path | None = None) -> Any:
    program, train, val = keyword_task()
    return GEPA(
        reflection_lm=lm,
        max_rollouts=120,
        seed=1,
        n_jobs=2,
        progress=False,
        proposals_per_reflection=4,
        proposals_per_iteration=1,
        minibatch_size=6,
        merge=False,
        run_dir=str(run_dir) if run_dir else None,
    ).optimize(program, train, val)


def test_samples_in_one_call_give_the_same_run_with_fewer_calls() -> None:
    alone, together = SeededLM(), NSeededLM()
    a, b = _run(alone), _run(together)
    assert [c.prompt for c in a.candidates] == [c.prompt for c in b.candidates]
    assert a.best_prompt == b.best_prompt and a.n_rollouts == b.n_rollouts
    assert a.details["counts"] == b.details["counts"]
    # four samples per call (the last reflection, short of budget, takes one sample)
    assert len(together.requests) < len(alone.requests) / 2
    expanded = {r["seed"] + i for r in together.requests for i in range(r.get("n", 1))}
    assert expanded == {r["seed"] for r in alone.requests}
    assert b.lm_usage["reflection"].calls == len(together.requests)
    assert b.lm_usage["reflection"].prompt_tokens == 100 * len(together.requests)
    assert sum(r.get("n") == 4 for r in together.requests) >= 2


def test_an_api_that_serves_fewer_choices_leaves_the_rest_to_their_own_calls() -> None:
    alone, four, two = SeededLM(), NSeededLM(), NSeededLM(most=2)
    a, b = _run(alone), _run(two)
    _run(four)
    assert [c.prompt for c in a.candidates] == [c.prompt for c in b.candidates]
    # each reflection of four samples: one call for two choices, one each for the other two
    assert len(four.requests) < len(two.requests) < len(alone.requests)
    assert {r["seed"] for r in two.requests if "n" not in r} == {
        r["seed"] + i for r in four.requests for i in range(2, r.get("n", 1))
    } | {r["seed"] for r in four.requests if "n" not in r}


def test_a_resumed_run_replays_the_shared_calls(tmp_path: Path) -> None:
    first = _run(NSeededLM(), tmp_path)
    again = NSeededLM()
    second = _run(again, tmp_path)
    assert again.requests == []
    assert second.best_prompt == first.best_prompt
    assert second.lm_usage["reflection"] == first.lm_usage["reflection"]


def test_a_choice_answers_its_key_once_and_costs_nothing_more() -> None:
    lm = NSeededLM()
    journaled = JournaledLM(lm, journal=None)
    keys = ["k/0", "k/s1/0", "k/s2/0"]
    prompt = "Improve:\n```\nSolve the task.\n```\nlacks the word alpha, lacks the word beta"
    journaled.ask_samples("k/n3", prompt, keys, 0)
    texts = [journaled.ask(key, prompt) for key in keys]
    assert len(lm.requests) == 1 and journaled.usage.calls == 1
    assert [t["text"] for t in texts if t] == [
        "```\nSolve the task. alpha\n```",
        "```\nSolve the task. beta\n```",
        "```\nSolve the task. alpha\n```",
    ]
    journaled.ask("k/0", prompt)  # used up: asked alone now
    assert len(lm.requests) == 2 and journaled.usage.calls == 2


def test_local_lm_serves_n_as_one_seeded_call_per_choice(monkeypatch: Any) -> None:
    """llama.cpp's server refuses ``n`` > 1: LocalLM asks each choice alone, seeded in a row."""
    lm = LocalLM.for_reflection(seed=3)
    asked: list[int] = []

    def request(self: LocalLM, request: dict[str, Any]) -> Completion:
        asked.append(request["seed"])
        return Completion(f"answer {request['seed']}", "stop", 20, 5)

    monkeypatch.setattr(LocalLM, "start", lambda self: self)
    monkeypatch.setattr(LocalLM, "_request", request)
    answer = lm.complete("Hi", n=3, seed=10)
    assert sorted(asked) == [10, 11, 12]
    assert answer.choices == (("answer 10", "stop"), ("answer 11", "stop"), ("answer 12", "stop"))
    assert (answer.prompt_tokens, answer.completion_tokens) == (60, 15)  # the prompt thrice
    assert lm.complete("Hi", seed=11).text == "answer 11"  # a choice is that seed's answer


def test_a_call_cap_counts_a_shared_call_once_and_refuses_the_same_calls_every_run() -> None:
    results = []
    for _ in range(2):
        lm = NSeededLM()
        program, train, val = keyword_task()
        results.append(
            GEPA(
                reflection_lm=lm,
                max_rollouts=300,
                seed=1,
                n_jobs=4,
                progress=False,
                proposals_per_reflection=4,
                merge=False,
                max_lm_calls=5,
            ).optimize(program, train, val)
        )
        assert len(lm.requests) <= 5
    first, second = results
    assert first.stop_reason == "lm_call_limit"
    assert [c.prompt for c in first.candidates] == [c.prompt for c in second.candidates]
    assert first.details["counts"] == second.details["counts"]
    assert first.lm_usage["reflection"].calls == 5


def test_the_forecast_counts_one_call_per_reflection_only_where_the_lm_serves_n() -> None:
    """The estimate (and so the run's default cap) asks litellm whether a provider serves ``n``."""
    from policyopt.gepa.economy import serves_n
    from policyopt.lm.base import LM

    assert serves_n(LocalLM.for_reflection()) and serves_n(NSeededLM())
    assert serves_n(LM("openai/gpt-4o-mini")) and not serves_n(LM("anthropic/claude-3-haiku"))
    assert not serves_n(SeededLM())  # a provider litellm does not know
    shared, alone = _run(NSeededLM()), _run(SeededLM())
    assert shared.details["estimate"]["lm_calls"] < alone.details["estimate"]["lm_calls"]


def test_the_run_view_shows_every_sample_of_a_shared_call(tmp_path: Path) -> None:
    from policyopt.runview.load import load_run

    _run(SeededLM(), tmp_path / "alone")
    _run(NSeededLM(), tmp_path / "shared")
    alone, shared = load_run(tmp_path / "alone"), load_run(tmp_path / "shared")
    assert len(shared.proposals) == len(alone.proposals) > 4
    assert shared.proposals == alone.proposals
