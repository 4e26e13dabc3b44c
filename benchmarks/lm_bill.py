"""The optimizer-LM bill against what each run announced, in the worst cases we know.

Prints, for GEPA, MIPRO and OPRO (scripted LMs, the keyword task, budget 150):

* **flat**: a task where no prompt beats another, with an LM whose every other answer is
  unusable (empty): the calls made against the forecast (``lm_calls``) and the cap the run
  announced (``lm_calls_cap``, at most 3x the forecast unless ``max_lm_calls`` says otherwise);
* **resume**: a run whose evaluate failed on two thirds of the training examples until its
  budget (60) was spent, resumed with evaluate fixed: the live LM calls of the resumed segment
  (none can be scored once the budget is spent) and its stop reason;
* **bill**: a GEPA run whose evaluate failed on some examples (budget 60), resumed with evaluate
  fixed and a budget of 150: the failed rollouts are paid again and succeed, so the resumed
  path asks other reflection prompts and leaves some of the first segment's calls behind; the
  calls the result reports against the calls journaled by both segments;
* **GEPA's pace**: the GEPA calls against the rollouts they bought, on the flat task and on the
  keyword task (improving) at budget 150 (the gepa library's loop makes about budget / 6), with
  ``min_rollouts_per_call=0`` (no widened gate) beside the default;
* **samples**: GEPA with 4 samples per reflection on the keyword task, with a policyopt LM that
  serves ``n`` (the samples' first attempts share a call, the prompt billed once) and the same
  LM refusing it (one call per sample): calls and prompt/completion tokens.

    python benchmarks/lm_bill.py
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policyopt import GEPA, MIPRO, OPRO, Score
from policyopt.lm.base import LM, Completion
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import (
    FailsOnSomeExamples,
    flaky_lm,
    keyword_meta_lm,
    keyword_proposer_lm,
    lenient_gepa_run,
)
from policyopt.types import LMUsage

OPTIMIZERS: dict[str, tuple[Callable[..., Any], Callable[[], ScriptedLM]]] = {
    "gepa": (lambda lm, **kw: GEPA(reflection_lm=lm, **kw), keyword_reflection_lm),
    "mipro": (
        lambda lm, **kw: MIPRO(proposer_lm=lm, num_candidates=4, num_trials=8, **kw),
        lambda: keyword_proposer_lm(best_at=None),
    ),
    "opro": (lambda lm, **kw: OPRO(meta_lm=lm, **kw), keyword_meta_lm),
}


def flat(name: str) -> dict[str, Any]:
    make, _ = OPTIMIZERS[name]
    program, train, val = keyword_task()
    program = type(program)(program.prompt, lambda prompt, example: Score(0.5, feedback="meh"))
    lm, started = flaky_lm(), []
    result = make(lm, max_rollouts=150, progress=False, listeners=[started.append]).optimize(
        program, train, val
    )
    estimate = started[0].estimate
    return {
        "calls": len(lm.prompts),
        "forecast": estimate.get("lm_calls"),
        "cap": estimate.get("lm_calls_cap"),
        "stop": result.stop_reason,
    }


def resume(name: str, run_dir: Path) -> dict[str, Any]:
    make, make_lm = OPTIMIZERS[name]
    settings = {
        "max_rollouts": 60,
        "progress": False,
        "run_dir": str(run_dir),
        "max_error_rate": None,
        "quarantine_after": None,
        "n_jobs": 2,
    }
    program, train, val = keyword_task(evaluate=FailsOnSomeExamples(True))
    make(make_lm(), **settings).optimize(program, train, val)
    lm = make_lm()
    program, train, val = keyword_task(evaluate=FailsOnSomeExamples(False))
    result = make(lm, retry_failures=True, **settings).optimize(program, train, val)
    return {"live_calls_after": len(lm.prompts), "stop": result.stop_reason}


def bill(run_dir: Path) -> dict[str, Any]:
    # the first segment's reflections saw failed rollouts; resumed with them fixed
    lenient_gepa_run(str(run_dir), FailsOnSomeExamples(True), 60)
    result = lenient_gepa_run(
        str(run_dir), FailsOnSomeExamples(False), 150, retry_failures=True
    )  # paid again, they succeed: other reflection prompts
    lines = (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    journaled = sum(json.loads(line).get("type") == "proposal" for line in lines)
    return {"reported": result.lm_usage["reflection"].calls, "journaled": journaled}


class KeywordSamplingLM(LM):
    """The keyword reflection LM as a policyopt LM: the seed picks which missing keyword it
    adds; every third seed's answer is unusable (empty). ``serves_n``: choice ``i`` of a request
    answers seed ``seed + i`` and the prompt is billed once, as an API serving ``n`` bills it."""

    def __init__(self, serves_n: bool) -> None:
        super().__init__("scripted/keyword-sampling", seed=0)
        self.serves_n = serves_n

    def _answer(self, text: str, seed: int) -> str:
        if seed % 3 == 2:
            return ""
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text))) or ["carefully"]
        return f"```\n{current.group(1) if current else ''} {missing[seed % len(missing)]}\n```"

    def _request(self, request: dict[str, Any]) -> Completion:
        text = request["messages"][-1]["content"]
        n = int(request.get("n") or 1) if self.serves_n else 1
        seed = int(request.get("seed") or 0)
        answers = [self._answer(text, seed + i) for i in range(n)]
        prompt_tokens = len(text) // 4
        completion = sum(len(a) // 4 for a in answers)
        self._add(LMUsage(calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion))
        return Completion(
            answers[0],
            "stop",
            prompt_tokens,
            completion,
            0.0,
            choices=tuple((a, "stop") for a in answers) if n > 1 else (),
        )


def pace(task: str, **settings: Any) -> dict[str, Any]:
    program, train, val = keyword_task()
    if task == "flat":
        program = type(program)(program.prompt, lambda prompt, example: Score(0.5, feedback="meh"))
        lm: Any = flaky_lm()
    else:
        lm = keyword_reflection_lm()
    started: list[Any] = []
    result = GEPA(
        reflection_lm=lm, max_rollouts=150, progress=False, listeners=[started.append], **settings
    ).optimize(program, train, val)
    estimate = started[0].estimate
    return {
        "calls": len(lm.prompts),
        "rollouts": result.n_rollouts,
        "forecast": estimate.get("lm_calls"),
        "min": estimate.get("lm_calls_min"),
        "max": estimate.get("lm_calls_max"),
        "stop": result.stop_reason,
        "best": result.best_score,
    }


def samples(serves_n: bool) -> dict[str, Any]:
    program, train, val = keyword_task()
    result = GEPA(
        reflection_lm=KeywordSamplingLM(serves_n),
        max_rollouts=150,
        progress=False,
        proposals_per_reflection=4,
        min_rollouts_per_call=0,
    ).optimize(program, train, val)
    usage = result.lm_usage["reflection"]
    return {
        "calls": usage.calls,
        "prompt": usage.prompt_tokens,
        "completion": usage.completion_tokens,
        "rollouts": result.n_rollouts,
        "best": result.best_score,
        "forecast": result.details["estimate"]["lm_calls"],
    }


def main() -> int:
    print("| optimizer | flat: calls | forecast | cap | stop | resume: live calls | stop |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in OPTIMIZERS:
            f = flat(name)
            r = resume(name, Path(tmp) / name)
            print(
                f"| {name} | {f['calls']} | {f['forecast']} | {f['cap']} | {f['stop']} | "
                f"{r['live_calls_after']} | {r['stop']} |"
            )
        b = bill(Path(tmp) / "bill")
    print(
        f"\nresumed GEPA run: result reports {b['reported']} reflection calls; "
        f"both segments journaled {b['journaled']}"
    )
    print("\n| GEPA's pace | gate | calls | rollouts | forecast | min | max | stop | best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in ("flat", "improving"):
        for label, extra in (("widens", {}), ("fixed", {"min_rollouts_per_call": 0})):
            r = pace(task, **extra)
            print(
                f"| {task} | {label} | {r['calls']} | {r['rollouts']} | {r['forecast']} | "
                f"{r['min']} | {r['max']} | {r['stop']} | {r['best']:.3f} |"
            )
    print("\n| 4 samples per reflection | calls | prompt tokens | completion tokens | rollouts "
          "| best | forecast |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for serves_n in (False, True):
        r = samples(serves_n)
        print(
            f"| {'one call for the samples (n)' if serves_n else 'one call per sample'} | "
            f"{r['calls']} | {r['prompt']} | {r['completion']} | {r['rollouts']} | "
            f"{r['best']:.3f} | {r['forecast']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
