"""Built-in task ``language_id`` (classification): name the language of one short sentence.

Four labels: English, French, Spanish, German; 25 everyday sentences written in each (the same 25
meanings, so only the language tells them apart). Chosen because SmolLM2-135M can tell these
languages apart when asked, yet does nothing of the kind when not asked: ``Answer the question.``
makes it answer or echo the sentence. Measured on the test split (seed 0, 40 sentences):

- ``Answer the question.`` (the seed): 0.100
- ``Is the sentence below English, French, Spanish or German?``: 0.100
- ``What language is this?``: 0.650
- ``Which language is this sentence in?``: 0.675
- ``Name the language of the sentence below.``: 0.775
- ``Which language is the sentence below written in?`` (the reference): 0.950

``policyopt demo --task language_id --budget 200 --n-jobs 2`` (GEPA, this model as task and
reflection LM, seed 0, earlier small-model settings) ended at 0.325 on the test split. With the
current ones (advice template, 4 samples per reflection),
``policyopt demo --task language_id`` (budget 300, seed 0) ends at 0.875
(benchmarks/results/demo_tasks/).

Measured facts about the model on this task: it failed at sentiment, question-vs-statement and
animal-vs-food labels (it names the same label whatever the input), but recognizes languages;
listing the labels in the prompt (``English, French, Spanish or German?``) makes it name several
of them, which the metric rejects; answers stop at the first newline (it otherwise goes on to
translate the sentence and names a second language). The feedback's rule copied as a prompt
(``Tell the assistant to say which language the sentence is written in ...``) scores 0.750;
``Say which language the sentence is written in.`` 0.775.

The metric counts a verbose but right answer (``The sentence is written in French.``) and rejects
an answer naming several languages. Its feedback says what was expected and the rule.
"""

from __future__ import annotations

import random
import re
from typing import Any

from policyopt.tasks.base import Task
from policyopt.types import Score

__all__ = ["LABELS", "SENTENCES", "make_task", "metric"]

LABELS = ("english", "french", "spanish", "german")

# The same 25 meanings in each language (row i of every list says the same thing).
SENTENCES: dict[str, tuple[str, ...]] = {
    "english": (
        "The cat is sleeping on the bed.",
        "I would like a cup of coffee.",
        "Where is the train station?",
        "My brother lives in a big city.",
        "We are going to the beach tomorrow.",
        "The weather is very nice today.",
        "She reads a book every night.",
        "Thank you for your help.",
        "The children play in the garden.",
        "I do not understand the question.",
        "The shop opens at nine o'clock.",
        "My mother makes soup on Sundays.",
        "The dog is waiting at the door.",
        "We need more bread and milk.",
        "How much does this shirt cost?",
        "The teacher is writing on the board.",
        "It is raining in the mountains.",
        "My friends are coming for dinner tonight.",
        "The red car is parked in front of the house.",
        "I have lost my keys again.",
        "The museum is closed on Mondays.",
        "Can you open the window, please?",
        "The baby is sleeping now.",
        "We walked along the river after lunch.",
        "This apple is sweet and fresh.",
    ),
    "french": (
        "Le chat dort sur le lit.",
        "Je voudrais une tasse de café.",
        "Où est la gare ?",
        "Mon frère habite dans une grande ville.",
        "Nous allons à la plage demain.",
        "Il fait très beau aujourd'hui.",
        "Elle lit un livre chaque soir.",
        "Merci pour votre aide.",
        "Les enfants jouent dans le jardin.",
        "Je ne comprends pas la question.",
        "Le magasin ouvre à neuf heures.",
        "Ma mère fait de la soupe le dimanche.",
        "Le chien attend à la porte.",
        "Nous avons besoin de plus de pain et de lait.",
        "Combien coûte cette chemise ?",
        "Le professeur écrit au tableau.",
        "Il pleut dans les montagnes.",
        "Mes amis viennent dîner ce soir.",
        "La voiture rouge est garée devant la maison.",
        "J'ai encore perdu mes clés.",
        "Le musée est fermé le lundi.",
        "Peux-tu ouvrir la fenêtre, s'il te plaît ?",
        "Le bébé dort maintenant.",
        "Nous avons marché le long de la rivière après le déjeuner.",
        "Cette pomme est douce et fraîche.",
    ),
    "spanish": (
        "El gato duerme en la cama.",
        "Quiero una taza de café.",
        "¿Dónde está la estación de tren?",
        "Mi hermano vive en una ciudad grande.",
        "Mañana vamos a la playa.",
        "Hoy hace muy buen tiempo.",
        "Ella lee un libro cada noche.",
        "Gracias por tu ayuda.",
        "Los niños juegan en el jardín.",
        "No entiendo la pregunta.",
        "La tienda abre a las nueve.",
        "Mi madre hace sopa los domingos.",
        "El perro espera en la puerta.",
        "Necesitamos más pan y leche.",
        "¿Cuánto cuesta esta camisa?",
        "El profesor escribe en la pizarra.",
        "Llueve en las montañas.",
        "Mis amigos vienen a cenar esta noche.",
        "El coche rojo está aparcado delante de la casa.",
        "He perdido mis llaves otra vez.",
        "El museo está cerrado los lunes.",
        "¿Puedes abrir la ventana, por favor?",
        "El bebé está durmiendo ahora.",
        "Caminamos por el río después del almuerzo.",
        "Esta manzana es dulce y fresca.",
    ),
    "german": (
        "Die Katze schläft auf dem Bett.",
        "Ich möchte eine Tasse Kaffee.",
        "Wo ist der Bahnhof?",
        "Mein Bruder wohnt in einer großen Stadt.",
        "Morgen gehen wir an den Strand.",
        "Das Wetter ist heute sehr schön.",
        "Sie liest jeden Abend ein Buch.",
        "Danke für deine Hilfe.",
        "Die Kinder spielen im Garten.",
        "Ich verstehe die Frage nicht.",
        "Der Laden öffnet um neun Uhr.",
        "Meine Mutter kocht sonntags Suppe.",
        "Der Hund wartet an der Tür.",
        "Wir brauchen mehr Brot und Milch.",
        "Wie viel kostet dieses Hemd?",
        "Der Lehrer schreibt an die Tafel.",
        "Es regnet in den Bergen.",
        "Meine Freunde kommen heute Abend zum Essen.",
        "Das rote Auto parkt vor dem Haus.",
        "Ich habe meine Schlüssel wieder verloren.",
        "Das Museum ist montags geschlossen.",
        "Kannst du bitte das Fenster öffnen?",
        "Das Baby schläft jetzt.",
        "Nach dem Mittagessen sind wir am Fluss entlang gegangen.",
        "Dieser Apfel ist süß und frisch.",
    ),
}

