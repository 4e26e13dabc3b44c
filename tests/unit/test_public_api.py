"""The public surface: every name in __all__ exists, and nothing public is left out."""

from __future__ import annotations

import subprocess
import sys
import types

import policyopt


def test_all_names_exist_and_are_complete() -> None:
    for name in policyopt.__all__:
        assert hasattr(policyopt, name), name
    # submodules are reachable but are not names of the public API
    public = {
        n
        for n, v in vars(policyopt).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public <= set(policyopt.__all__), public - set(policyopt.__all__)


def test_import_is_light() -> None:
    """Importing policyopt must not import litellm or optuna (seconds of start-up)."""
    code = (
        "import sys, policyopt; "
        "print(sorted(m for m in ('litellm', 'optuna', 'xllamacpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_optimizer_protocol_is_structural() -> None:
    class Mine:
        def optimize(self, program, trainset, valset=None):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    assert isinstance(Mine(), policyopt.Optimizer)
    assert not isinstance(object(), policyopt.Optimizer)
