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

Two rules keep unusable answers from eating the LM budget: a prompt asks for an answer that fits
the LM's token limit (:attr:`ProposalLoop.length`, the ``{length}`` of the templates) and a
retry after a cut-off answer asks for one that fits; and a reason whose re-asks keep failing the
same way (:data:`GIVE_UP_AFTER` in a row) is not re-asked again in the run
(:attr:`ProposalLoop.reasks_skipped` counts the re-asks not made).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from policyopt.events import REASONS, ProposalJudged
from policyopt.feedback import answer_words, cut_off_reason, length_note
from policyopt.guards import COPIES_EXAMPLE, find_copy
from policyopt.lm.parsing import extract_instruction, proposal_problem
from policyopt.state.memo import JournaledLM
from policyopt.types import LMUsage

__all__ = [
    "DUPLICATE",
    "ECHOES_PROMPT",
    "FAILED",
    "GIVE_UP_AFTER",
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

#: re-asks in a row, over the run, that failed again for the reason they were asked about, after
#: which that reason is no longer re-asked: 3 needs two proposals' evidence (a proposal re-asks at
#: most twice by default), so one bad prompt does not end re-asks for the run, and wastes at
#: most 3 calls on a model that cannot mend that fault
GIVE_UP_AFTER = 3

logger = logging.getLogger(__name__)


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
    Thread-safe: an optimizer may run several proposals at once, inside :meth:`batch`.

    A reason whose last ``give_up_after`` re-asks in the run all failed again for that reason is
    given up: a proposal rejected for it is dropped, not re-asked (counted in
    :attr:`reasks_skipped`). What a re-ask gave is folded into that count only where no proposal
    runs (:meth:`settle`), in the order of the proposal keys, so a fixed seed gives the same run,
    and a resumed run (replaying the same answers) the same one, whichever thread ends first.
    """

    def __init__(
        self,
        lm: JournaledLM,
        *,
        max_retries: int,
        max_chars: int,
        give_up_after: int | None = GIVE_UP_AFTER,
    ) -> None:
        self.lm = lm
        self.max_retries = max_retries
        self.max_chars = max_chars
        self.give_up_after = give_up_after
        #: the most words a prompt asks for, from the LM's ``max_tokens`` (None: unknown)
        self.words = answer_words(lm.answer_tokens)
        self.rejections: dict[str, int] = {}  # reason code -> how many
        self.reasks_skipped: dict[str, int] = {}  # reason code -> re-asks not made (given up)
        self.given_up: set[str] = set()  # reason codes no longer re-asked
        self._streaks: dict[str, int] = {}  # reason code -> re-asks in a row that failed again
        # re-asks not yet folded into the streaks: (proposal key, attempt, reason, failed again)
        self._reasks: list[tuple[str, int, str, bool]] = []
        self._batches = 0
        self._accepted: dict[str, int] = {}  # proposal key -> the attempt that was accepted
        self._lock = threading.Lock()

    @property
    def length(self) -> str:
        """The ``{length}`` text of a proposal prompt: the length the LM's token limit fits
        (:func:`~policyopt.feedback.length_note`; empty when the limit is unknown)."""
        return length_note(self.words)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Proposals run at once (on threads) inside: each sees the re-ask rule as it stood when
        the batch began, and what they gave is folded in when it ends (:meth:`settle`)."""
        self.settle()
        with self._lock:
            self._batches += 1
        try:
            yield
        finally:
            with self._lock:
                self._batches -= 1
            self.settle()

    def settle(self) -> None:
        """Fold the re-asks made since the last call into the streaks, in proposal key order;
        a reason whose streak reaches ``give_up_after`` is given up for the rest of the run."""
        with self._lock:
            if self._batches:
                return  # proposals are running: at the batch's end
            reasks, self._reasks = sorted(self._reasks), []
            for _, _, code, again in reasks:
                self._streaks[code] = self._streaks.get(code, 0) + 1 if again else 0
                limit = self.give_up_after
                if limit is not None and self._streaks[code] >= limit and code not in self.given_up:
                    self.given_up.add(code)
                    logger.info(
                        "the %s LM failed %d re-asks in a row again with %s: not re-asked for it "
                        "from now on",
                        self.lm.kind,
                        self._streaks[code],
                        code,
                    )

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
        for another sample of the same prompt. An answer rejected for a reason given up is not
        re-asked. Outside :meth:`batch`, calls must come one at a time.
        """
        self.settle()  # outside a batch: what the previous proposals' re-asks gave
        reason: str | None = None
        asked: str | None = None  # the reason code the current attempt was re-asked for
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
            code = None if problem is None else problem[0]
            give_up = False
            with self._lock:
                if asked is not None:
                    self._reasks.append((key, attempt, asked, code == asked))
                if code is None:
                    self._accepted[key] = attempt
                else:
                    self.rejections[code] = self.rejections.get(code, 0) + 1
                    give_up = code in self.given_up and attempt < self.max_retries
                    if give_up:
                        self.reasks_skipped[code] = self.reasks_skipped.get(code, 0) + 1
            if problem is None:
                self._judge(key, attempt, None, None, parsed.text)
                return parsed.text
            code, reason = problem
            if code == "cut_off":  # say so, and ask for a length that fits
                reason = cut_off_reason(self.words)
            self._judge(key, attempt, code, reason, None)
            if give_up:
                return None
            asked = code
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
