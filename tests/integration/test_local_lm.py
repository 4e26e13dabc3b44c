"""The embedded model for real: llama.cpp in-process on 127.0.0.1, reached through litellm."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest

from policyopt import LocalLM
from policyopt.lm.local import LocalLMClosed, find_gguf

pytestmark = pytest.mark.integration


def port_open(api_base: str) -> bool:
    url = urlparse(api_base)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((url.hostname or "127.0.0.1", url.port or 80)) == 0


def test_weights_ship_in_the_installed_wheel() -> None:
    path = find_gguf()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


def test_answers_through_litellm_and_counts_usage(local_lm: LocalLM) -> None:
    before = local_lm.usage
    completion = local_lm.complete("Give the opposite of the word below.\n\nInput: hot\nAnswer:")
    assert "cold" in completion.text.lower()
    used = local_lm.usage
    assert used.calls == before.calls + 1
    assert used.prompt_tokens > before.prompt_tokens and used.cost_usd == 0.0


def test_user_code_can_call_it_with_plain_litellm(local_lm: LocalLM) -> None:
    import litellm

    response = litellm.completion(
        messages=[{"role": "user", "content": "Say yes."}], max_tokens=8, **local_lm.litellm_kwargs
    )
    assert response.choices[0].message.content
    assert local_lm.api_base.startswith("http://127.0.0.1:")


def test_starts_and_stops_cleanly_and_caches_across_restarts(tmp_path: Path) -> None:
    lm = LocalLM(n_parallel=1, cache=tmp_path / "cache")
    with lm:
        api_base = lm.api_base
        assert port_open(api_base)
        first = lm("Give the opposite of the word below.\n\nInput: up\nAnswer:")
    assert not lm.running and not port_open(api_base)
    # a restarted server (another port) is not asked again: the cache key ignores the address
    with lm:
        again = lm("Give the opposite of the word below.\n\nInput: up\nAnswer:")
    assert again == first
    assert lm.usage.calls == 1 and lm.usage.cache_hits == 1


def test_servers_start_only_as_calls_need_them_and_answer_alike() -> None:
    """One server (one model load) at start; calls one at a time reuse it; calls at once start
    more, up to n_parallel, and get the answers a single server gives."""
    prompts = [f"Give the opposite of the word below.\n\nInput: {w}\nAnswer:" for w in "abc"]
    with LocalLM(n_parallel=3, max_tokens=6) as lm:
        assert lm.servers_running == 1
        one_by_one = [lm(p) for p in prompts]
        assert lm.servers_running == 1
        gate = threading.Barrier(3)

        def at_once(prompt: str) -> str:
            gate.wait(timeout=60)
            return lm(prompt + " ")  # not the cache: a new request to the servers

        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(at_once, prompts))
        assert 2 <= lm.servers_running <= 3
        assert [lm(p + " ") for p in prompts] == together  # whichever server answered
    assert lm.servers_running == 0 and not lm.running and all(one_by_one)


def test_answers_do_not_depend_on_the_thread_count() -> None:
    """LocalLM picks threads per server from the load when it starts (idle_threads): that is
    only safe for reproducibility because an answer is the same with one thread or two."""
    prompts = [f"Write one instruction about the opposite of {w}." for w in ("hot", "early")]
    answers = []
    for threads in (1, 2):
        with LocalLM(n_parallel=1, n_threads=threads, temperature=0.9, max_tokens=16) as lm:
            answers.append([lm(p) for p in prompts])
    assert answers[0] == answers[1] and all(answers[0])


def test_close_cuts_a_long_generation_short_and_the_model_restarts() -> None:
    """close() does not wait for a generation in flight (the server's destructor would wait for
    it, then for its client to leave): the caller gets LocalLMClosed and the model serves
    again on next use."""
    lm = LocalLM(n_parallel=1)
    try:
        lm("Say hi.")  # litellm imported and the server up before the timing starts
        outcome: dict[str, BaseException] = {}

        def long_story() -> None:
            try:
                lm.complete(
                    "Write a very long story about a dragon, in many chapters.", max_tokens=2048
                )
            except BaseException as exc:
                outcome["error"] = exc

        caller = threading.Thread(target=long_story)
        caller.start()
        time.sleep(0.5)
        start = time.monotonic()
        lm.close()
        caller.join(timeout=30)
        took = time.monotonic() - start
        assert not caller.is_alive()
        assert isinstance(outcome.get("error"), LocalLMClosed)
        assert took < 10, (
            f"close() and the caller took {took:.1f} s"
        )  # llama.cpp notices a client left within a second or so
        assert not lm.running
        assert lm("Give the opposite of the word below.\n\nInput: hot\nAnswer:")
    finally:
        lm.close()
