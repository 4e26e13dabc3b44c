"""LM calls memoized in the run journal, so a resumed run replays them instead of paying again.

Each call has a position key chosen by the optimizer (e.g. ``iteration/slot/component/attempt``)
and the hash of its prompt. On replay, a journal record with the same key and prompt hash
answers without calling the LM; a different prompt hash means the run diverged, and the LM is
asked again. Usage is counted from the records, so it is the same in a fresh and a resumed run.

Any answer is handled: a non-str is an LM failure; lone surrogates become ``?``; an answer over
:data:`MAX_ANSWER_CHARS` is cut (and marked ``capped``) before the optimizer sees it, so the
journal stays small and a replay sees exactly what the live run saw.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policyopt.errors import LMError, StopRequested, describe
from policyopt.events import ProposalJudged
from policyopt.state.journal import Journal
from policyopt.types import LMUsage

__all__ = ["MAX_ANSWER_CHARS", "JournaledLM", "clean_text", "record_usage", "split_choices"]

#: characters of one LM answer kept (and journaled); longer answers are cut and marked capped
MAX_ANSWER_CHARS = 65_536


def record_usage(record: Mapping[str, Any]) -> LMUsage:
    """The usage of one journaled LM answer: one call, its tokens and cost."""
    return LMUsage(
        calls=int(record.get("calls", 1)),  # 0: a choice of a call journaled apart
        prompt_tokens=int(record.get("prompt_tokens") or 0),
        completion_tokens=int(record.get("completion_tokens") or 0),
        cost_usd=record.get("cost_usd"),
    )


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by ``?``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def split_choices(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The journal's records with each call of several choices (:meth:`JournaledLM.ask_samples`)
    replaced by one record per choice, under the key that choice answered."""
    out: list[Mapping[str, Any]] = []
    for r in records:
        if not isinstance(r.get("texts"), list) or not isinstance(r.get("keys"), list):
            out.append(r)
            continue
        capped = r.get("capped") or {}
        for i, (key, text, finish) in enumerate(
            zip(
                r["keys"],
                r["texts"],
                r.get("finish_reasons") or [None] * len(r["texts"]),
                strict=False,
            )
        ):
            choice = {"type": r.get("type"), "key": key, "text": text, "finish_reason": finish}
            out.append({**choice, **({"capped": capped[str(i)]} if str(i) in capped else {})})
    return out


