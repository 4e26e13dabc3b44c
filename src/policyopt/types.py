"""Core types: the program being optimized, scores, example ids, candidates and results.

These are the contract between users, optimizers and the rest of the library. Everything here
is plain data; nothing imports upward.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from policyopt._version import __version__
from policyopt.errors import ConfigError, DatasetError, ScoreTypeError, describe
from policyopt.prompts import Message, PromptShape, validate_prompt

__all__ = [
    "SCHEMA_VERSION",
    "Candidate",
    "ExampleId",
    "LMUsage",
    "OptimizationResult",
    "Program",
    "Prompt",
    "PromptValue",
    "Score",
    "encodable",
    "example_ids",
    "normalize_score",
    "prompt_key",
    "validate_prompt",
]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(value: Any) -> Any:
    """``value`` with U+FFFD for every lone surrogate in its text (keys too): an exception's
    message or a server's ``\\ud800`` escape can hold one, and no UTF-8 file or answer can."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value


SCHEMA_VERSION = 1

#: A prompt is one text, named components for multi-prompt programs, or a list of chat
#: messages whose contents are the components (see :mod:`policyopt.prompts`).
Prompt: TypeAlias = "str | dict[str, str] | list[dict[str, str]]"

#: The same, as pydantic fields declare it (a result holds prompts in the user's shape).
PromptValue: TypeAlias = str | dict[str, str] | list[Message]

#: Example ids are strings so that per-example score maps round-trip exactly through JSON.
ExampleId: TypeAlias = str


@dataclass(frozen=True, slots=True)
class Score:
    """What ``evaluate`` may return: a score plus text feedback and extras.

    ``feedback`` tells what went wrong (GEPA reflects on it); ``output`` is what the program
    produced; ``trace`` is anything that helps explain it; ``objectives`` holds named scores for
    multi-objective runs.
    """

    score: float
    feedback: str | None = None
    output: Any = None
    trace: Any = None
    objectives: Mapping[str, float] | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.score, bool) or not isinstance(self.score, numbers.Real):
            raise ScoreTypeError(
                f"Score.score must be a real number; got {describe(self.score)} instead."
            )
        object.__setattr__(self, "score", float(self.score))
        if self.feedback is not None and not isinstance(self.feedback, str):
            raise ScoreTypeError(
                f"Score.feedback must be a str or None; got {describe(self.feedback)} instead."
            )
        if self.objectives is not None:
            if not isinstance(self.objectives, Mapping):
                raise ScoreTypeError(
                    "Score.objectives must be a dict of name -> number; "
                    f"got {describe(self.objectives)} instead."
                )
            clean: dict[str, float] = {}
            for name, value in self.objectives.items():
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ScoreTypeError(
                        f"Score.objectives[{name!r}] must be a number; got {describe(value)}."
                    )
                clean[str(name)] = float(value)
            object.__setattr__(self, "objectives", clean)


def normalize_score(value: object) -> Score:
    """Turn what ``evaluate`` returned into a :class:`Score` (the one place this happens).

    Accepts a ``Score``, a real number (``bool`` excluded: it is almost always a bug), or a
    ``(score, feedback)`` pair. Anything else raises :class:`ScoreTypeError`.
    """
    if isinstance(value, Score):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return Score(float(value))
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], numbers.Real)
        and not isinstance(value[0], bool)
        and (value[1] is None or isinstance(value[1], str))
    ):
        return Score(float(value[0]), feedback=value[1])
    raise ScoreTypeError(
        "evaluate(prompt, example) must return a float, a (float, feedback) pair or a "
        f"policyopt.Score; got {describe(value)} instead. Wrap it, e.g. "
        "`return Score(score=1.0, feedback='...')`."
    )


def is_finite(score: Score) -> bool:
    """True when the score (and every objective) is a finite number."""
    if not math.isfinite(score.score):
        return False
    return score.objectives is None or all(math.isfinite(v) for v in score.objectives.values())


def prompt_key(prompt: str | Mapping[str, str] | Sequence[Mapping[str, str]]) -> str:
    """Stable content hash of a prompt: the rollout cache and journal key it by this.

    The JSON form keeps the shapes apart: ``"hi"``, ``{"prompt": "hi"}`` and
    ``[{"role": "user", "content": "hi"}]`` hash differently.
    """
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a lone surrogate (an LM can answer one) still hashes, stably
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def example_ids(examples: Sequence[Any], *, name: str = "trainset") -> list[ExampleId]:
    """Stable id of each example: its ``"id"`` key when present, else its index, as a str.

    Raises :class:`DatasetError` for an empty dataset, an unusable id or duplicate ids.
    """
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise DatasetError(
            f"The {name!r} must be a list of examples; got {describe(examples)} instead."
        )
    if len(examples) == 0:
        raise DatasetError(f"The {name!r} is empty; pass at least one example.")
    ids: list[ExampleId] = []
    seen: dict[str, int] = {}
    for index, example in enumerate(examples):
        raw: object = index
        if isinstance(example, Mapping) and "id" in example:
            raw = example["id"]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                raise DatasetError(
                    f"Example {index} of the {name!r} has an 'id' of {describe(raw)}; "
                    "ids must be str or int."
                )
        ident = str(raw)
        if ident in seen:
            raise DatasetError(
                f"Duplicate example id {ident!r} in the {name!r} (examples {seen[ident]} and "
                f"{index}). Give every example a unique 'id', or drop the 'id' keys to use "
                "list positions."
            )
        seen[ident] = index
        ids.append(ident)
    return ids


