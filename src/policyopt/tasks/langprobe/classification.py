"""The classification benchmarks: Banking77 (77 intents) and HeartDisease (yes/no).

Each is a builder (hub rows -> examples and splits) and a program (prompts, rendering, metric),
registered in :data:`policyopt.tasks.langprobe.benchmarks.LANGPROBE_DATASETS`; how each follows
or leaves LangProBe is in its notes.
"""

from __future__ import annotations

import contextlib
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
from policyopt.tasks.langprobe.metrics import ClassificationMetric

__all__ = ["BANKING77_LABELS"]

#: PolyAI/banking77's ClassLabel names, in label-id order (the hub's spelling, "?" included)
BANKING77_LABELS: tuple[str, ...] = tuple(
    [
        "activate_my_card",
        "age_limit",
        "apple_pay_or_google_pay",
        "atm_support",
        "automatic_top_up",
        "balance_not_updated_after_bank_transfer",
        "balance_not_updated_after_cheque_or_cash_deposit",
        "beneficiary_not_allowed",
        "cancel_transfer",
        "card_about_to_expire",
        "card_acceptance",
        "card_arrival",
        "card_delivery_estimate",
        "card_linking",
        "card_not_working",
        "card_payment_fee_charged",
        "card_payment_not_recognised",
        "card_payment_wrong_exchange_rate",
        "card_swallowed",
        "cash_withdrawal_charge",
        "cash_withdrawal_not_recognised",
        "change_pin",
        "compromised_card",
        "contactless_not_working",
        "country_support",
        "declined_card_payment",
        "declined_cash_withdrawal",
        "declined_transfer",
        "direct_debit_payment_not_recognised",
        "disposable_card_limits",
        "edit_personal_details",
        "exchange_charge",
        "exchange_rate",
        "exchange_via_app",
        "extra_charge_on_statement",
        "failed_transfer",
        "fiat_currency_support",
        "get_disposable_virtual_card",
        "get_physical_card",
        "getting_spare_card",
        "getting_virtual_card",
        "lost_or_stolen_card",
        "lost_or_stolen_phone",
        "order_physical_card",
        "passcode_forgotten",
        "pending_card_payment",
        "pending_cash_withdrawal",
        "pending_top_up",
        "pending_transfer",
        "pin_blocked",
        "receiving_money",
        "Refund_not_showing_up",
        "request_refund",
        "reverted_card_payment?",
        "supported_cards_and_currencies",
        "terminate_account",
        "top_up_by_bank_transfer_charge",
        "top_up_by_card_charge",
        "top_up_by_cash_or_cheque",
        "top_up_failed",
        "top_up_limits",
        "top_up_reverted",
        "topping_up_by_card",
        "transaction_charged_twice",
        "transfer_fee_charged",
        "transfer_into_account",
        "transfer_not_received_by_recipient",
        "transfer_timing",
        "unable_to_verify_identity",
        "verify_my_identity",
        "verify_source_of_funds",
        "verify_top_up",
        "virtual_card_not_working",
        "visa_or_mastercard",
        "why_verify_identity",
        "wrong_amount_of_cash_received",
        "wrong_exchange_rate_for_cash_withdrawal",
    ]
)
#: LangProBe's HeartDisease value mappings (``HeartDisease_data.py``), then every value -> str
_HEART_MAPPINGS: dict[str, dict[Any, str]] = {
    "sex": {0: "female", 1: "male"},
    "cp": {1: "typical angina", 2: "atypical angina", 3: "non-anginal pain", 4: "asymptomatic"},
    "restecg": {0: "normal", 1: "ST-T wave abnormality", 2: "left ventricular hypertrophy"},
    "exang": {0: "no", 1: "yes"},
    "slope": {1: "upsloping", 2: "flat", 3: "downsloping"},
    "thal": {"3": "normal", "6": "fixed defect", "7": "reversible defect"},
    "target": {0: "no", 1: "yes"},
}
#: the input fields and their descriptions, as in LangProBe's HeartDisease signature
_HEART_FIELDS: dict[str, str] = {
    "age": "Age in years",
    "sex": "Sex (male or female)",
    "cp": "Chest pain type (typical angina, atypical angina, non-anginal pain, asymptomatic)",
    "trestbps": "Resting blood pressure (in mm Hg on admission to the hospital)",
    "chol": "Serum cholestoral in mg/dl",
    "fbs": "Fasting blood sugar > 120 mg/dl (true or false)",
    "restecg": "Resting electrocardiographic results (normal, ST-T wave abnormality, left "
    "ventricular hypertrophy)",
    "thalach": "Maximum heart rate achieved",
    "exang": "Exercise induced angina (yes or no)",
    "oldpeak": "ST depression induced by exercise relative to rest",
    "slope": "The slope of the peak exercise ST segment (upsloping, flat, downsloping)",
    "ca": "Number of major vessels (0-3) colored by flourosopy",
    "thal": "Thalassemia (normal, fixed defect, reversible defect)",
}


