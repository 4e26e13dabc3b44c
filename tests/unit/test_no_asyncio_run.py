"""No ``asyncio.run()`` in policyopt or its tests: in the main thread it replaces the thread's
event loop and drops the old one unclosed (with its self-pipe), and the suite's warnings-as-errors
then fail whichever later test collects it. Run a coroutine on a loop of its own instead."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_nothing_calls_asyncio_run() -> None:
    found = []
    for folder in ("src", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                func = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(func, ast.Attribute)
                    and func.attr == "run"
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "asyncio"
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, f"asyncio.run() drops the main thread's event loop: {found}"