# Other language names: naming one of them next to the right label is hedging too.
_OTHER_LANGUAGES = {
    "italian",
    "portuguese",
    "dutch",
    "latin",
    "russian",
    "greek",
    "polish",
    "swedish",
    "chinese",
    "japanese",
    "arabic",
    "catalan",
}

SEED_PROMPT = "Answer the question."
REFERENCE_PROMPT = "Which language is the sentence below written in?"


def _splits(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded, stratified train/val/test of 30/30/40: 10 test sentences per language."""
    rng = random.Random(seed)
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for position, label in enumerate(LABELS):
        rows = [
            {"id": f"{label[:2]}{i:02d}", "sentence": sentence, "label": label}
            for i, sentence in enumerate(SENTENCES[label])
        ]
        rng.shuffle(rows)
        n_train = 8 if position % 2 == 0 else 7  # 8+7+8+7 = 30 in train, the rest in val
        test.extend(rows[:10])
        train.extend(rows[10 : 10 + n_train])
        val.extend(rows[10 + n_train :])
    for split in (train, val, test):
        rng.shuffle(split)
    return train, val, test


def render_input(example: dict[str, Any]) -> str:
    """The sentence as the model sees it."""
    return f"Input: {example['sentence']}\nAnswer:"


def metric(output: str, example: dict[str, Any]) -> Score:
    """1.0 when the output names the right language and no other one; feedback says why."""
    label = example["label"]
    words = set(re.findall(r"[a-z]+", output.lower()))
    named = words & (set(LABELS) | _OTHER_LANGUAGES)
    said = repr(" ".join(output.split())[:80])
    want = label.capitalize()
    if named == {label}:
        return Score(1.0, feedback=f"Correct: the sentence is {want}.", output=output)
    if label in named:
        feedback = (
            f"Wrong: {said} names several languages ({', '.join(sorted(named))}); the answer "
            f"must name exactly one language, {want}. Do not list the possible languages in "
            "the prompt; ask for the language of the sentence."
        )
    else:
        feedback = (
            f"Wrong: expected {want}, the language the sentence is written in; got {said}. "
            "Tell the assistant to say which language the sentence is written in (state the "
            "rule; do not list the languages)."
        )
    return Score(0.0, feedback=feedback, output=output)


def expected(example: dict[str, Any]) -> str:
    """The sentence's language, as bare feedback names it."""
    return str(example["label"]).capitalize()


def make_task(seed: int = 0) -> Task:
    """The language_id task with splits drawn from ``seed`` (0 is the published split)."""
    train, val, test = _splits(seed)
    return Task(
        name="language_id",
        description=(
            "name the language of a sentence: English, French, Spanish or German (100 sentences)"
        ),
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
        kind="classification",
        expected=expected,
    )
