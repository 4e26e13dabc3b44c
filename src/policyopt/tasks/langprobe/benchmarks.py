"""The six LangProBe-style benchmarks: where their data lives, how it becomes examples and
splits, and their programs (prompts, input rendering, metric).

What each loader does, and where it follows or leaves LangProBe (``Shangyint/langProBe``) or the
GEPA paper's artifact (``gepa-ai/gepa-artifact``, a LangProBe fork), is written in each
benchmark's ``notes``, shown by ``LANGPROBE_DATASETS[name].notes``.

The benchmarks live by kind: :mod:`~policyopt.tasks.langprobe.qa` (GSM8K, HotpotQA, HoVer),
:mod:`~policyopt.tasks.langprobe.classification` (Banking77, HeartDisease) and, here, IFBench and
the registry; their parts are in :mod:`~policyopt.tasks.langprobe.common`.
"""

from __future__ import annotations

import ast
import json

from policyopt.errors import DatasetError
from policyopt.tasks.langprobe.classification import (
    _BANKING77_NOTES,
    _HEART_NOTES,
    BANKING77_LABELS,
    _banking77_program,
    _build_banking77,
    _build_heartdisease,
    _heartdisease_program,
)
from policyopt.tasks.langprobe.common import LangProBeDataset, Program, Row, _assign_ids, _Render
from policyopt.tasks.langprobe.data import (
    MODES,
    TRAIN_CAP,
    VAL_CAP,
    HubSplit,
    RawSplit,
    Splits,
    cap,
)
from policyopt.tasks.langprobe.ifbench import SUPPORTED_INSTRUCTIONS
from policyopt.tasks.langprobe.metrics import ifbench_metric
from policyopt.tasks.langprobe.qa import (
    _GSM8K_NOTES,
    _HOTPOTQA_NOTES,
    _HOVER_NOTES,
    HOVER_LABELS,
    _build_gsm8k,
    _build_hotpotqa,
    _build_hover,
    _gsm8k_program,
    _hotpotqa_program,
    _hover_program,
)

__all__ = ["BANKING77_LABELS", "HOVER_LABELS", "LANGPROBE_DATASETS", "LangProBeDataset"]


# ---------------------------------------------------------------- IFBench

_IFBENCH_NOTES = f"""\
IFBench (GEPA paper's artifact protocol; IFBench is not in LangProBe's own list). Test =
allenai/IFBench_test; val = the first 300 and train = the next 300 (300:600) of the training
pool, train capped to 150 (random.Random(seed)); no dev split (empty), as in the artifact; the
mode caps only the test set. The artifact's bundled IFBench_train.jsonl is not on the hub; the
hub loader reads allenai/IF_multi_constraints_upto5 (reformatted like the IFBench builders:
messages[0] -> prompt, ground_truth -> instruction_id_list/kwargs); a local copy of the
artifact's file can be given as source={{'train': path, 'test': path}}. Metric: the fraction
of the example's instructions followed, IFBench's loose protocol (GEPA artifact's
metric_with_feedback). Deviation: policyopt verifies {len(SUPPORTED_INSTRUCTIONS)} instruction
types (policyopt.tasks.langprobe.ifbench); examples with any other instruction are dropped
before splitting, so the splits are smaller than the artifact's."""


def _ifbench_row(r: Row, what: str) -> Row:
    """A row in IFBench_test's schema, from either schema (IF_multi_constraints reformatted)."""
    if "prompt" in r and "instruction_id_list" in r:
        ids, kwargs = list(r["instruction_id_list"]), r.get("kwargs")
        prompt = str(r["prompt"])
    elif "messages" in r and "ground_truth" in r:
        truth = r["ground_truth"]
        if isinstance(truth, str):
            try:
                truth = ast.literal_eval(truth)
            except (ValueError, SyntaxError):
                truth = json.loads(truth)
        first = truth[0] if isinstance(truth, list) else truth
        ids, kwargs = list(first["instruction_id"]), first.get("kwargs")
        prompt = str(r["messages"][0]["content"])
    else:
        raise DatasetError(
            f"{what}: no column 'prompt'/'instruction_id_list' (allenai/IFBench_test schema) nor "
            f"'messages'/'ground_truth' (allenai/IF_multi_constraints_upto5 schema); has "
            f"{sorted(r)}."
        )
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    kwargs = [dict(k or {}) for k in kwargs]
    if len(kwargs) != len(ids):
        raise DatasetError(f"{what}: {len(ids)} instruction ids but {len(kwargs)} kwargs.")
    return {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs, "key": r.get("key")}


