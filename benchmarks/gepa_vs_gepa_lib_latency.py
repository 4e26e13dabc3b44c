"""policyopt's GEPA against the ``gepa`` library when LM calls are latency-bound (API models).

``gepa_vs_gepa_lib.py`` compares the two on the embedded local model, where task and reflection
inference share two CPU cores and no scheduling can save time. With a hosted LM the calls wait on
the network instead; this benchmark simulates that, side by side in one run: the synthetic
keyword task (the feedback names the missing word) with an ``evaluate`` that sleeps 50 ms, and a
scripted reflection LM that sleeps 1 s and fixes something in about 30% of its answers. Both get
the same budget, seed, minibatch size, merge settings and 8 threads (gepa through its adapter).
Reported per seed: best validation score, rollouts, reflection calls, wall time.

Run: ``.venv/bin/python benchmarks/gepa_vs_gepa_lib_latency.py`` (needs ``gepa`` installed).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gepa_parallel_speedup import LATENCY_S as EVALUATE_S
from gepa_parallel_speedup import slow_evaluate as evaluate
from gepa_vs_gepa_lib import INSTALL_HINT, ListLogger, PolicyoptProgramAdapter
from policyopt import GEPA, Program
from policyopt.testing.conformance import keyword_task

REFLECTION_S = 1.0
N_JOBS = 8


class Reflector:
    """A 1 s reflection LM that adds one missing word in ~30% of its answers (by prompt hash)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> str:
        time.sleep(REFLECTION_S)
        with self._lock:
            self.calls += 1
        current = re.search(r"```\n(.*?)\n```", text, re.S)
        base = current.group(1).strip() if current else ""
        missing = sorted(set(re.findall(r"lacks the word (\w+)", text)))
        useful = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 10 < 3
        extra = missing[0] if useful and missing else "Be careful."
        return f"```\n{base} {extra}\n```"


def run_policyopt(budget: int, seed: int, n: int) -> dict[str, Any]:
    _, train, val = keyword_task(n_train=n, n_val=n)
    reflector = Reflector()
    optimizer = GEPA(
        reflection_lm=reflector, max_rollouts=budget, n_jobs=N_JOBS, seed=seed, progress=False
    )
    start = time.perf_counter()
    result = optimizer.optimize(Program("Solve the task.", evaluate), train, val)
    return {
        "wall": time.perf_counter() - start,
        "best": result.best_score,
        "rollouts": result.n_rollouts,
        "reflections": reflector.calls,
    }


def run_gepa_lib(budget: int, seed: int, n: int) -> dict[str, Any]:
    import gepa

    _, train, val = keyword_task(n_train=n, n_val=n)
    reflector = Reflector()
    with ThreadPoolExecutor(max_workers=N_JOBS) as pool:
        adapter = PolicyoptProgramAdapter(Program("Solve the task.", evaluate), pool)
        start = time.perf_counter()
        result = gepa.optimize(
            seed_candidate={"prompt": "Solve the task."},
            trainset=train,
            valset=val,
            adapter=adapter,
            reflection_lm=reflector,
            candidate_selection_strategy="pareto",
            reflection_minibatch_size=3,
            use_merge=True,
            max_merge_invocations=5,
            max_metric_calls=budget,
            seed=seed,
            logger=ListLogger(),
            display_progress_bar=False,
        )
        wall = time.perf_counter() - start
    return {
        "wall": wall,
        "best": result.val_aggregate_scores[result.best_idx],
        "rollouts": adapter.rollouts,
        "reflections": reflector.calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--n", type=int, default=24, help="train and val size")
    args = parser.parse_args()
    try:
        import gepa  # noqa: F401
    except ImportError:
        print(INSTALL_HINT)
        sys.exit(0)
    print(
        f"keyword task, {args.n} train / {args.n} val, budget {args.budget}, evaluate "
        f"{EVALUATE_S * 1000:.0f} ms, reflection {REFLECTION_S:.1f} s (~30% useful), "
        f"{N_JOBS} threads each"
    )
    print("| seed | optimizer | best val | rollouts | reflection calls | wall s |")
    print("|---|---|---:|---:|---:|---:|")
    totals: dict[str, list[dict[str, Any]]] = {"policyopt": [], "gepa": []}
    for seed in args.seeds:
        for name, runner in (("policyopt", run_policyopt), ("gepa", run_gepa_lib)):
            row = runner(args.budget, seed, args.n)
            totals[name].append(row)
            print(
                f"| {seed} | {name} | {row['best']:.3f} | {row['rollouts']} | "
                f"{row['reflections']} | {row['wall']:.1f} |"
            )
    po, lib = totals["policyopt"], totals["gepa"]
    ratio = sum(r["wall"] for r in lib) / sum(r["wall"] for r in po)
    print(
        f"\nmean best val: policyopt {statistics.mean(r['best'] for r in po):.3f}, "
        f"gepa {statistics.mean(r['best'] for r in lib):.3f}; "
        f"wall time gepa/policyopt {ratio:.2f}x"
    )


if __name__ == "__main__":
    main()
