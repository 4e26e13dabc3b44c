"""The proposal loop every optimizer shares: ask, parse, check, guard, retry, count.

GEPA's reflection, MIPRO's instruction proposers and OPRO's meta prompt all ask the
optimizer's LM (a :class:`~policyopt.state.memo.JournaledLM`) for a new text. One loop does what
they have in common: render the prompt (with why the last answer was rejected), ask, parse the
answer, reject an unusable one (:func:`~policyopt.lm.parsing.proposal_problem`), run the
optimizer's guards (copies of examples, echoes of the prompt's own words, repeats), retry up to
``max_retries`` times, count every rejection under its reason code (one of
:data:`~policyopt.events.REASONS`) in :attr:`ProposalLoop.rejections`, and journal a verdict on
every answer (:class:`~policyopt.events.ProposalJudged`), which ``policyopt show`` reads.
What differs between optimizers (the prompt, how an answer is read, which guards) is passed in.
The program's ``objective`` and ``background`` (:func:`brief`) head every proposal prompt.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from policyopt.events import REASONS, ProposalJudged
from policyopt.guards import COPIES_EXAMPLE, find_copy
from policyopt.lm.parsing import extract_instruction, proposal_problem
from policyopt.state.memo import JournaledLM
from policyopt.types import LMUsage

__all__ = [
    "DUPLICATE",
    "ECHOES_PROMPT",
    "FAILED",
    "Guard",
    "Parsed",
    "ProposalLoop",
    "brief",
    "copy_guard",
    "echo_guard",
    "find_echo",
    "parse_complete",
    "parse_fenced",
    "repeat_guard",
]

#: the reason code of a proposal that repeats the proposal prompt's own words
ECHOES_PROMPT = "echoes_prompt"
#: the reason code of a proposal that repeats a text proposed or scored before
DUPLICATE = "duplicate"


class _Failed:
    def __repr__(self) -> str:
        return "FAILED"


#: what :meth:`ProposalLoop.propose` returns when the LM failed (past its own retries)
FAILED: Final = _Failed()


@dataclass(frozen=True)
class Parsed:
    """An answer read by an optimizer: the proposed text, and whether it looks cut off."""

    text: str
    balanced: bool = True
    truncated: bool = False


def brief(objective: str | None, background: str | None) -> str:
    """The text every proposal prompt of a run starts with: the program's objective and
    background (empty when it has neither)."""
    parts = []
    if objective:
        parts.append(f"Objective: {objective.strip()}")
    if background:
        parts.append(f"Background:\n{background.strip()}")
    return "\n\n".join(parts)


def parse_fenced(record: Mapping[str, Any]) -> Parsed:
    """The last fenced block of the answer (or the whole answer); cut off at the token limit."""
    text, balanced = extract_instruction(str(record["text"]))
    return Parsed(text, balanced, record.get("finish_reason") == "length")


def parse_complete(record: Mapping[str, Any]) -> Parsed:
    """As :func:`parse_fenced`, but an answer cut off or left with an unclosed fence still gives
    its last complete fenced block: for a whole artifact (code), a small model that rambles on
    after the block until its token limit has still written a usable text."""
    parsed = parse_fenced(record)
    if parsed.balanced and not parsed.truncated:
        return parsed
    raw = str(record["text"])
    fences = [m.start() for m in re.finditer("```", raw)]
    closed = len(fences) - len(fences) % 2  # the fences of complete blocks
    if closed < 2:
        return parsed
    text, _ = extract_instruction(raw[: fences[closed - 1] + 3])
    return Parsed(text)


#: a guard: the proposed text -> ``(reason code, retry wording)`` when it must be rejected (the
#: code is one of :data:`~policyopt.events.REASONS`)
Guard = Callable[[str], "tuple[str, str] | None"]

_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_WORD = re.compile(r"[a-z0-9']+")
_HEADING_TOKEN = re.compile(r"[a-z0-9']+|:")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def find_echo(
    proposal: str,
    template: str,
    parent: str = "",
    *,
    also: Sequence[str] = (),
    min_words: int = 8,
    min_share: float = 0.6,
) -> str | None:
    """The words of the proposal prompt's own text that ``proposal`` repeats, or None.

    A reflection model that copies its instructions ("state the general rule the assistant
    must follow, add any task-specific facts ...") or a heading of the template ("Advice on
    its answers:") back as the new prompt leaks the optimizer's request into the user's
    prompt. The prompt's own text is ``template`` without its placeholders, plus ``also``
    (e.g. the retry wording). Caught, where the parent does not already say it: a run of
    ``min_words`` words of that text; a heading of two or more words with its colon; or a
    proposal whose words lie, for ``min_share`` of them, in runs of four words of that text
    (fragments stitched together).
    """
    words = _words(proposal)
    text, before = f" {' '.join(words)} ", f" {' '.join(_words(parent))} "
    # headings compare with their colon: "current instruction:", not the words alone
    marked = f" {' '.join(_HEADING_TOKEN.findall(proposal.casefold()))} "
    marked_before = f" {' '.join(_HEADING_TOKEN.findall(parent.casefold()))} "
    chunks = [c for t in (template, *also) for c in _PLACEHOLDER.split(t)]
    fours: set[tuple[str, ...]] = set()
    for chunk in chunks:
        for line in chunk.splitlines():
            head = _words(line.split(".")[-1])  # the heading after any sentence before it
            heading = f" {' '.join(head)} : "
            is_heading = line.rstrip().endswith(":") and len(head) >= 2
            if is_heading and heading in marked and heading not in marked_before:
                return f"{' '.join(head)}:"
        chunk_words = _words(chunk)
        fours |= _ngrams(chunk_words, 4)
        # in the template's order, not a set's: the phrase named goes into the retry prompt, and
        # a set's order changes with the process's string hashing (another run, another prompt)
        for i in range(len(chunk_words) - min_words + 1):
            phrase = " ".join(chunk_words[i : i + min_words])
            if f" {phrase} " in text and f" {phrase} " not in before:
                return phrase
    fours -= _ngrams(_words(parent), 4)
    covered = [False] * len(words)
    for i in range(len(words) - 3):
        if tuple(words[i : i + 4]) in fours:
            covered[i : i + 4] = [True] * 4
    if len(words) >= 4 and sum(covered) >= min_share * len(words):
        return " ".join(w for w, c in zip(words, covered, strict=True) if c)
    return None


#: the retry sentence of an echo, itself prompt text a model may echo
ECHO_RETRY = "it repeats the request's own words; write only the instruction for the assistant"


def echo_guard(template: str, parent: str, *, also: Sequence[str] = ()) -> Guard:
    """A guard rejecting proposals that echo ``template`` or ``also`` (see :func:`find_echo`)."""
    texts = (*also, ECHO_RETRY)

    def guard(text: str) -> tuple[str, str] | None:
        echoed = find_echo(text, template, parent, also=texts)
        if echoed is None:
            return None
        return ECHOES_PROMPT, (
            f"it repeats the request's own words ({echoed!r}); write only the instruction for "
            "the assistant"
        )

    return guard


def repeat_guard(
    seen: Collection[str], reason: str = "it repeats an earlier proposal; write a different one"
) -> Guard:
    """A guard rejecting a text already proposed or scored: one of ``seen`` (read at each call,
    so the optimizer may keep adding to it), runs of whitespace aside."""

    def guard(text: str) -> tuple[str, str] | None:
        key = " ".join(text.split())
        return (DUPLICATE, reason) if key in {" ".join(s.split()) for s in seen} else None

    return guard


def copy_guard(
    parent: str,
    records: Sequence[Mapping[str, Any]],
    *,
    where: str = "",
    advice: str = "state the general rule and quote no example",
) -> Guard:
    """A guard rejecting a text that copies an example of ``records`` (the ``Input`` /
    ``Answer`` / ``Feedback`` records the LM was shown) into itself, where ``parent`` does not
    already say it (:func:`policyopt.guards.find_copy`); the retry wording says what was copied
    (``where`` to, e.g. " into the instruction") and ``advice``."""

    def guard(text: str) -> tuple[str, str] | None:
        copied = find_copy(text, parent, records)
        if copied is None:
            return None
        return COPIES_EXAMPLE, f"it copies the example text {copied!r}{where}; {advice}"

    return guard


class ProposalLoop:
    """Asks the run's LM for new texts, rejecting and retrying unusable ones at no rollout cost.

    Every answer judged gives one verdict (:class:`~policyopt.events.ProposalJudged`), journaled
    with the run and emitted by the LM (:meth:`~policyopt.state.memo.JournaledLM.judged`).
    Thread-safe: an optimizer may run several proposals at once.
    """

    def __init__(self, lm: JournaledLM, *, max_retries: int, max_chars: int) -> None:
        self.lm = lm
        self.max_retries = max_retries
        self.max_chars = max_chars
        self.rejections: dict[str, int] = {}  # reason code -> how many
        self._accepted: dict[str, int] = {}  # proposal key -> the attempt that was accepted
        self._lock = threading.Lock()

    @property
    def usage(self) -> LMUsage:
        """The LM's usage (counted from journal records: equal in a resumed run)."""
        return self.lm.usage

    @property
    def rejected(self) -> int:
        """Proposals rejected so far, whatever the reason."""
        with self._lock:
            return sum(self.rejections.values())

    def reject(self, code: str, key: str | None = None, detail: str | None = None) -> None:
        """Reject an accepted text after the fact (e.g. the same text as a sibling's): counted
        under ``code``, and with the proposal's ``key`` a second verdict on its answer."""
        with self._lock:
            self.rejections[code] = self.rejections.get(code, 0) + 1
            attempt = self._accepted.get(key) if key is not None else None
        if key is not None and attempt is not None:
            self._judge(key, attempt, code, detail or REASONS.get(code, code), None)

    def _judge(
        self, key: str, attempt: int, code: str | None, detail: str | None, text: str | None
    ) -> None:
        verdict = "accepted" if code is None else "rejected"
        self.lm.judged(
            ProposalJudged(
                key=f"{key}/{attempt}",
                role=self.lm.kind,
                attempt=attempt,
                verdict=verdict,
                reason=code,
                detail=detail,
                text=text,
            )
        )

    def propose(
        self,
        key: str,
        render: Callable[[int, str | None], str],
        *,
        current: str = "",
        parse: Callable[[Mapping[str, Any]], Parsed] = parse_fenced,
        guards: Sequence[Guard] = (),
        sample: int | Callable[[int], int] = 0,
    ) -> str | _Failed | None:
        """A usable new text, None when every attempt was rejected, or :data:`FAILED`.

        ``render(attempt, reason)`` makes the prompt (``reason``: why the last answer was
        rejected); each call is journaled as ``{key}/{attempt}``. ``current`` is the text being
        replaced (a proposal equal to it is unusable). ``sample`` (or ``sample(attempt)``) asks
        for another sample of the same prompt.
        """
        reason: str | None = None
        for attempt in range(self.max_retries + 1):
            prompt = render(attempt, reason)
            if self.lm.brief:  # the run's objective and background, above every optimizer's prompt
                prompt = f"{self.lm.brief}\n\n{prompt}"
            draw = sample(attempt) if callable(sample) else sample
            record = self.lm.ask(f"{key}/{attempt}", prompt, sample=draw)
            if record is None:  # the LM failed past its retries: skip this proposal
                return FAILED
            parsed = parse(record)
            problem = self._problem(record, parsed, current, guards)
            if problem is None:
                with self._lock:
                    self._accepted[key] = attempt
                self._judge(key, attempt, None, None, parsed.text)
                return parsed.text
            code, reason = problem
            with self._lock:
                self.rejections[code] = self.rejections.get(code, 0) + 1
            self._judge(key, attempt, code, reason, None)
        return None

    def _problem(
        self,
        record: Mapping[str, Any],
        parsed: Parsed,
        current: str,
        guards: Sequence[Guard],
    ) -> tuple[str, str] | None:
        """``(code, retry wording)`` when the answer must be rejected, None when it is usable."""
        if record.get("capped"):
            return "too_long", "answer_too_long"
        problem = proposal_problem(
            parsed.text,
            current,
            balanced=parsed.balanced,
            truncated=parsed.truncated,
            max_chars=self.max_chars,
        )
        for guard in guards if problem is None else ():
            problem = guard(parsed.text)
            if problem is not None:
                break
        return problem
