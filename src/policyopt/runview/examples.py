"""``policyopt show RUN --examples``: what the model answered on each validation example, for
the seed prompt and the best one (input, output, score, feedback), from the run's journal.

The inputs come from ``examples.jsonl``, which ``policyopt optimize`` writes into the run dir;
a run made from Python has only the example ids.
"""

from __future__ import annotations

import json
from typing import Any

from policyopt.runview.load import RunView
from policyopt.state.journal import read_journal
from policyopt.state.rundir import EXAMPLES_FILE
from policyopt.types import prompt_key

__all__ = ["example_rows"]


def _inputs(view: RunView) -> dict[tuple[str, str], Any]:
    path = view.path / EXAMPLES_FILE
    if not path.exists():
        return {}
    out: dict[tuple[str, str], Any] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
            out[(str(row["split"]), str(row["id"]))] = row["example"]
        except (ValueError, KeyError, TypeError):
            continue
    return out


def example_rows(view: RunView) -> list[dict[str, Any]]:
    """One row per validation example: its id and input, and per prompt (``seed``, ``best``)
    the score, output, feedback and error of its rollout (None where it was not run)."""
    if not view.candidates:
        return []
    seed, best = view.candidates[0], view.best or view.candidates[0]
    prompts = {"seed": prompt_key(seed.prompt), "best": prompt_key(best.prompt)}
    rollouts = read_journal(view.path).of_type("rollout")
    split = "val" if any(r.get("split") == "val" for r in rollouts) else "train"
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rollouts:
        if r.get("split") == split:
            found[(str(r.get("prompt")), str(r.get("example")))] = r
    inputs = _inputs(view)
    rows = []
    for example in seed.val_scores or best.val_scores:
        row: dict[str, Any] = {"id": example, "input": inputs.get((split, example))}
        for label, key in prompts.items():
            r = found.get((key, example))
            row[label] = (
                None
                if r is None
                else {
                    "score": r.get("score"),
                    "output": r.get("output"),
                    "feedback": r.get("feedback"),
                    "error": r.get("error"),
                }
            )
        rows.append(row)
    return rows
