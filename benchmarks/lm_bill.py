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
  calls the result reports against the calls journaled by both segments.

    python benchmarks/lm_bill.py
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policyopt import GEPA, MIPRO, OPRO, Score
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import (
    FailsOnSomeExamples,
    flaky_lm,
    keyword_meta_lm,
    keyword_proposer_lm,
    lenient_gepa_run,
)

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
    result = make(lm, **settings).optimize(program, train, val)
    return {"live_calls_after": len(lm.prompts), "stop": result.stop_reason}


def bill(run_dir: Path) -> dict[str, Any]:
    # the first segment's reflections saw failed rollouts; resumed with them fixed
    lenient_gepa_run(str(run_dir), FailsOnSomeExamples(True), 60)
    result = lenient_gepa_run(
        str(run_dir), FailsOnSomeExamples(False), 150
    )  # re-run, they succeed: other reflection prompts
    lines = (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    journaled = sum(json.loads(line).get("type") == "proposal" for line in lines)
    return {"reported": result.lm_usage["reflection"].calls, "journaled": journaled}


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
