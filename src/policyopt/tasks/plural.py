"""Built-in task ``plural``: reply with the plural of one English noun.

Added for held-out evaluation (:mod:`policyopt.bench.heldout`): no default or preset was tuned on
it. It is of antonyms' kind: a one-word transformation the model does when asked and ignores when
not (``Answer the question.`` makes it describe the noun), so the instruction carries the score.
The nouns mix regular plurals (``cat``), spelling rules (``box``, ``city``, ``knife``,
``potato``) and irregular ones (``child``, ``mouse``, ``cactus``); both forms count where both
are in use (``cacti`` or ``cactuses``). Seed and reference accuracy on the local model are in
benchmarks/RESULTS.md (*Held-out protocol*).

The metric counts a verbose but right answer (``The plural of "cat" is "cats".``) and rejects an
answer naming the plural of another noun of the pool too. Its hint feedback says what was expected
and states the rule; bare feedback (``plural[feedback=bare]``) only says what was expected.
"""

from __future__ import annotations

import random
import re
from typing import Any

from policyopt.tasks.base import Task
from policyopt.types import Score

__all__ = ["make_task"]

# noun:accepted|plurals; regular, -es, -ies, -ves, -oes, vowel + y, irregular and Latin/Greek.
_NOUNS = """
cat:cats; dog:dogs; car:cars; tree:trees; book:books; apple:apples; horse:horses; bird:birds;
house:houses; river:rivers; table:tables; chair:chairs; pencil:pencils; flower:flowers;
garden:gardens; window:windows; door:doors; road:roads; cloud:clouds; star:stars; girl:girls;
king:kings; friend:friends; ship:ships; lamp:lamps; shoe:shoes; hat:hats; cup:cups; egg:eggs;
box:boxes; bus:buses|busses; glass:glasses; church:churches; dish:dishes; fox:foxes;
watch:watches; brush:brushes; kiss:kisses; class:classes; beach:beaches; bench:benches;
wish:wishes; match:matches; dress:dresses; lunch:lunches; tax:taxes; peach:peaches;
bush:bushes; city:cities; baby:babies; story:stories; party:parties; lady:ladies;
family:families; country:countries; cherry:cherries; puppy:puppies; berry:berries; fly:flies;
army:armies; body:bodies; library:libraries; knife:knives; wolf:wolves; leaf:leaves;
wife:wives; life:lives; shelf:shelves; half:halves; loaf:loaves; thief:thieves;
calf:calves; scarf:scarves|scarfs; elf:elves; potato:potatoes; tomato:tomatoes; hero:heroes;
echo:echoes; volcano:volcanoes|volcanos; mosquito:mosquitoes|mosquitos; day:days; key:keys;
toy:toys; boy:boys; monkey:monkeys; valley:valleys; donkey:donkeys; holiday:holidays;
child:children; mouse:mice; man:men; foot:feet; tooth:teeth; woman:women; goose:geese;
person:people|persons; ox:oxen; die:dice; cactus:cacti|cactuses; fungus:fungi|funguses;
nucleus:nuclei; radius:radii|radiuses; crisis:crises; analysis:analyses; thesis:theses;
phenomenon:phenomena; criterion:criteria; medium:media|mediums; index:indices|indexes;
appendix:appendices|appendixes; alumnus:alumni; stimulus:stimuli; basis:bases; oasis:oases;
axis:axes; diagnosis:diagnoses"""

POOL: list[tuple[str, list[str]]] = [
    (noun.strip(), plurals.strip().split("|"))
    for noun, plurals in (item.split(":") for item in _NOUNS.replace("\n", " ").split(";"))
]
#: every accepted plural of the pool: naming one of another noun is a second candidate answer
PLURALS = {p for _, plurals in POOL for p in plurals}

SEED_PROMPT = "Answer the question."
REFERENCE_PROMPT = "Give the plural of the word below."


def _splits(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded train/val/test of a third each (the pool shuffled by ``seed``)."""
    rows = [{"id": noun, "word": noun, "answers": plurals} for noun, plurals in POOL]
    random.Random(seed).shuffle(rows)
    third = len(rows) // 3
    return rows[:third], rows[third : 2 * third], rows[2 * third :]


def expected(example: dict[str, Any]) -> str:
    """The accepted plurals, as bare feedback names them."""
    return " or ".join(repr(p) for p in example["answers"])


def metric(output: str, example: dict[str, Any]) -> Score:
    """1.0 when an accepted plural is named and no other noun's plural is; feedback says why."""
    word, accepted = example["word"], set(example["answers"])
    words = set(re.findall(r"[a-z]+", output.lower()))
    hit = words & accepted
    extra = (words & PLURALS) - accepted
    said = repr(" ".join(output.split())[:80])
    if hit and not extra:
        return Score(
            1.0,
            feedback=f"Correct: the answer names {min(hit)!r}, the plural of {word!r}.",
            output=output,
        )
    if hit:
        feedback = (
            f"Wrong: {said} names several plurals ({', '.join(sorted(hit | extra))}); the answer "
            f"must name exactly one word, the plural of {word!r} ({expected(example)})."
        )
    else:
        feedback = (
            f"Wrong: expected {expected(example)}, the plural of {word!r}; got {said}. Tell the "
            "assistant to give the plural form of the noun (state the rule; example pairs get "
            "copied)."
        )
    return Score(0.0, feedback=feedback, output=output)


def render_input(example: dict[str, Any]) -> str:
    """The noun as the model sees it (a module function, so the program pickles)."""
    return f"Input: {example['word']}\nAnswer:"


def make_task(seed: int = 0) -> Task:
    """The plural task with splits drawn from ``seed`` (0 is the published split)."""
    train, val, test = _splits(seed)
    return Task(
        name="plural",
        description=f"reply with the plural of one English noun ({len(POOL)} nouns)",
        seed_prompt=SEED_PROMPT,
        reference_prompt=REFERENCE_PROMPT,
        train=train,
        val=val,
        test=test,
        render_input=render_input,
        metric=metric,
        template="{prompt}\n\n{input}",
        notes=__doc__ or "",
        lm_kwargs={"max_tokens": 24},
        kind="transformation",
        expected=expected,
    )
