"""One real local model for the whole integration session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from policyopt import LocalLM


@pytest.fixture(scope="session")
def local_lm() -> Iterator[LocalLM]:
    with LocalLM(n_parallel=4) as lm:
        yield lm
