"""Your own program, as ``policyopt optimize`` sees it: one ``evaluate`` function.

``evaluate(prompt, example, lm)`` runs the program with ``prompt`` on one example and scores it.
``lm`` is the task model the config names (``models.task``: ``"local"``, a litellm model name or
``"module:callable"``); drop the parameter and ``models.task`` when your code calls its own
model. The feedback tells the optimizer's LM what went wrong, as a teacher would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policyopt import Score


def evaluate(prompt: str, example: dict[str, Any], lm: Callable[[str], str]) -> Score:
    """Ask for the opposite of ``example["word"]``; 1.0 when an accepted answer is in the reply."""
    answer = lm(f"{prompt}\n\nInput: {example['word']}\nAnswer:")
    ok = any(a in answer.lower() for a in example["answers"])
    feedback = None
    if not ok:
        feedback = (
            f"The answer should be {example['answers'][0]!r}, the opposite of "
            f"{example['word']!r}: tell the assistant to give the opposite of the word."
        )
    return Score(float(ok), output=answer, feedback=feedback)
