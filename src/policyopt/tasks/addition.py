"""Built-in task ``addition`` (math): reply with the sum of two numbers from 1 to 10.

The input shows two numbers, ``Input: 4 and 7``, and not what to do with them: the prompt must
say "add". The 100 ordered pairs of 1..10 are split 30/30/40 by the seed (no zero: with a
zero, echoing the input, "0 and 3 ... 3", would pass for the sum). Chosen because
SmolLM2-135M adds small numbers often enough when told to, and never when not told:
with ``Answer the question.`` it repeats the numbers ("The answer is 4 and 7."). Measured on the
test split (seed 0, 40 pairs):

- ``Answer the question.`` (the seed): 0.000
- ``Add the numbers.``: 0.125
- ``Add the two numbers below.``: 0.225
- ``Calculate the sum of the two numbers below.``: 0.300
- ``What do the two numbers add up to?``: 0.350
- ``Add the two numbers below. Reply with the sum.``: 0.525
- ``Add the two numbers and give the total.`` (the reference): 0.750

``policyopt demo --task addition --budget 200 --n-jobs 2`` (GEPA, this model as task and
reflection LM, seed 0, earlier small-model settings) ended at 0.375 on the test split. With the
current ones (advice template, 4 samples per reflection),
``policyopt demo --task addition`` (budget 300, seed 0) ends at 0.750
(benchmarks/results/demo_tasks/). (Run
with an earlier feedback that ended in the reference's own words; now it states the rule only.)

Measured facts about the model on this task: the wording moves it a lot, as above; it writes
``4 + 7 = 11`` or a sentence, sometimes with a wrong sum (``9 + 5 = 12``); with numbers from 2 to
19 the reference wording fell to about 0.4 (30-pair probe). The feedback's rule copied as a
prompt (``Tell the assistant to add the two numbers (the answer is their sum).``) scores 0.525.

The metric reads the last number in the answer (digits, or English number words when there are
no digits), so ``4 + 7 = 11``, ``The sum of the two numbers is 11.`` and ``The total is eleven.``
count; an answer that names a number other than the two inputs and their sum (``11 or 12``) is
rejected. Its feedback says what was expected and the rule.
"""

from __future__ import annotations

import random
import re
from typing import Any

from policyopt.tasks.base import Task
from policyopt.types import Score

__all__ = ["POOL", "make_task", "metric", "numbers_in"]

POOL: list[dict[str, Any]] = [
    {"id": f"{a}+{b}", "a": a, "b": b, "answer": a + b} for a in range(1, 11) for b in range(1, 11)
]

_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
NUMBER_WORDS = {word: value for value, word in enumerate(_WORDS)}

SEED_PROMPT = "Answer the question."
REFERENCE_PROMPT = "Add the two numbers and give the total."


def _splits(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/val/test of 30/30/40 pairs."""
    rows = list(POOL)
    random.Random(seed).shuffle(rows)
    return rows[:30], rows[30:60], rows[60:]


def render_input(example: dict[str, Any]) -> str:
    """The two numbers as the model sees them."""
    return f"Input: {example['a']} and {example['b']}\nAnswer:"


def numbers_in(text: str) -> list[int]:
    """The numbers written as digits in ``text``, in order; when there are none, the English
    number words up to twenty (so "the two numbers" next to a digit answer is not a number)."""
    digits = [int(token) for token in re.findall(r"\d+", text)]
    if digits:
        return digits
    words = re.findall(r"[a-z]+", text.lower())
    return [NUMBER_WORDS[word] for word in words if word in NUMBER_WORDS]


def metric(output: str, example: dict[str, Any]) -> Score:
    """1.0 when the last number in the output is the sum and no stray number is named."""
    a, b, answer = example["a"], example["b"], example["answer"]
    numbers = numbers_in(output)
    stray = sorted(set(numbers) - {a, b, answer})
    said = repr(" ".join(output.split())[:80])
    if numbers and numbers[-1] == answer and not stray:
        return Score(1.0, feedback=f"Correct: {a} + {b} = {answer}.", output=output)
    if answer in numbers:
        feedback = (
            f"Wrong: {said} names other numbers too ({', '.join(map(str, stray or numbers))}); "
            f"the answer must end with the sum, {a} + {b} = {answer}, and name no other result."
        )
    else:
        feedback = (
            f"Wrong: expected {answer}, the sum {a} + {b}; got {said}. Tell the assistant to "
            "add the two numbers (the answer is their sum)."
        )
    return Score(0.0, feedback=feedback, output=output)


def expected(example: dict[str, Any]) -> str:
    """The sum, as bare feedback names it."""
    return str(example["answer"])


def make_task(seed: int = 0) -> Task:
    """The addition task with splits drawn from ``seed`` (0 is the published split)."""
    train, val, test = _splits(seed)
    return Task(
        name="addition",
        description="reply with the sum of two numbers from 1 to 10 (100 pairs)",
        seed_prompt=SEED_PROMPT,
        reference_prompt=REFERENCE_PROMPT,
        train=train,
        val=val,
        test=test,
        render_input=render_input,
        metric=metric,
        template="{prompt}\n\n{input}",
        notes=__doc__ or "",
        lm_kwargs={"max_tokens": 32, "stop": ["\n"]},
        kind="math",
        expected=expected,
    )
