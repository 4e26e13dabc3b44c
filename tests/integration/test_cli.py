"""`policyopt demo`, the main job, end to end on the real local model.

The GEPA demo (the default) runs in test_demo_repro.py, which checks its printed report and JSON on
its quiet run; the MIPRO demo runs in test_mipro_local.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_tasks_lists_the_builtin_task() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "policyopt.cli", "tasks"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.startswith("antonyms:")
