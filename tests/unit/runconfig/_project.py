"""A user-style project for the ``policyopt optimize`` tests: prog.py with scripted LMs,
train/val JSONL files and config.toml in a temporary folder (the ``project`` fixture)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PAIRS = [
    ("hot", "cold"),
    ("up", "down"),
    ("big", "small"),
    ("fast", "slow"),
    ("open", "closed"),
    ("happy", "sad"),
    ("early", "late"),
    ("full", "empty"),
]

PROGRAM = """
from pathlib import Path
from policyopt import Program, Score

CALLS = Path(__file__).with_name("calls.txt")
OPPOSITES = dict(PAIRS_REPR)


def evaluate(prompt, example, lm):
    with CALLS.open("a") as f:
        f.write(example["word"] + "\\n")
    answer = lm(f"{prompt}\\n\\nInput: {example['word']}\\nAnswer:")
    ok = example["answer"] in answer.lower()
    return Score(float(ok), output=answer, feedback=None if ok else f"expected {example['answer']}")


def evaluate_loud(prompt, example, lm):
    score = evaluate(prompt, example, lm)
    return Score(score.score, output=score.output, feedback=(score.feedback or "").upper())


def evaluate_chat(prompt, example, lm):
    assert [m["role"] for m in prompt] == ["system", "user"], prompt
    text = "\\n".join(m["content"] for m in prompt)
    return evaluate(text, example, lm)


def evaluate_own(prompt, example):
    return evaluate(prompt, example, task_lm)


def task_lm(text):
    word = text.rsplit("Input: ", 1)[1].split("\\n")[0]
    return OPPOSITES.get(word, "?") if "opposite" in text.lower() else "hmm"


def reflect(text):
    return "```\\nGive the opposite of the word.\\n```"


def make_program(lm):
    return Program("Answer the question.", lambda p, e: evaluate(p, e, lm))


def load():
    rows = [{"id": w, "word": w, "answer": a} for w, a in OPPOSITES.items()]
    return {"train": rows[:4], "val": rows[4:]}


program = Program("Answer the question.", evaluate_own)
""".replace("PAIRS_REPR", repr(PAIRS))

CONFIG = """
[policy_optimization]
algorithm = "gepa"
initial_prompt = "Answer the question."
evaluate = "prog:evaluate"
run_dir = "runs/one"

[policy_optimization.data]
train = "train.jsonl"
val = "val.jsonl"

[policy_optimization.models]
task = "prog:task_lm"
reflection = "prog:reflect"

[policy_optimization.budget]
max_rollouts = 30

[policy_optimization.gepa]
minibatch_size = 2
n_jobs = 2
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A folder with prog.py, train/val JSONL files and config.toml; the module is forgotten
    afterwards so that every test imports its own."""
    (tmp_path / "prog.py").write_text(PROGRAM)
    rows = [{"id": w, "word": w, "answer": a} for w, a in PAIRS]
    for name, part in (("train", rows[:4]), ("val", rows[4:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (tmp_path / "config.toml").write_text(CONFIG)
    yield tmp_path
    sys.modules.pop("prog", None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))
