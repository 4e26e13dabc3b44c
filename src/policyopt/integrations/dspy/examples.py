"""A small two-predictor DSPy program with its data and metric: find the city a sentence names,
then the country it is in. The real-model test, ``benchmarks/dspy_program.py`` and the docs run
it on the embedded model; it is small enough for that model to get some of it right.
"""

from __future__ import annotations

import random
from typing import Any

import dspy

__all__ = ["CITIES", "CityCountry", "city_country_data", "country_metric"]

#: (city, country) pairs the examples are made of
CITIES = (
    ("Paris", "France"),
    ("Tokyo", "Japan"),
    ("Madrid", "Spain"),
    ("Vienna", "Austria"),
    ("Rome", "Italy"),
    ("Berlin", "Germany"),
    ("Cairo", "Egypt"),
    ("Ottawa", "Canada"),
    ("Lisbon", "Portugal"),
    ("Moscow", "Russia"),
    ("Athens", "Greece"),
    ("Dublin", "Ireland"),
    ("Oslo", "Norway"),
    ("Warsaw", "Poland"),
    ("Beijing", "China"),
    ("Seoul", "Korea"),
    ("Lima", "Peru"),
    ("Nairobi", "Kenya"),
    ("Havana", "Cuba"),
    ("Stockholm", "Sweden"),
    ("Helsinki", "Finland"),
    ("Budapest", "Hungary"),
    ("Prague", "Czechia"),
    ("Amsterdam", "Netherlands"),
)

_SENTENCES = (
    "Maria flew to {city} for a conference.",
    "We spent a week in {city} last spring.",
    "The team from {city} won again.",
    "He studied music in {city} as a boy.",
    "Our train arrived in {city} at noon.",
    "She opened a bakery in {city}.",
)


class CityCountry(dspy.Module):
    """Two steps: ``extract`` finds the city a text names, ``locate`` names its country.

    Each signature has a one-line instruction, as a user's docstring would give it: the embedded
    model makes nothing of DSPy's default ``Given the fields ...``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(
            dspy.Signature("text -> city", "Which city does the text name?")
        )
        self.locate = dspy.Predict(
            dspy.Signature("city -> country", "Which country is the city in?")
        )

    def forward(self, text: str) -> Any:
        city = self.extract(text=text).city
        return self.locate(city=city)


def city_country_data(
    seed: int = 0, n_train: int = 8, n_val: int = 8, n_test: int = 8
) -> tuple[list[Any], list[Any], list[Any]]:
    """Train, val and test examples (``text`` in; ``city`` and ``country`` labels), each city
    in one split only; drawn from ``seed``."""
    rng = random.Random(seed)
    pairs = list(CITIES)
    rng.shuffle(pairs)
    if n_train + n_val + n_test > len(pairs):
        raise ValueError(f"At most {len(pairs)} examples in all; asked {n_train + n_val + n_test}.")
    examples = [
        dspy.Example(
            text=rng.choice(_SENTENCES).format(city=city), city=city, country=country
        ).with_inputs("text")
        for city, country in pairs
    ]
    return (
        examples[:n_train],
        examples[n_train : n_train + n_val],
        examples[n_train + n_val : n_train + n_val + n_test],
    )


def country_metric(
    gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """1 when the answer names the right country; dspy.GEPA's signature, with feedback for the
    whole program or, given ``pred_name``, for that predictor's step."""
    answer = str(getattr(pred, "country", "") or "")
    ok = gold.country.lower() in answer.lower()
    # each wrong answer's feedback states the rule in the same words (the lesson a reflection
    # can turn into an instruction), then this example's details
    feedback = (
        "Correct."
        if ok
        else "Name the country the city is in, in one word. "
        f"The answer should be {gold.country}; it was {answer[:60]!r}."
    )
    if pred_name == "extract" and pred_trace:
        said = str(pred_trace[0][2].get("city", ""))
        right = gold.city.lower() in said.lower() and len(said) <= 3 * len(gold.city)
        feedback = (
            f"The city step found {gold.city}."
            if right
            else "Answer with only the name of the city in the text. "
            f"It should be {gold.city}; it wrote {said[:60]!r}."
        )
    return dspy.Prediction(score=float(ok), feedback=feedback)
