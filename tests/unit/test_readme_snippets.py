"""The README's "Your own program" module runs as printed: copied into a file, imported and
called with a scripted LM (a missing import, such as ``Score``, fails here in a second; the
slow test in tests/integration/test_own_program.py runs the folder on the real model)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def own_program_module() -> str:
    """The first Python block of the README's "Your own program" section."""
    section = README.read_text(encoding="utf-8").split("\n## Your own program", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python block under '## Your own program'"
    return match.group(1)


def test_the_own_program_snippet_imports_what_it_uses(tmp_path: Path) -> None:
    code = own_program_module()
    assert code.startswith("# my_program.py") and "def evaluate(prompt, example, lm)" in code
    path = tmp_path / "my_program.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("readme_my_program", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    example = {"id": "hot", "word": "hot", "answers": ["cold"]}
    right = module.evaluate("Give the opposite.", example, lambda text: "Cold.")
    wrong = module.evaluate("Give the opposite.", example, lambda text: "warm")
    assert (right.score, right.output, right.feedback) == (1.0, "Cold.", None)
    assert wrong.score == 0.0 and wrong.feedback