class JournaledLM:
    """Wraps an LM (``complete()`` or a plain callable); answers are journaled and replayed.

    With ``on_error``, a failed call (after the LM's own retries) is reported to it and
    :meth:`ask` returns None (the caller skips that proposal); ``on_error`` may raise to stop
    the run. Without it, the error propagates.

    ``can_pay(n)`` says whether the rollout budget can still pay for the answers of ``n`` live
    calls (this one and those in flight): a live call whose answer could not be scored is not
    made, and :class:`~policyopt.errors.StopRequested` ``("budget")`` ends the run instead.
    Replayed answers cost nothing and are always given. ``brief`` is the run's objective and
    background text, which :class:`~policyopt.proposals.ProposalLoop` puts above every proposal.
    ``verdicts`` are the journal's verdict records on this LM's answers (see :meth:`judged`);
    ``on_verdict`` gets every verdict as an event (the run's event bus).
    """

    def __init__(
        self,
        lm: Any,
        *,
        journal: Journal | None,
        memo: Sequence[Mapping[str, Any]] = (),
        kind: str = "proposal",
        on_error: Callable[[BaseException, str], None] | None = None,
        on_ok: Callable[[], None] | None = None,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        can_pay: Callable[[int], bool] | None = None,
        brief: str = "",
        verdicts: Sequence[Mapping[str, Any]] = (),
        on_verdict: Callable[[ProposalJudged], None] | None = None,
    ) -> None:
        self.lm = lm
        self.on_verdict = on_verdict
        # (answer key, verdict) -> record: an answer is accepted, rejected, or both (a duplicate)
        self.verdicts: dict[tuple[str, str], Mapping[str, Any]] = {
            (str(r.get("key")), str(r.get("verdict"))): r for r in verdicts
        }
        self.brief = brief
        self.can_pay = can_pay
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.refused = 0  # live calls not made: the cap was reached
        self._in_flight = 0
        self.journal = journal
        self.kind = kind
        self.on_error = on_error
        self.on_ok = on_ok
        self.memo: dict[str, Mapping[str, Any]] = {r["key"]: r for r in memo}
        self.usage = LMUsage()  # the run's path: live and replayed answers
        # the bill: every live call journaled by any segment of the run, and this one's
        self.billed = sum((record_usage(r) for r in memo), LMUsage())
        self._shared: dict[str, dict[str, Any]] = {}  # key -> a choice of an ask_samples call
        self._lock = threading.Lock()

    def ask(self, key: str, prompt: str, *, sample: int = 0) -> Mapping[str, Any] | None:
        """The answer record (``text``, ``finish_reason``, tokens, cost) for ``prompt``.

        ``sample`` > 0 asks for another sample of the same prompt: a policyopt LM gets
        ``seed=`` its own seed + ``sample`` (a plain callable is asked as is). None when the LM
        failed and ``on_error`` chose to skip the call, or when ``max_calls``/``max_tokens`` are
        reached: a hard cap, checked before every live call (calls in flight count), so the
        optimizer skips the proposal and its stop check ends the run.
        """
        prompt = clean_text(prompt)
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
        with self._lock:
            shared = self._shared.pop(key, None)
        record = self.memo.get(key)
        if shared is not None and shared["prompt_hash"] == digest:
            record = shared  # answered by ask_samples' call, counted there
        elif record is None or record.get("prompt_hash") != digest:
            if self.can_pay is not None and not self.can_pay(self._in_flight + 1):
                raise StopRequested("budget")
            if not self._reserve():
                return None
            try:
                record = self._call(key, prompt, digest, sample)
            except Exception as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc, f"{self.kind} {key}")
                return None
            finally:
                with self._lock:
                    self._in_flight -= 1
            self._bill(record)
        self._use(record)
        return record

    def _bill(self, record: Mapping[str, Any]) -> None:
        """A live call's record: journaled, and added to the bill of every segment."""
        if self.journal is not None:
            self.journal.append(record)
        with self._lock:
            self.billed = self.billed + record_usage(record)

    def _use(self, record: Mapping[str, Any]) -> None:
        """An answer the run goes on with (live or replayed): counted on the run's path."""
        if self.on_ok is not None:
            self.on_ok()
        with self._lock:
            self.usage = self.usage + record_usage(record)

    @property
    def answer_tokens(self) -> int | None:
        """The LM's ``max_tokens`` (the longest answer it gives), None when it has none: from a
        policyopt LM's settings, or a plain object's ``max_tokens``."""
        settings = getattr(self.lm, "kwargs", None)
        if isinstance(settings, Mapping):
            value = settings.get("max_tokens")
        else:
            value = getattr(self.lm, "max_tokens", None)
        return value if isinstance(value, int) and value > 0 else None

    def judged(self, verdict: ProposalJudged) -> None:
        """Journal the proposal loop's verdict on one of this LM's answers, once: a replayed
        answer's verdict equal to the journaled one is not written again. Then emit it."""
        record = verdict.record()
        mark = (verdict.key, verdict.verdict)
        with self._lock:
            fresh = self.verdicts.get(mark) != record
            if fresh:
                self.verdicts[mark] = record
        if fresh and self.journal is not None:
            self.journal.append(record)
        if self.on_verdict is not None:
            self.on_verdict(verdict)

    def ask_samples(self, key: str, prompt: str, keys: Sequence[str], sample: int) -> None:
        """Ask for ``len(keys)`` samples of ``prompt`` in one call (the API's ``n``), so that
        ``ask(keys[i], prompt)`` is answered by choice ``i`` without a call of its own.

        The prompt is paid once where the API honours ``n`` (``sample`` seeds the call; choice
        ``i`` of a :class:`~policyopt.lm.local.LocalLM` is seeded ``sample + i``). Journaled as
        one record under ``key``, replayed on resume. Choices the LM did not return, a plain
        callable, a failure or a cap leave the keys to their own calls.
        """
        from policyopt.lm.base import LM

        if len(keys) < 2 or not isinstance(self.lm, LM):
            return
        prompt = clean_text(prompt)
        digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
        record = self.memo.get(key)
        if record is None or record.get("prompt_hash") != digest or "texts" not in record:
            if self.can_pay is not None and not self.can_pay(self._in_flight + len(keys)):
                return
            if not self._reserve():
                return
            try:
                record = self._call_n(key, prompt, digest, sample, keys)
            except Exception:
                return  # each key asks alone, and a failure there is handled as usual
            finally:
                with self._lock:
                    self._in_flight -= 1
            self._bill(record)
        self._use(record)
        with self._lock:
            texts, capped = record["texts"], record.get("capped") or {}
            for i, (k, text, finish) in enumerate(
                zip(keys[: len(texts)], texts, record["finish_reasons"], strict=True)
            ):
                self._shared[k] = {
                    "key": k,
                    "prompt_hash": digest,
                    "text": text,
                    "finish_reason": finish,
                    "calls": 0,
                    **({"capped": capped[str(i)]} if str(i) in capped else {}),
                }

    def _call_n(
        self, key: str, prompt: str, digest: str, sample: int, keys: Sequence[str]
    ) -> dict[str, Any]:
        n = len(keys)
        answer = self.lm.complete(prompt, **self._sampling(sample), n=n)
        choices = answer.choices or ((answer.text, answer.finish_reason),)
        if not all(isinstance(text, str) for text, _ in choices):
            raise LMError("the LM answered a choice that is not a str")
        texts = [clean_text(text) for text, _ in choices[:n]]
        record: dict[str, Any] = {
            "type": self.kind,
            "key": key,
            "prompt_hash": digest,
            "keys": list(keys[: len(texts)]),
            "texts": [text[:MAX_ANSWER_CHARS] for text in texts],
            "finish_reasons": [finish for _, finish in choices[:n]],
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "cost_usd": answer.cost_usd,
        }
        capped = {str(i): len(t) for i, t in enumerate(texts) if len(t) > MAX_ANSWER_CHARS}
        if capped:
            record["capped"] = capped
        return record

    def fits(self, calls: int) -> bool:
        """Whether ``calls`` more live calls surely fit under ``max_calls``/``max_tokens``: when
        not, an optimizer makes them one at a time, so which one the cap refuses does not
        depend on which thread was faster (a fixed seed gives the same run)."""
        with self._lock:
            spent = max(self.usage, self.billed, key=lambda u: u.calls)
            if (
                self.max_calls is not None
                and spent.calls + self._in_flight + calls > self.max_calls
            ):
                return False
            if self.max_tokens is None:
                return True
            tokens = spent.prompt_tokens + spent.completion_tokens
            per_call = tokens / spent.calls if spent.calls else self.max_tokens
            return tokens + calls * per_call < self.max_tokens

    def _reserve(self) -> bool:
        """Room for one more live call under the caps (then it counts as in flight)."""
        with self._lock:  # the bill of every segment counts, not only this run's path
            spent = max(self.usage, self.billed, key=lambda u: u.calls)
            calls = spent.calls + self._in_flight
            tokens = spent.prompt_tokens + spent.completion_tokens
            full = (self.max_calls is not None and calls >= self.max_calls) or (
                self.max_tokens is not None and tokens >= self.max_tokens
            )
            if full:
                self.refused += 1
                return False
            self._in_flight += 1
            return True

    def _call(self, key: str, prompt: str, digest: str, sample: int = 0) -> dict[str, Any]:
        complete = getattr(self.lm, "complete", None)
        if complete is not None:
            answer = complete(prompt, **self._sampling(sample))
            text: object = answer.text
            finish = answer.finish_reason
            tokens = (answer.prompt_tokens, answer.completion_tokens)
            cost = answer.cost_usd
        else:
            text, finish, cost = self.lm(prompt), None, None
            tokens = (len(prompt) // 4, len(text) // 4 if isinstance(text, str) else 0)
        if not isinstance(text, str):
            raise LMError(f"the LM answered {describe(text)}, not a str")
        text = clean_text(text)
        record: dict[str, Any] = {
            "type": self.kind,
            "key": key,
            "prompt_hash": digest,
            "text": text[:MAX_ANSWER_CHARS],
            "finish_reason": finish,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "cost_usd": cost,
        }
        if len(text) > MAX_ANSWER_CHARS:
            record["capped"] = len(text)
        return record

    def _sampling(self, sample: int) -> dict[str, Any]:
        """LM keywords for sample ``sample``: another seed (unsupported ones are dropped)."""
        from policyopt.lm.base import LM

        if sample <= 0 or not isinstance(self.lm, LM):
            return {}
        seed = self.lm.kwargs.get("seed")
        base = seed if isinstance(seed, int) else 0
        return {"seed": base + sample, "drop_params": True}
