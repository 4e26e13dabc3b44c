"""The copy guard: catch a proposed prompt that copies training examples into itself.

Small reflection models paste an example's input or expected answer into the new instruction
("The provided answer \"Paris\" is correct ..."); such a prompt can win on the small valset and
lose on the test split. The guard reads the reflection records (``Input`` / ``Answer`` /
``Feedback``, :func:`policyopt.feedback.make_records`): each record's *instance strings*
are the string and number values of its input (expected answers included when the example
carries them) and the strings quoted in its feedback (where metrics name the expected answer).

A proposal copies an example when, for a string of at least ``min_chars`` characters that is
specific to one record (a value shared by two records, e.g. a class label, is not) and not
already in the parent prompt, one of these holds:

- it is quoted in the proposal (``"Paris"``, ``'hot'``, backticks, curly quotes), alone or, for
  a phrase of several words, inside a longer quote (one word inside a quoted sentence is not
  enough: measured on 571 real local-model proposals, that flagged ordinary words);
- it is a phrase of several words, at least ``min_phrase_chars`` long, and appears as a whole
  phrase anywhere in the proposal;
- two different strings of the same record both appear as whole words (an input with its
  answer: ``hot ... cold``).

Matching ignores case and runs of whitespace, and only counts whole words.

A label shared by records is not a copy by the rules above, but a proposal that names exactly
one answer of the task's label set (:func:`policyopt.feedback.output_space`) and no condition
(``Answer French.``) fixes one example's answer for every input: :func:`find_fixed_answer`
catches it, and the proposer counts it as a copy too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["COPIES_EXAMPLE", "find_copy", "find_fixed_answer", "instance_strings", "quoted"]

#: the rejection reason a copied proposal is counted under
COPIES_EXAMPLE = "copies_example"

_QUOTED = re.compile(
    r"""(?<!\w)"([^"\n]+)"(?!\w)|(?<!\w)'([^'\n]+)'(?!\w)|`([^`\n]+)`|“([^”\n]+)”|‘([^’\n]+)’"""
)
_TRIM = " \t\n.,;:!?"


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(_TRIM)


def quoted(text: str) -> list[str]:
    """The strings inside quotes (double, single, backtick or curly) in ``text``."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str | int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)


def instance_strings(record: Mapping[str, Any]) -> set[str]:
    """One reflection record's example strings, normalized: the input's values (the input
    itself when it is not JSON) and the strings quoted in its feedback."""
    found: set[str] = set()
    raw = record.get("Input", "")
    if isinstance(raw, str):
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
    else:
        value = raw
    found.update(_leaves(value))
    feedback = record.get("Feedback", "")
    if isinstance(feedback, str):
        found.update(quoted(feedback))
    return {n for s in found if (n := _norm(s))}


def _contains(haystack: str, needle: str) -> bool:
    """``needle`` occurs in ``haystack`` (both normalized) with no letter or digit either side."""
    start = haystack.find(needle)
    while start >= 0:
        end = start + len(needle)
        before = haystack[start - 1] if start > 0 else " "
        after = haystack[end] if end < len(haystack) else " "
        if not before.isalnum() and not after.isalnum():
            return True
        start = haystack.find(needle, start + 1)
    return False


def find_copy(
    proposal: str,
    parent: str,
    records: Sequence[Mapping[str, Any]],
    *,
    min_chars: int = 3,
    min_phrase_chars: int = 12,
) -> str | None:
    """The example string ``proposal`` copies (see the module docstring), or None."""
    per_record = [instance_strings(r) for r in records]
    shared = Counter(s for strings in per_record for s in strings)
    text = _norm(proposal)
    before = _norm(parent)
    spans = [_norm(q) for q in quoted(proposal)]
    for strings in per_record:
        specific = sorted(
            s
            for s in strings
            if len(s) >= min_chars and shared[s] == 1 and not _contains(before, s)
        )
        present = [s for s in specific if _contains(text, s)]
        for s in present:
            if s in spans or (" " in s and any(_contains(span, s) for span in spans)):
                return s
            if " " in s and len(s) >= min_phrase_chars:
                return s
        distinct = [s for s in present if not any(s != o and s in o for o in present)]
        if len(distinct) >= 2:
            return " / ".join(distinct[:2])
    return None


_CONDITION = re.compile(r"\b(if|when|whether|unless|otherwise|else|which|what)\b")


def find_fixed_answer(
    proposal: str, parent: str, labels: Sequence[str], *, min_chars: int = 3
) -> str | None:
    """The one label ``proposal`` fixes as the answer, or None.

    With a label set of two or more, a proposal that names exactly one label (whole words,
    any case; labels shorter than ``min_chars`` are not looked for: ``no`` is an ordinary word),
    that its parent did not name, and that asks no question of the input (no ``if``, ``when``,
    ``which``, ...) answers every input with one example's answer."""
    names = {n for label in labels if (n := _norm(label))}
    if len(names) < 2:
        return None
    text = _norm(proposal)
    named = [n for n in sorted(names) if _contains(text, n)]
    if len(named) != 1 or len(named[0]) < min_chars or _contains(_norm(parent), named[0]):
        return None
    return None if _CONDITION.search(text) else named[0]
