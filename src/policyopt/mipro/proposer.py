"""Grounded instruction proposal: a dataset summary, the program, demos, history and a tip.

The summary is made once and reused. Each proposal call sees a different demo set and a tip
drawn with the run's seeded RNG, plus the instructions proposed so far, so candidates differ.
The instruction is the last fenced block of the answer (or the whole answer); empty, cut-off,
over-long and duplicate proposals are retried, then dropped. Every call is journaled
(:class:`~policyopt.state.memo.JournaledLM`) so a resumed run replays it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.feedback import ADVICE_TEMPLATE, RETRY_NOTE, common_advice, retry_note
from policyopt.lm.parsing import extract_instruction
from policyopt.mipro.demos import Demo
from policyopt.proposals import FAILED, Parsed, ProposalLoop, copy_guard, echo_guard, repeat_guard
from policyopt.state.memo import JournaledLM

__all__ = [
    "PROPOSAL_TEMPLATE",
    "SUMMARY_TEMPLATE",
    "TIPS",
    "AdviceProposer",
    "InstructionProposer",
]

TIPS: dict[str, str] = {
    "none": "",
    "concise": "Keep the instruction short and to the point.",
    "creative": "Do not be afraid to be creative.",
    "persona": "Give the assistant a persona that suits the task.",
    "stakes": "Say what is at stake if the assistant gets it wrong.",
    "rule": "State the general rule; do not mention specific examples.",
    "simple": "Use simple words that a small model understands.",
}

SUMMARY_TEMPLATE = """\
Here are examples from a dataset:

{examples}

In two or three sentences, describe what this dataset is about and what a good answer looks \
like."""

PROPOSAL_TEMPLATE = """\
You write instructions for an AI assistant.

