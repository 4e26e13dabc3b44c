"""Every built-in optimizer in the registry is held to the whole conformance suite (budget,
determinism, JSON, error policy, resume, chat-message prompts, faults, stops while a rollout
hangs)."""

from __future__ import annotations

from pathlib import Path

from policyopt.registry import BUILTIN, get_spec

TESTS = Path(__file__).parent


def test_every_builtin_optimizer_runs_the_whole_conformance_suite() -> None:
    for name in BUILTIN:
        spec = get_spec(name)
        texts = "\n".join(p.read_text() for p in (TESTS / name).glob("test_*.py"))
        assert "Conformance(" in texts, f"{name} has no conformance test in tests/unit/{name}/"
        assert f'lm_name="{spec.lm_param}"' in texts or spec.lm_param == "reflection_lm", name
        # one test parametrized over every check of the contract
        assert '@pytest.mark.parametrize("check", CHECKS)' in texts, name
        assert "SUITE.run(check, tmp_path)" in texts, name
