"""OPRO passes the conformance suite every optimizer must pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policyopt.opro import OPRO
from policyopt.testing.conformance import Conformance
from tests.unit.opro.test_opro import keyword_meta_lm


def factory(**kwargs: Any) -> OPRO:
    kwargs.setdefault("meta_lm", keyword_meta_lm())
    return OPRO(progress=False, **kwargs)


SUITE = Conformance(factory, lm_name="meta_lm")


def test_budget_never_exceeded() -> None:
    SUITE.check_budget_never_exceeded()


def test_determinism() -> None:
    SUITE.check_determinism()


def test_json_round_trip() -> None:
    SUITE.check_json_round_trip()


def test_error_policy() -> None:
    SUITE.check_error_policy()


def test_resume_spends_nothing(tmp_path: Path) -> None:
    SUITE.check_resume_spends_nothing(tmp_path)


def test_chat_prompts(tmp_path: Path) -> None:
    SUITE.check_chat_prompts(tmp_path)


def test_faults(tmp_path: Path) -> None:
    SUITE.check_faults(tmp_path)


def test_stop_file_while_a_rollout_hangs(tmp_path: Path) -> None:
    SUITE.check_stops_while_a_rollout_hangs(tmp_path)


def test_resume_with_the_whole_valset_as_minibatch(tmp_path: Path) -> None:
    def make(**kwargs: Any) -> OPRO:
        return OPRO(meta_lm=keyword_meta_lm(), progress=False, minibatch_size=None, **kwargs)

    Conformance(make, budget=90, lm_name="meta_lm").check_resume_spends_nothing(tmp_path)
