"""Built-in task ``extract_phone`` (extraction): reply with the phone number in a short message.

Each of the 100 messages (made in code from a fixed seed) names a person, an email address, a
phone number (``555-`` and four digits) and usually other numbers: an order or room number, a
time, a price, a day. Chosen because SmolLM2-135M can copy the phone number out when asked for
it, and does not when not asked: with ``Answer the question.`` it echoes or rewrites the message.
Measured on the test split (seed 0, 40 messages):

- ``Answer the question.`` (the seed): 0.125
- ``What is the email address?`` (the wrong field): 0.350
- ``Extract the phone number from the text below.``: 0.400
- ``Give the phone number.``: 0.500
- ``Find the phone number.``: 0.700
- ``What is the phone number?`` (the reference): 0.850

``policyopt demo --task extract_phone --budget 200 --n-jobs 2`` (GEPA, this model as task and
reflection LM, seed 0, earlier small-model settings) ended at 0.225 on the test split. With the
current ones (advice template, 4 samples per reflection),
``policyopt demo --task extract_phone`` (budget 300, seed 0) ends at 0.950
(benchmarks/results/demo_tasks/).

Measured facts about the model on this task: it copies a field from the text reliably when the
prompt names the field; asked for the email address instead it often gives the phone number;
imperative wordings make it answer "I'm sorry, as a text-based AI ..." or echo the whole message
more often than a question does (``Reply with the phone number found in the message.`` 0.050;
the feedback's rule copied as a prompt, ``Tell the assistant to reply with the phone number ...``,
0.125; GEPA with this model as reflection LM copied exactly that in a 200-rollout demo).

The metric counts a verbose but right answer (``The phone number is 555-0142.``; spaces, dots or
no separator inside the number are fine) and rejects an answer that also gives the email address
or another number from the message. Its feedback says what was expected and the rule.
"""

from __future__ import annotations

import random
import re
from typing import Any

from policyopt.tasks.base import Task
from policyopt.types import Score

__all__ = ["POOL", "make_task", "metric"]

_FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Felix",
    "Grace",
    "Hugo",
    "Iris",
    "Jack",
    "Laura",
    "Mark",
    "Nina",
    "Oscar",
    "Paula",
    "Ravi",
    "Sofia",
    "Tom",
    "Uma",
    "Victor",
]
_LAST = [
    "Smith",
    "Lopez",
    "Brown",
    "Garcia",
    "Miller",
    "Wilson",
    "Moore",
    "Taylor",
    "Clark",
    "Walker",
    "Young",
    "Khan",
    "Novak",
]
_DOMAINS = ("example.com", "mailbox.org", "shop.net", "acme.io", "postmail.de")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# {F} first name, {L} last name, {E} email, {P} phone; the rest are distracting numbers and days.
_TEMPLATES = (
    "Hi, this is {F} {L}. You can reach me at {E} or call {P}.",
    "Please send the invoice for order {N} to {E}. Questions? Call {F} on {P}.",
    "{F} {L} ({P}) asked us to reply to {E} before {D}.",
    "Call {P} or write to {E} to book a table for {K} people, says {F}.",
    "Order {N} for {F} {L}: contact {E}, phone {P}.",
    "Room {R} is booked for {F} {L} from {D}. Email {E} or phone {P} with changes.",
    "New lead: {F} {L}, {E}, {P}, budget ${M}.",
    "{F} will be at the front desk at {T}. If you are late, ring {P} (or mail {E}).",
    "Delivery {N} arrives on {D}. The driver, {F}, is on {P}; the shop is at {E}.",
    "Thanks for your message! {F} {L} will call you back from {P}. Ticket {N}, reply to {E}.",
    "Lost keys found in room {R}. Owner: {F} {L}, tel. {P}, {E}.",
    "To cancel appointment {N} on {D} at {T}, call {P} or email {E}. Thanks, {F}.",
)
_POOL_SEED = 7  # the messages are fixed; a task seed only changes the splits


def _make_pool() -> list[dict[str, Any]]:
    """The 100 messages, each with its phone number and the values a wrong answer may give."""
    rng = random.Random(_POOL_SEED)
    pool: list[dict[str, Any]] = []
    used: set[str] = set()
    while len(pool) < 100:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        phone = f"555-{rng.randint(1000, 9999)}"
        if phone in used:
            continue
        used.add(phone)
        email = f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}"
        values = {
            "N": str(rng.randint(1000, 9999)),
            "R": str(rng.randint(101, 499)),
            "K": str(rng.randint(2, 9)),
            "M": str(rng.randint(2, 90) * 100),
            "T": f"{rng.randint(8, 17)}:{rng.choice(('00', '15', '30', '45'))}",
        }
        template = _TEMPLATES[len(pool) % len(_TEMPLATES)]
        text = template.format(F=first, L=last, E=email, P=phone, D=rng.choice(_DAYS), **values)
        # a wrong answer gives the email or a number that could pass for the answer
        others = [email] + [v for k, v in values.items() if k != "K" and "{" + k + "}" in template]
        pool.append({"id": f"m{len(pool):03d}", "text": text, "phone": phone, "others": others})
    return pool


POOL: list[dict[str, Any]] = _make_pool()

SEED_PROMPT = "Answer the question."
REFERENCE_PROMPT = "What is the phone number?"


def _splits(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/val/test of 30/30/40 messages."""
    rows = list(POOL)
    random.Random(seed).shuffle(rows)
    return rows[:30], rows[30:60], rows[60:]


def render_input(example: dict[str, Any]) -> str:
    """The message as the model sees it."""
    return f"Input: {example['text']}\nAnswer:"


def _has_number(text: str, number: str) -> bool:
    """``number`` (digits, maybe with ``:``) appears in ``text`` not as part of a longer one."""
    return re.search(rf"(?<![\d:]){re.escape(number)}(?![\d:])", text) is not None


def metric(output: str, example: dict[str, Any]) -> Score:
    """1.0 when the output gives the phone number and no other value from the message."""
    phone = example["phone"]
    prefix, digits = phone.split("-")
    text = output.lower()
    hit = re.search(rf"(?<!\d){prefix}[\s.\-]?{digits}(?!\d)", text) is not None
    extra = [
        value
        for value in example["others"]
        if (value in text if "@" in value else _has_number(text, value))
    ]
    said = repr(" ".join(output.split())[:100])
    if hit and not extra:
        return Score(1.0, feedback=f"Correct: the phone number is {phone}.", output=output)
    if hit:
        feedback = (
            f"Wrong: {said} gives the phone number {phone} but also {', '.join(extra)}; the "
            "answer must give only the phone number."
        )
    else:
        feedback = (
            f"Wrong: expected the phone number {phone}; got {said}. Tell the assistant to reply "
            "with the phone number found in the message (not the email address or other numbers)."
        )
    return Score(0.0, feedback=feedback, output=output)


def expected(example: dict[str, Any]) -> str:
    """The phone number, as bare feedback names it."""
    return str(example["phone"])


def make_task(seed: int = 0) -> Task:
    """The extract_phone task with splits drawn from ``seed`` (0 is the published split)."""
    train, val, test = _splits(seed)
    return Task(
        name="extract_phone",
        description="reply with the phone number found in a short message (100 messages)",
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
        kind="extraction",
        expected=expected,
    )