About the data: {summary}
About the program: {program}
Current instruction{component}:
```
{current}
```
Example inputs with good outputs:
{demos}
Instructions already proposed:
{history}
{tip}
Write one new instruction for this task{length}, different from those above. Reply with the \
instruction inside one ``` fenced block."""


#: what a retry adds to the grounded proposal prompt (``reason``: why the last answer was rejected)
ATTEMPT = "\n(Attempt {n}: the last answer was unusable: {reason}.)"


def _render_demos(demos: Sequence[Demo], limit: int = 600) -> str:
    if not demos:
        return "(none)"
    return "\n".join(f"- Input: {d.input[:limit]} -> Output: {d.output[:limit]}" for d in demos)


class InstructionProposer:
    """Makes ``n`` distinct instruction candidates per component with a journaled LM."""

    def __init__(
        self,
        lm: JournaledLM,
        *,
        rng: random.Random,
        program_description: str | None,
        use_tips: bool,
        max_chars: int,
        max_retries: int,
    ) -> None:
        self.lm = lm
        self.rng = rng
        self.program_description = program_description
        self.use_tips = use_tips
        self.loop = ProposalLoop(lm, max_retries=max_retries, max_chars=max_chars)
        self.summary = ""
        self.failed = 0  # candidates skipped because the LM failed

    @property
    def rejected(self) -> int:
        """Proposals rejected (unusable, repeated, echoing the prompt)."""
        return self.loop.rejected

    def summarize(self, examples: Sequence[Any]) -> str:
        """One LM call describing the dataset from a sample of examples (kept for the run)."""
        lines = "\n".join(f"- {str(e)[:300]}" for e in examples[:8])
        record = self.lm.ask("summary", SUMMARY_TEMPLATE.format(examples=lines))
        if record is None or record.get("capped"):  # the LM failed: go on without a summary
            return self.summary
        self.summary = " ".join(str(record["text"]).split())[:1500]
        return self.summary

    def propose(
        self,
        component: str,
        seed_text: str,
        n: int,
        demo_sets: Sequence[Sequence[Demo]],
        seed_score: float | None = None,
    ) -> list[str]:
        """``n`` instructions for ``component``: the seed text first, then new ones.

        The history shows every instruction proposed so far, the seed's with its validation
        score (the others are not scored yet when proposals are made).
        """
        program = self.program_description or f"Its prompt starts as: {seed_text[:500]!r}"
        candidates = [seed_text]
        seen = {" ".join(seed_text.split())}
        for index in range(1, n):
            demos = demo_sets[index % len(demo_sets)] if demo_sets else []
            tip = TIPS[self.rng.choice(sorted(TIPS))] if self.use_tips else ""
            scored = f" (validation score {seed_score:.2f})" if seed_score is not None else ""
            history = "\n".join(
                f"- {c[:300]}{scored if i == 0 else ''}" for i, c in enumerate(candidates)
            )
            prompt = PROPOSAL_TEMPLATE.format(
                summary=self.summary or "(no summary)",
                program=program,
                component=f" ({component})" if component != "prompt" else "",
                current=seed_text,
                demos=_render_demos(demos),
                history=history,
                tip=f"Tip: {tip}\n" if tip else "",
                length=self.loop.length,
            )
            text = self.loop.propose(
                f"instruction/{component}/{index}",
                lambda attempt, reason, prompt=prompt: (
                    prompt + (ATTEMPT.format(n=attempt + 1, reason=reason) if attempt else "")
                ),
                current=seed_text,
                guards=[
                    repeat_guard(seen, REPEATED),
                    echo_guard(PROPOSAL_TEMPLATE, seed_text, also=(ATTEMPT,)),
                ],
            )
            if text is FAILED:  # the LM failed past its retries: skip this candidate
                self.failed += 1
            elif isinstance(text, str):
                candidates.append(text)
                seen.add(" ".join(text.split()))
        return candidates


#: why a proposal equal to an earlier candidate is rejected
REPEATED = "it repeats an earlier instruction"


class AdviceProposer:
    """Instructions restated from the metric's feedback on the seed program's bootstrap runs.

    For models too small to follow the grounded proposer's long prompt (measured: SmolLM2-135M
    gave no usable instruction in 9 of 9 grounded proposals on ``antonyms``), each candidate is
    one short call: a few seeded-random failing rollouts' shared feedback sentences
    (:func:`~policyopt.feedback.common_advice`), rewritten as one instruction; the answer's
    fenced block, or else its first line, is the instruction. Proposals that copy an example
    from the records are rejected (:func:`~policyopt.guards.find_copy`) and asked again, like
    unusable ones. Needs a metric that gives feedback: without it the records only state scores.
    """

    def __init__(
        self,
        lm: JournaledLM,
        records: Sequence[Mapping[str, str]],
        *,
        rng: random.Random,
        max_chars: int,
        max_retries: int,
        per_call: int = 3,
        failed: Sequence[bool] | None = None,
    ) -> None:
        self.lm = lm
        self.records = list(records)
        failing = [r for r, bad in zip(self.records, failed or [], strict=False) if bad]
        self.pool = failing or self.records  # failures carry the lesson; else all
        self.rng = rng
        self.loop = ProposalLoop(lm, max_retries=max_retries, max_chars=max_chars)
        self.per_call = per_call
        self.failed = 0

    @property
    def rejected(self) -> int:
        """Proposals rejected (unusable, copied, repeated, echoing the prompt)."""
        return self.loop.rejected

    def propose(
        self,
        component: str,
        seed_text: str,
        n: int,
        demo_sets: Sequence[Sequence[Demo]],
        seed_score: float | None = None,
    ) -> list[str]:
        """``n`` instructions for ``component``: the seed text first, then new ones."""
        candidates = [seed_text]
        seen = {" ".join(seed_text.split())}
        if not self.pool:
            return candidates
        for index in range(1, n):
            chosen = self.rng.sample(self.pool, min(self.per_call, len(self.pool)))
            advice = "\n".join(common_advice(chosen))
            text = self.loop.propose(
                f"instruction/{component}/{index}",
                lambda _, reason, advice=advice: ADVICE_TEMPLATE.format(
                    current=seed_text,
                    advice=advice,
                    retry=retry_note(reason),
                    length=self.loop.length,
                ),
                current=seed_text,
                parse=_first_line,
                guards=[
                    copy_guard(seed_text, self.records, advice="state the general rule"),
                    repeat_guard(seen, REPEATED),
                    echo_guard(ADVICE_TEMPLATE, seed_text, also=(RETRY_NOTE,)),
                ],
                # another sample per call: the same advice would otherwise get the same answer
                sample=lambda _: self.rng.randrange(1, 2**31 - 2),
            )
            if text is FAILED:  # the LM failed past its retries: skip this candidate
                self.failed += 1
            elif isinstance(text, str):
                candidates.append(text)
                seen.add(" ".join(text.split()))
        return candidates


def _first_line(record: Mapping[str, Any]) -> Parsed:
    """A fenced block if the model wrote one, else the answer's first line (the instruction
    after "Instruction:"); cut off only when the block or that line may be."""
    answer = str(record["text"])
    lines = [x for x in answer.splitlines() if x.strip()]
    fenced = "```" in answer
    text, balanced = extract_instruction(answer if fenced else lines[0] if lines else "")
    cut = record["finish_reason"] == "length" and (fenced or len(lines) <= 1)
    return Parsed(text, balanced, cut)