# ---------------------------------------------------------------- Banking77

_BANKING77_NOTES = """\
Banking77 (PolyAI/banking77; not in LangProBe itself, it is in Synth's LangProBe-style set).
Pool = the hub's train split, test = its test split, with LangProBe's protocol. Deviation: the
hub's train split is ordered by intent, so LangProBe's in-order 40/40/20 split would give
train, dev and val disjoint sets of intents; the pool is shuffled with random.Random(0) first,
as LangProBe does for HotpotQA, HoVer and HeartDisease. Metric: label match with the intent
name (underscores or spaces, any case; a verbose reply counts when it names exactly one
intent)."""


def _build_banking77(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    rows: dict[str, list[Row]] = {}
    for split in ("train", "test"):
        _require("banking77", split, raw[split], ("text", "label"), "PolyAI/banking77")
        names = raw[split].label_names.get("label", list(BANKING77_LABELS))
        rows[split] = [
            {
                "text": str(r["text"]),
                "label": _label_name(r["label"], names, f"banking77 {split} row {i}"),
            }
            for i, r in enumerate(raw[split].rows)
        ]
        unknown = {r["label"] for r in rows[split]} - set(BANKING77_LABELS)
        if unknown:
            raise DatasetError(
                f"banking77 {split}: labels {sorted(unknown)[:5]} are not Banking77 intents."
            )
    _assign_ids(raw, rows, None)
    return langprobe_protocol(_shuffled(rows["train"], 0), rows["test"], mode=mode, seed=seed)


def _banking77_program() -> Program:
    intents = ", ".join(BANKING77_LABELS)
    return Program(
        seed_prompt="Classify the text.",
        reference_prompt=(
            "Classify the online-banking customer query into exactly one of these intents and "
            f"reply with the intent name only: {intents}."
        ),
        render_input=_Render("Query: {text}\nIntent:"),
        metric=ClassificationMetric(BANKING77_LABELS, field="label", what="intent"),
        lm_kwargs={"max_tokens": 24},
    )


# ---------------------------------------------------------------- HeartDisease

_HEART_NOTES = """\
HeartDisease (buio/heart-disease, UCI Cleveland). As LangProBe's HeartDiseaseBench: values
mapped to words (sex, chest pain, ECG, angina, slope, thal, target -> yes/no), everything as a
string; all rows shuffled with random.Random(0); test = the second half; of the first half,
train = the first 15, val = the rest and dev = the whole first half (so dev overlaps train and
val, as in LangProBe); then the caps (and, in mode 'test', LangProBe's 40/40/20 re-split of the
first 60). Metric: exact match of yes/no (DSPy's answer_exact_match); a verbose reply counts
when it says only one of yes/no."""


def _heart_value(column: str, value: Any) -> str:
    mapping = _HEART_MAPPINGS.get(column)
    if mapping is not None:
        with contextlib.suppress(TypeError):  # unhashable values stay as they are
            value = mapping.get(value, value)
    return str(value)


def _build_heartdisease(raw: dict[str, RawSplit], mode: str, seed: int) -> Splits:
    columns = (*_HEART_FIELDS, "target")
    _require("heartdisease", "train", raw["train"], columns, "buio/heart-disease")
    rows = {
        "train": [
            {
                **{c: _heart_value(c, r[c]) for c in _HEART_FIELDS},
                "answer": _heart_value("target", r["target"]),
            }
            for r in raw["train"].rows
        ]
    }
    for i, r in enumerate(rows["train"]):
        if r["answer"] not in ("yes", "no"):
            raise DatasetError(f"heartdisease train row {i}: target {r['answer']!r} is not 0/1.")
    _assign_ids(raw, rows, None)
    full = _shuffled(rows["train"], 0)
    half = len(full) // 2
    first, test = full[:half], full[half:]
    return langprobe_protocol(
        first, test, mode=mode, seed=seed, train=first[:15], val=first[15:], dev=first
    )


def _heart_render(ex: Row) -> str:
    return "\n".join(f"{desc}: {ex[name]}" for name, desc in _HEART_FIELDS.items())


def _heartdisease_program() -> Program:
    return Program(
        seed_prompt="Does this patient have heart disease?",
        reference_prompt=(
            "Given the patient information, predict the presence of heart disease. Answer with "
            "just yes or no."
        ),
        render_input=_heart_render,
        metric=ClassificationMetric(("yes", "no"), field="answer", what="answer"),
        lm_kwargs={"max_tokens": 8},
    )
