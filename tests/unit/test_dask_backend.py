"""The Dask backend's settings without a cluster: names, missing client, bad addresses."""

from __future__ import annotations

import socket
import time

import pytest

from policyopt import GEPA, Program
from policyopt.errors import ConfigError
from policyopt.rollout import RolloutEngine, check_backend
from policyopt.rollout.dask_backend import is_dask
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task

pytestmark = pytest.mark.waits  # see tests/conftest.py

distributed = pytest.importorskip("distributed")


def _evaluate(prompt: str, example: dict[str, str]) -> float:
    return float(example["need"] in prompt)


def test_dask_backend_names() -> None:
    assert is_dask("dask") and is_dask("dask://tcp://127.0.0.1:8786")
    assert not is_dask("threading") and not is_dask(None) and not is_dask("daskish")
    for backend in ("dask", "dask://tcp://127.0.0.1:8786"):
        check_backend(backend)  # accepted without a cluster: connecting is the engine's job


def test_dask_without_a_client_says_how_to_make_one() -> None:
    with pytest.raises(ValueError):  # no Client in this process
        distributed.Client.current()
    with pytest.raises(ConfigError, match="needs a dask.distributed Client.*dask://tcp://"):
        RolloutEngine(_evaluate, backend="dask")


def test_an_optimizer_with_backend_dask_and_no_client_fails_before_any_rollout() -> None:
    _, train, val = keyword_task()
    gepa = GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=50,
        backend="dask",
        progress=False,
    )
    with pytest.raises(ConfigError, match="needs a dask.distributed Client"):
        gepa.optimize(Program("Solve.", _evaluate), train, val)


def test_an_address_without_a_scheduler_is_named() -> None:
    with pytest.raises(ConfigError, match="names no scheduler"):
        RolloutEngine(_evaluate, backend="dask://")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_unreachable_scheduler_fails_within_seconds() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(
        ConfigError, match=f"Cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'"
    ):
        RolloutEngine(_evaluate, backend=f"dask://tcp://127.0.0.1:{port}")
    assert time.perf_counter() - started < 30
