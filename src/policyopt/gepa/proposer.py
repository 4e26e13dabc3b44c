"""GEPA's proposer: reflection LM calls (journaled, see :mod:`policyopt.state.memo`) through the
shared proposal loop, which rejects and retries unusable proposals, echoes of the reflection
template and (``reject_copies``) proposals that copy an example from the records into the prompt
or fix one answer of the data's label set (``outputs``) as the answer for every input
(:mod:`policyopt.guards`). Call keys are ``iteration/slot/component/attempt``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from policyopt.feedback import RETRY_NOTE
from policyopt.gepa.reflection import ARTIFACT_TEMPLATE, render_prompt
from policyopt.guards import COPIES_EXAMPLE, find_fixed_answer
from policyopt.proposals import (
    FAILED,
    Guard,
    ProposalLoop,
    copy_guard,
    echo_guard,
    parse_complete,
    parse_fenced,
)
from policyopt.state.memo import JournaledLM
from policyopt.types import LMUsage

__all__ = ["Proposer"]


class Proposer:
    """Asks the reflection LM (the run's :class:`JournaledLM`) for a new text through the shared
    :class:`~policyopt.proposals.ProposalLoop`: unusable, copied and echoed proposals are
    retried at no rollout cost."""

    def __init__(
        self,
        lm: JournaledLM,
        *,
        template: str,
        max_retries: int,
        max_chars: int,
        reject_copies: bool = False,
        outputs: Sequence[str] = (),
    ) -> None:
        self.loop = ProposalLoop(lm, max_retries=max_retries, max_chars=max_chars)
        self.template = template
        # a whole artifact: its last complete block, whatever the model wrote after it
        self.parse = parse_complete if template == ARTIFACT_TEMPLATE else parse_fenced
        self.reject_copies = reject_copies
        self.outputs = tuple(outputs)  # the data's label set (empty: free-form answers)

    @property
    def lm(self) -> JournaledLM:
        """The run's reflection LM."""
        return self.loop.lm

    @property
    def usage(self) -> LMUsage:
        """Reflection LM usage (counted from journal records: equal in a resumed run)."""
        return self.loop.usage

    @property
    def rejections(self) -> dict[str, int]:
        """Rejected proposals by reason (``copies_example``, ``echoes_prompt``, ...)."""
        return self.loop.rejections

    @property
    def reasks_skipped(self) -> dict[str, int]:
        """Re-asks not made by reason: the model kept failing that way (see ProposalLoop)."""
        return self.loop.reasks_skipped

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Proposals made at once on threads (:meth:`ProposalLoop.batch`)."""
        with self.loop.batch():
            yield

    def propose(
        self,
        key: str,
        component: str,
        current: str,
        records: Sequence[Mapping[str, str]],
        *,
        sample: int = 0,
    ) -> str | None:
        """A new text for ``component``, or None when every attempt was rejected or failed.

        ``sample`` > 0 draws another proposal from the same reflection prompt (another seed).
        """
        guards: list[Guard] = []
        if self.reject_copies:
            where = " into the instruction"
            guards += [copy_guard(current, records, where=where), self._label_guard(current)]
        guards.append(echo_guard(self.template, current, also=(RETRY_NOTE,)))
        text = self.loop.propose(
            key,
            lambda _, reason: render_prompt(
                self.template,
                component,
                current,
                records,
                reason,
                outputs=self.outputs,
                length=self.loop.length,
            ),
            current=current,
            parse=self.parse,
            guards=guards,
            sample=sample,
        )
        return None if text is FAILED else text  # type: ignore[return-value]

    def prefetch(
        self,
        keys: Sequence[str],
        component: str,
        current: str,
        records: Sequence[Mapping[str, str]],
        *,
        sample: int,
    ) -> None:
        """Ask for the first attempt of ``len(keys)`` samples (``propose(keys[i], ...,
        sample=sample + i)``) in one LM call, so the prompt is sent, and paid, once."""
        prompt = render_prompt(
            self.template,
            component,
            current,
            records,
            None,
            outputs=self.outputs,
            length=self.loop.length,
        )
        if self.lm.brief:  # as ProposalLoop.propose puts it above the prompt
            prompt = f"{self.lm.brief}\n\n{prompt}"
        self.lm.ask_samples(f"{keys[0]}/n{len(keys)}", prompt, [f"{key}/0" for key in keys], sample)

    def _label_guard(self, current: str) -> Guard:
        """Rejects a text that fixes one label as every input's answer."""

        def guard(text: str) -> tuple[str, str] | None:
            fixed = find_fixed_answer(text, current, self.outputs)
            if fixed is None:
                return None
            return COPIES_EXAMPLE, (
                f"it gives {fixed!r} as the answer to every input, but the right answer "
                f"depends on the input (one of {', '.join(self.outputs)})"
            )

        return guard
