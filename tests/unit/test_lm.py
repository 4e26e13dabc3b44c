"""LM over litellm against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from policyopt import LM
from policyopt.errors import ConfigError, LMError
from policyopt.lm import CallableLM, resolve_lm
from policyopt.testing import ScriptedLM
from tests.fake_openai import fake_openai


def make_lm(api_base: str, **kwargs: object) -> LM:
    return LM("openai/fake-model", api_base=api_base, api_key="sk-test", **kwargs)  # type: ignore[arg-type]


def test_answers_and_counts_usage() -> None:
    with fake_openai(["hello there"]) as server:
        lm = make_lm(server.api_base, temperature=0)
        assert lm("hi") == "hello there"
        usage = lm.usage
        assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (1, 10, 5)
        assert server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
        assert server.requests[0]["temperature"] == 0


def test_retries_rate_limits_honouring_retry_after() -> None:
    with fake_openai([429, 429, "finally"]) as server:
        lm = make_lm(server.api_base, num_retries=3)
        assert lm("hi") == "finally"
        assert len(server.requests) == 3
        gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
        assert all(gap >= 0.18 for gap in gaps)  # the server said retry-after: 0.2


def test_server_errors_are_retried_then_raised_as_lm_error() -> None:
    with fake_openai([500, 500, 500]) as server:
        lm = make_lm(server.api_base, num_retries=2, max_backoff=0.05)
        with pytest.raises(LMError, match="after 3 attempts"):
            lm("hi")
        assert len(server.requests) == 3
        assert lm.usage.errors == 1 and lm.usage.calls == 0


def test_client_errors_are_not_retried() -> None:
    with fake_openai([400]) as server:
        lm = make_lm(server.api_base, num_retries=3)
        with pytest.raises(LMError):
            lm("hi")
        assert len(server.requests) == 1


def test_disk_cache_keys_the_full_request_and_never_stores_errors(tmp_path: Path) -> None:
    with fake_openai([500, "a", "b", "c"]) as server:
        lm = make_lm(server.api_base, cache=tmp_path / "cache", num_retries=0)
        with pytest.raises(LMError):
            lm("q")  # the error is not cached ...
        assert lm("q") == "a"  # ... so the same request goes out again
        assert lm("q") == "a"  # now a hit
        assert lm("q", temperature=0.7) == "b"  # another request
        assert len(server.requests) == 3
        # a new LM on the same directory, even on another server address, reuses answers
        other = LM("openai/fake-model", api_base="http://127.0.0.1:9/v1", cache=tmp_path / "cache")
        assert other("q") == "a"
        assert other.usage.cache_hits == 1 and other.usage.calls == 0
        assert lm.usage.cache_hits == 1 and lm.usage.calls == 2


def test_finish_reason_reports_truncation() -> None:
    with fake_openai(["cut off..."]) as server:
        completion = make_lm(server.api_base).complete("hi")
        assert completion.truncated and completion.text == "cut off..."


def test_usage_is_thread_safe() -> None:
    with fake_openai(default="x") as server:
        lm = make_lm(server.api_base)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lm, [f"q{i}" for i in range(40)]))
        assert lm.usage.calls == 40 and lm.usage.prompt_tokens == 400


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="litellm model string"):
        LM("")
    with pytest.raises(ConfigError, match="num_retries"):
        LM("openai/x", num_retries=-1)
    with pytest.raises(ConfigError, match="messages"):
        LM("openai/x")(42)  # type: ignore[arg-type]


def test_resolve_lm_accepts_strings_lms_and_callables() -> None:
    assert isinstance(resolve_lm("openai/gpt-4o-mini"), LM)
    scripted = ScriptedLM(["x"])
    assert resolve_lm(scripted) is scripted
    wrapped = resolve_lm(lambda text: text.upper())
    assert isinstance(wrapped, CallableLM) and wrapped("ab") == "AB"
    assert wrapped.usage.calls == 1
    with pytest.raises(ConfigError, match="'reflection_lm'"):
        resolve_lm(3, name="reflection_lm")


def test_scripted_lm_rules_and_sequence() -> None:
    rules = ScriptedLM([("apple", "fruit"), ("car", "vehicle")], default="?")
    assert rules("an apple") == "fruit" and rules("a car") == "vehicle" and rules("x") == "?"
    seq = ScriptedLM(["one", "two"])
    assert [seq("a"), seq("b")] == ["one", "two"]
    with pytest.raises(LookupError):
        seq("c")
    assert seq.calls == 3 and seq.usage.calls == 2
