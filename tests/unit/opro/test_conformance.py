"""OPRO passes the conformance suite every optimizer must pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policyopt.opro import OPRO
from policyopt.testing.conformance import CHECKS, Conformance
from tests.unit.opro.test_opro import keyword_meta_lm

pytestmark = pytest.mark.waits  # see tests/conftest.py


def factory(**kwargs: Any) -> OPRO:
    kwargs.setdefault("meta_lm", keyword_meta_lm())
    return OPRO(progress=False, **kwargs)


SUITE = Conformance(factory, lm_name="meta_lm")


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check: str, tmp_path: Path) -> None:
    SUITE.run(check, tmp_path)


def test_resume_with_the_whole_valset_as_minibatch(tmp_path: Path) -> None:
    def make(**kwargs: Any) -> OPRO:
        return OPRO(meta_lm=keyword_meta_lm(), progress=False, minibatch_size=None, **kwargs)

    Conformance(make, budget=90, lm_name="meta_lm").check_resume_spends_nothing(tmp_path)
