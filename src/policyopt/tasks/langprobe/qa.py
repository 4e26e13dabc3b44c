"""The question-answering and verification benchmarks: GSM8K, HotpotQA and HoVer.

Each is a builder (hub rows -> examples and splits) and a program (prompts, rendering, metric),
registered in :data:`policyopt.tasks.langprobe.benchmarks.LANGPROBE_DATASETS`; how each follows
or leaves LangProBe is in its notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policyopt.errors import DatasetError
from policyopt.tasks.langprobe.common import (
    Program,
    Row,
    _assign_ids,
    _label_name,
    _Render,
    _require,
    _shuffled,
)
from policyopt.tasks.langprobe.data import RawSplit, Splits, langprobe_protocol
from policyopt.tasks.langprobe.metrics import ClassificationMetric, gsm8k_metric, hotpotqa_metric

__all__ = ["HOVER_LABELS"]

#: hover's ClassLabel names, in label-id order
HOVER_LABELS: tuple[str, ...] = ("NOT_SUPPORTED", "SUPPORTED")


# ---------------------------------------------------------------- GSM8K

_GSM8K_NOTES = """\
GSM8K (openai/gsm8k, config main). Pool = the hub's train split in order, test = its test split
(LangProBe's GSM8KBench), then LangProBe's protocol: dev/val/train = 40/40/20 % of the pool,
caps 300/300/150, test capped by mode. Metric: LangProBe's gsm8k_evaluate, the last number of
the reply (digits of the last token holding a digit, cut at '.') equals the number after
'####'. Deviation: LangProBe's programs are DSPy Predict/CoT modules that parse an 'answer'
field; here the whole reply is scored, so chain-of-thought before the final number is fine."""


def _gsm8k_gold(answer: str, what: str) -> int:
    try:
        return int(answer.split()[-1].replace(",", ""))
    except (ValueError, IndexError) as err:
        raise DatasetError(
            f"{what}: answer {answer[-60:]!r} does not end in '#### <integer>' as GSM8K's do."
        ) from err


def _build_gsm8k(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    rows: dict[str, list[Row]] = {}
    for split in ("train", "test"):
        _require("gsm8k", split, raw[split], ("question", "answer"), "openai/gsm8k")
        rows[split] = [
            {
                "question": str(r["question"]),
                "answer": str(r["answer"]),
                "gold": _gsm8k_gold(str(r["answer"]), f"gsm8k {split} row {i}"),
            }
            for i, r in enumerate(raw[split].rows)
        ]
    _assign_ids(raw, rows, None)
    return langprobe_protocol(rows["train"], rows["test"], mode=mode, seed=seed)


def _gsm8k_program() -> Program:
    return Program(
        seed_prompt="Answer the question.",
        reference_prompt=(
            "Solve the math word problem. Reason step by step, then end with the final answer "
            "as a single number on the last line."
        ),
        render_input=_Render("Question: {question}\nAnswer:"),
        metric=gsm8k_metric,
        lm_kwargs={"max_tokens": 512},
    )


# ---------------------------------------------------------------- HotpotQA

_HOTPOTQA_NOTES = """\
HotpotQA (hotpotqa/hotpot_qa, config fullwiki). As LangProBe's HotpotQABench: pool = the hub's
train split shuffled with random.Random(0), test = its validation split (the hub's test split
has no answers) shuffled with random.Random(6); then LangProBe's protocol. Metric: exact match
after normalisation (DSPy's answer_exact_match, which LangProBe uses); an 'Answer:' label in
front of the reply is dropped (DSPy's adapter parses the field); the feedback also gives the
token F1. Deviation: LangProBe's programs retrieve Wikipedia passages (ColBERTv2); policyopt
has no retriever, so this task is closed-book: the question alone is the input."""


def _supporting_titles(value: Any) -> list[str]:
    """Unique supporting-fact titles: HotpotQA's {'title': [...]} or HoVer's [{'key': ...}]."""
    if isinstance(value, Mapping):
        titles = value.get("title", value.get("key", []))
    elif isinstance(value, Sequence) and not isinstance(value, str):
        titles = [
            (item.get("key", item.get("title")) if isinstance(item, Mapping) else item[0])
            for item in value
        ]
    else:
        titles = []
    return sorted({str(t) for t in titles})


def _build_hotpotqa(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    rows: dict[str, list[Row]] = {}
    for split in ("train", "validation"):
        _require("hotpotqa", split, raw[split], ("question", "answer"), "hotpotqa/hotpot_qa")
        rows[split] = [
            {
                "question": str(r["question"]),
                "answer": str(r["answer"]),
                "type": str(r.get("type", "")),
                "level": str(r.get("level", "")),
                "gold_titles": _supporting_titles(r.get("supporting_facts")),
            }
            for r in raw[split].rows
        ]
    _assign_ids(raw, rows, "id")
    pool = _shuffled(rows["train"], 0)
    test = _shuffled(rows["validation"], 6)
    return langprobe_protocol(pool, test, mode=mode, seed=seed)


def _hotpotqa_program() -> Program:
    return Program(
        seed_prompt="Answer the question.",
        reference_prompt=(
            "Answer the question with only the short answer: a name, a date, a number, a short "
            "phrase or yes/no. No explanation and no full sentence."
        ),
        render_input=_Render("Question: {question}\nAnswer:"),
        metric=hotpotqa_metric,
        lm_kwargs={"max_tokens": 64},
    )


# ---------------------------------------------------------------- HoVer

_HOVER_NOTES = """\
HoVer (hover-nlp/hover). As LangProBe's hoverBench: pool = the hub's train split restricted to
claims with exactly 3 distinct supporting documents, shuffled with random.Random(0); test = its
validation split (the test split is unlabeled) shuffled with random.Random(1); then LangProBe's
protocol. Deviation: LangProBe scores *retrieval* (discrete_retrieval_eval: did the program
retrieve every gold supporting document?). policyopt has no retriever, so this task is claim
verification instead: reply SUPPORTED or NOT_SUPPORTED, scored against the hub's label (a
verbose reply counts when it names exactly one label; 'not supported' is NOT_SUPPORTED). The
gold supporting titles are kept on each example (gold_titles) for programs that retrieve."""


def _build_hover(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    rows: dict[str, list[Row]] = {}
    keep: dict[str, list[int]] = {}
    for split in ("train", "validation"):
        _require("hover", split, raw[split], ("claim", "supporting_facts", "label"), "hover")
        names = raw[split].label_names.get("label", list(HOVER_LABELS))
        items: list[Row] = []
        for i, r in enumerate(raw[split].rows):
            titles = _supporting_titles(r["supporting_facts"])
            if split == "train" and len(titles) != 3:
                continue
            label = _label_name(r["label"], names, f"hover {split} row {i}").upper()
            label = label.replace(" ", "_")
            if label not in HOVER_LABELS:
                raise DatasetError(
                    f"hover {split} row {i}: label {label!r} is not one of {list(HOVER_LABELS)}."
                )
            items.append(
                {
                    "claim": str(r["claim"]),
                    "label": label,
                    "gold_titles": titles,
                    "num_hops": r.get("num_hops", len(titles)),
                }
            )
            keep.setdefault(split, []).append(i)
        if not items:
            raise DatasetError(
                f"LangProBe hover: no {split} claim left (train keeps 3-hop claims only)."
            )
        rows[split] = items
    # ids are taken from the kept source rows
    kept_raw = {s: RawSplit([raw[s].rows[i] for i in keep[s]], {}) for s in rows}
    _assign_ids(kept_raw, rows, "id")
    pool = _shuffled(rows["train"], 0)
    test = _shuffled(rows["validation"], 1)
    return langprobe_protocol(pool, test, mode=mode, seed=seed)


def _hover_program() -> Program:
    return Program(
        seed_prompt="Is this claim true?",
        reference_prompt=(
            "Decide whether the claim below is supported by facts. Reply with exactly one "
            "label: SUPPORTED if every part of the claim is true, NOT_SUPPORTED otherwise."
        ),
        render_input=_Render("Claim: {claim}\nLabel:"),
        metric=ClassificationMetric(HOVER_LABELS, field="label", what="label"),
        lm_kwargs={"max_tokens": 16},
    )
