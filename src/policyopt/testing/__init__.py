"""Test helpers shipped with the package: a scripted fake LM (and, later, the conformance suite)."""

from policyopt.testing.fake_lm import ScriptedLM

__all__ = ["ScriptedLM"]