def _build_ifbench(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    rows: dict[str, list[Row]] = {}
    kept_raw: dict[str, RawSplit] = {}
    for split in ("train", "test"):
        if not raw[split].rows:
            raise DatasetError(f"LangProBe ifbench source split {split!r} is empty.")
        items: list[Row] = []
        sources: list[Row] = []
        for i, r in enumerate(raw[split].rows):
            row = _ifbench_row(r, f"ifbench {split} row {i}")
            if row["instruction_id_list"] and set(row["instruction_id_list"]) <= (
                SUPPORTED_INSTRUCTIONS
            ):
                items.append(row)
                sources.append({"key": row.pop("key"), "index": i})
        if not items:
            raise DatasetError(
                f"LangProBe ifbench: no {split} example uses only supported instructions "
                f"({len(raw[split].rows)} read); see policyopt.tasks.langprobe.ifbench."
            )
        rows[split], kept_raw[split] = items, RawSplit(sources, {})
    # ids: the hub's key; rows without one get <split>-<index in the source split>
    for split, kept in kept_raw.items():
        for src in kept.rows:
            if src["key"] is None:
                src["key"] = f"{split}-{src['index']}"
    _assign_ids(kept_raw, rows, "key")
    pool = rows["train"]
    return Splits(
        train=cap(pool[300:600], TRAIN_CAP, seed),
        dev=[],
        val=cap(pool[:300], VAL_CAP, seed),
        test=cap(rows["test"], MODES[mode], seed),
    )


def _ifbench_program() -> Program:
    return Program(
        seed_prompt="Respond to the query",
        reference_prompt=(
            "Respond to the query. It contains explicit constraints (word counts, words to use "
            "or avoid, formatting, exact wording): follow every one of them literally, check "
            "your response against each before answering, and output only the response."
        ),
        render_input=_Render("{prompt}"),
        metric=ifbench_metric,
        lm_kwargs={"max_tokens": 1024},
    )


# ---------------------------------------------------------------- registry


def _hub(path: str, config: str | None, **splits: str) -> dict[str, HubSplit]:
    return {name: HubSplit(path, config, hub_split) for name, hub_split in splits.items()}


#: name -> the benchmark's description, kind, hub location and notes
LANGPROBE_DATASETS: dict[str, LangProBeDataset] = {
    d.name: d
    for d in (
        LangProBeDataset(
            name="hotpotqa",
            title="HotpotQA",
            description="multi-hop factoid questions over Wikipedia, closed-book",
            kind="qa",
            hub=_hub("hotpotqa/hotpot_qa", "fullwiki", train="train", validation="validation"),
            metric="exact match after normalisation (F1 in the feedback)",
            notes=_HOTPOTQA_NOTES,
            build=_build_hotpotqa,
            program=_hotpotqa_program,
        ),
        LangProBeDataset(
            name="hover",
            title="HoVer",
            description="3-hop claim verification: SUPPORTED or NOT_SUPPORTED",
            kind="verification",
            hub=_hub("hover-nlp/hover", None, train="train", validation="validation"),
            metric="label match (LangProBe scores retrieval instead; see notes)",
            notes=_HOVER_NOTES,
            build=_build_hover,
            program=_hover_program,
        ),
        LangProBeDataset(
            name="gsm8k",
            title="GSM8K",
            description="grade-school math word problems with a numeric answer",
            kind="math",
            hub=_hub("openai/gsm8k", "main", train="train", test="test"),
            metric="the last number of the reply equals the gold number",
            notes=_GSM8K_NOTES,
            build=_build_gsm8k,
            program=_gsm8k_program,
        ),
        LangProBeDataset(
            name="banking77",
            title="Banking77",
            description="online-banking queries classified into 77 intents",
            kind="classification",
            hub=_hub("PolyAI/banking77", None, train="train", test="test"),
            metric="intent label match",
            notes=_BANKING77_NOTES,
            build=_build_banking77,
            program=_banking77_program,
        ),
        LangProBeDataset(
            name="heartdisease",
            title="HeartDisease",
            description="predict heart disease (yes/no) from 13 clinical attributes",
            kind="classification",
            hub=_hub("buio/heart-disease", None, train="train"),
            metric="yes/no match",
            notes=_HEART_NOTES,
            build=_build_heartdisease,
            program=_heartdisease_program,
        ),
        LangProBeDataset(
            name="ifbench",
            title="IFBench",
            description="prompts with verifiable output constraints (instruction following)",
            kind="instruction-following",
            hub={
                "train": HubSplit("allenai/IF_multi_constraints_upto5", None, "train"),
                "test": HubSplit("allenai/IFBench_test", None, "train"),
            },
            metric="fraction of instructions followed (IFBench loose protocol)",
            notes=_IFBENCH_NOTES,
            build=_build_ifbench,
            program=_ifbench_program,
        ),
    )
}