class Program:
    """The thing being optimized: a seed prompt and the user's ``evaluate`` (and ``run``).

    ``evaluate(prompt, example)`` runs the user's program with ``prompt`` on one example and
    returns a float or a :class:`Score`. It receives the prompt in the seed's shape (str, dict,
    or a list of chat messages with optimized contents). ``run(prompt, example)``, optional,
    returns the program's output (MIPRO bootstraps demonstrations from it). ``objective`` (what
    the prompt or artifact is for) and ``background`` (domain facts, constraints) are shown to
    the optimizer's LM in every proposal prompt, and are part of a run's identity.
    """

    __slots__ = ("background", "evaluate", "objective", "prompt", "run")

    def __init__(
        self,
        prompt: str | Mapping[str, str] | Sequence[Mapping[str, str]],
        evaluate: Callable[[Any, Any], object],
        run: Callable[[Any, Any], object] | None = None,
        *,
        objective: str | None = None,
        background: str | None = None,
    ) -> None:
        self.prompt: str | dict[str, str] | list[Message] = validate_prompt(prompt, name="prompt")
        if not callable(evaluate):
            raise ConfigError(
                f"The 'evaluate' parameter of Program must be callable as evaluate(prompt, "
                f"example); got {describe(evaluate)} instead."
            )
        if run is not None and not callable(run):
            raise ConfigError(
                f"The 'run' parameter of Program must be callable or None; got {describe(run)}."
            )
        for name, text in (("objective", objective), ("background", background)):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ConfigError(
                    f"The {name!r} parameter of Program must be a non-empty str or None; got "
                    f"{describe(text)} instead."
                )
        self.evaluate = evaluate
        self.run = run
        self.objective = objective
        self.background = background

    @property
    def components(self) -> list[str]:
        """Names of the prompt's components (``["prompt"]`` for a single text, the message
        names for chat messages: see :mod:`policyopt.prompts`)."""
        return list(PromptShape.of(self.prompt).names)

    def __repr__(self) -> str:
        name = getattr(self.evaluate, "__qualname__", type(self.evaluate).__name__)
        return f"Program(prompt={self.prompt!r:.60}, evaluate={name})"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LMUsage(_Frozen):
    """Usage of one LM: calls, cache hits, tokens and cost (``None`` when the price is unknown)."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def __add__(self, other: LMUsage) -> LMUsage:
        cost = (
            None
            if self.cost_usd is None or other.cost_usd is None
            else self.cost_usd + other.cost_usd
        )
        return LMUsage(
            calls=self.calls + other.calls,
            cache_hits=self.cache_hits + other.cache_hits,
            errors=self.errors + other.errors,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=cost,
        )


class Candidate(_Frozen):
    """One prompt an optimizer tried, with its lineage and per-example validation scores."""

    index: int
    prompt: PromptValue
    parents: list[int] = Field(default_factory=list)
    origin: str = "seed"
    val_scores: dict[ExampleId, float] = Field(default_factory=dict)
    found_at_rollout: int = 0

    @property
    def val_score(self) -> float:
        """Mean validation score over the examples it was scored on (0.0 when none)."""
        if not self.val_scores:
            return 0.0
        return math.fsum(self.val_scores.values()) / len(self.val_scores)


class OptimizationResult(_Frozen):
    """What every optimizer returns: frozen, JSON round-trippable, versioned."""

    schema_version: int = SCHEMA_VERSION
    library_version: str = __version__
    optimizer: str
    best_prompt: PromptValue
    best_score: float
    best_candidate: int
    candidates: list[Candidate]
    n_rollouts: int
    max_rollouts: int | None = None
    lm_usage: dict[str, LMUsage] = Field(default_factory=dict)
    cost_usd: float | None = 0.0
    seed: int
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    stop_reason: str = ""
    wall_time_s: float = 0.0
    details: dict[str, JsonValue] = Field(default_factory=dict)

    def to_json(self, *, indent: int | None = None) -> str:
        """Serialize to JSON; :meth:`from_json` gives back an equal object (text holding a
        lone surrogate, which no UTF-8 file can, gets U+FFFD in its place)."""
        try:
            return self.model_dump_json(indent=indent)
        except ValueError:  # pydantic's serialization error: a lone surrogate in some text
            return json.dumps(encodable(self.model_dump(mode="json")), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> OptimizationResult:
        """Parse a result written by :meth:`to_json` (by this or an older schema version)."""
        return cls.model_validate_json(text)
