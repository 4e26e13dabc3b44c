"""Built-in task ``antonyms``: reply with the opposite of one English word.

Chosen because the instruction genuinely moves SmolLM2-135M: with ``Answer the question.`` it
almost never names the opposite (~0.02), with ``Give the opposite of the word below.`` it does so
about 0.68 of the time, and wordings in between score anywhere from 0.1 to 0.7. Measured facts
about the model on this task (keep them in mind when optimizing):

- it copies example pairs or facts written into the prompt (``For example, up is down.`` drops
  accuracy to 0.0): the prompt must state the rule, not give instances;
- instructions placed after the input, or in a system message, work worse or not at all;
- about 20 of the 114 words are never solved with any prompt tried (king -> "lady").

The metric counts a verbose but right answer (``The opposite of "hot" is "cold".``) and rejects an
answer naming several candidates (``cold, warm or cool``). Its feedback says what was expected.
"""

from __future__ import annotations

import random
import re
from typing import Any

from policyopt.tasks.base import Task
from policyopt.types import Score

__all__ = ["make_task"]

# word:accepted|answers; 114 directed pairs, both directions of a pair stay in one split.
_PAIRS = """
hot:cold; big:small|little|tiny; day:night; black:white; fast:slow; happy:sad|unhappy;
open:closed|shut; wet:dry; full:empty; hard:soft|easy; early:late; rich:poor; tall:short;
win:lose; love:hate; strong:weak; heavy:light; clean:dirty; loud:quiet|silent|soft;
thick:thin; cheap:expensive; first:last; young:old; sweet:sour|bitter; friend:enemy|foe;
inside:outside; begin:end|finish|stop; push:pull; buy:sell; laugh:cry; summer:winter;
north:south; east:west; brave:cowardly|coward|afraid|scared|fearful; wide:narrow;
deep:shallow; sharp:dull|blunt; smooth:rough; awake:asleep; alive:dead; true:false;
always:never; safe:dangerous|unsafe; polite:rude|impolite; long:short; high:low; near:far;
give:take|receive; question:answer; boy:girl; man:woman; king:queen; sun:moon;
cold:hot|warm; small:big|large; night:day; white:black; slow:fast|quick; sad:happy|glad;
closed:open; dry:wet; empty:full; soft:hard; late:early; poor:rich|wealthy;
short:tall|long; lose:win|find; hate:love|like; weak:strong; dirty:clean; quiet:loud|noisy;
thin:thick|fat; last:first; old:new|young; enemy:friend|ally; outside:inside; pull:push;
sell:buy; cry:laugh|smile; winter:summer; south:north; west:east; dead:alive|living;
false:true; never:always; low:high; far:near|close; take:give; girl:boy; woman:man;
queen:king; moon:sun; good:bad|evil; bad:good; up:down; down:up; in:out; on:off; yes:no;
left:right; start:end|finish|stop; end:start|beginning|begin; light:dark|heavy;
dark:light|bright; pretty:ugly; ugly:pretty|beautiful; war:peace; peace:war; top:bottom;
bottom:top; come:go; go:come|stop; before:after; after:before"""

POOL: list[tuple[str, list[str]]] = [
    (word.strip(), answers.strip().split("|"))
    for word, answers in (item.split(":") for item in _PAIRS.replace("\n", " ").split(";"))
]
VOCABULARY = {word for word, _ in POOL} | {a for _, answers in POOL for a in answers}
# Words too common to count as a second candidate answer when they appear in a sentence.
_COMMON = {"in", "on", "no", "up", "out", "off", "go", "after", "before"}

SEED_PROMPT = "Answer the question."
REFERENCE_PROMPT = "Give the opposite of the word below."


def _splits(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/val/test of about a third each, grouping a pair's two directions."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for word, answers in POOL:
        key = frozenset({word, answers[0]})
        groups.setdefault(key, []).append({"id": word, "word": word, "answers": answers})
    ordered = sorted(groups.values(), key=lambda g: g[0]["word"])
    random.Random(seed).shuffle(ordered)
    target = len(POOL) / 3
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for group in ordered:
        bucket = train if len(train) < target else val if len(val) < target else test
        bucket.extend(group)
    return train, val, test


def metric(output: str, example: dict[str, Any]) -> Score:
    """1.0 when an accepted opposite is named and no other candidate word is; feedback says why."""
    word, accepted = example["word"], set(example["answers"])
    words = set(re.findall(r"[a-z]+", output.lower()))
    hit = words & accepted
    extra = (words & VOCABULARY) - accepted - {word} - _COMMON
    want = " or ".join(repr(a) for a in example["answers"])
    said = repr(" ".join(output.split())[:80])
    if hit and not extra:
        return Score(
            1.0,
            feedback=f"Correct: the answer names {min(hit)!r}, the opposite of {word!r}.",
            output=output,
        )
    if hit:
        feedback = (
            f"Wrong: {said} names several candidates ({', '.join(sorted(hit | extra))}); the "
            f"answer must name exactly one word, the opposite of {word!r} ({want})."
        )
    else:
        feedback = (
            f"Wrong: expected {want}, the opposite of {word!r}; got {said}. Tell the assistant to "
            "give the opposite of the word (state the rule; example pairs get copied)."
        )
    return Score(0.0, feedback=feedback, output=output)


def expected(example: dict[str, Any]) -> str:
    """The accepted opposites, as bare feedback names them."""
    return " or ".join(repr(a) for a in example["answers"])


def make_task(seed: int = 0) -> Task:
    """The antonyms task with splits drawn from ``seed`` (0 is the published split)."""
    train, val, test = _splits(seed)
    return Task(
        name="antonyms",
        description="reply with the opposite of one English word (114 words)",
        seed_prompt=SEED_PROMPT,
        reference_prompt=REFERENCE_PROMPT,
        train=train,
        val=val,
        test=test,
        render_input=lambda example: f"Input: {example['word']}\nAnswer:",
        metric=metric,
        template="{prompt}\n\n{input}",
        notes=__doc__ or "",
        lm_kwargs={"max_tokens": 24},
        kind="transformation",
        expected=expected,
    )
