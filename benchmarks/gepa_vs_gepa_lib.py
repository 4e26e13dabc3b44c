"""policyopt's GEPA against the ``gepa`` library, side by side in one run.

Both optimizers search the prompt of the built-in ``antonyms`` task on the embedded local model
(SmolLM2-135M as task and reflection LM, no disk cache) with the same rollout budget, seed,
minibatch size, Pareto candidate selection, merge settings, 4 rollouts in parallel and the same
kind of short reflection meta-prompt (policyopt's ``COMPACT_TEMPLATE``, translated to gepa's
``<curr_param>``/``<side_info>`` placeholders). Per seed it reports the held-out test accuracy of
each best prompt (and of the seed prompt), rollouts spent, reflection LM calls and the wall time
of the optimize call. Target: policyopt scores at least as well in at most half the wall time.

The peer is not a dependency of policyopt; install it into the venv first:
``.venv/bin/python -m uv pip install --python .venv/bin/python gepa``

Run: ``.venv/bin/python benchmarks/gepa_vs_gepa_lib.py --seeds 0 1 --budget 300``
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import statistics
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from policyopt import GEPA, LocalLM, Program, RolloutEngine, Score
from policyopt.gepa import SMALL_MODEL_SETTINGS
from policyopt.tasks import Task, get_task

TASK = "antonyms"
N_JOBS = 4
MINIBATCH = 3
MAX_MERGES = 5
MAX_PROMPT_CHARS = int(SMALL_MODEL_SETTINGS["max_prompt_chars"])
INSTALL_HINT = (
    "The `gepa` library is not installed, so there is nothing to compare against.\n"
    "Install it into this venv (it is not a dependency of policyopt):\n"
    "  .venv/bin/python -m uv pip install --python .venv/bin/python gepa"
)
#: example keys the task LM never sees (the id, and the accepted answers used by the metric)
HIDDEN_KEYS = frozenset({"id", "answers"})


def gepa_template() -> str:
    """policyopt's COMPACT_TEMPLATE in gepa's placeholders; the side info replaces {feedback}."""
    template = str(SMALL_MODEL_SETTINGS["reflection_template"])
    return template.format(current="<curr_param>", feedback="<side_info>", retry="")


def task_lm() -> LocalLM:
    """The task model, as policyopt's demo configures it."""
    return LocalLM(n_parallel=N_JOBS)


def reflection_lm() -> LocalLM:
    """The reflection model, as policyopt's demo configures it (sampled, one line)."""
    return LocalLM.for_reflection()


@dataclass
class RunResult:
    """What one optimizer run produced and spent."""

    name: str
    best_prompt: str
    rollouts: int
    reflection_calls: int
    wall_s: float
    test_accuracy: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- gepa library glue
class CountingReflectionLM:
    """gepa's reflection callable over a LocalLM; counts calls and cut-off or empty answers."""

    def __init__(self, lm: LocalLM) -> None:
        self.lm = lm
        self.calls = 0
        self.truncated = 0
        self.empty = 0
        self._lock = threading.Lock()

    def __call__(self, prompt: str | list[dict[str, Any]]) -> str:
        answer = self.lm.complete(prompt)  # type: ignore[arg-type]
        with self._lock:
            self.calls += 1
            self.truncated += answer.truncated
            self.empty += not answer.text.strip()
        return answer.text


class ListLogger:
    """A quiet gepa logger that keeps its messages for counting afterwards."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def log(self, message: str) -> None:
        self.messages.append(str(message))

    def count(self, pattern: str) -> int:
        return sum(bool(re.search(pattern, m)) for m in self.messages)

    def proposals(self) -> list[str]:
        """The texts gepa proposed (it logs each one)."""
        prefix = re.compile(r"Iteration \d+: Proposed new text for prompt: ", re.DOTALL)
        return [prefix.sub("", m, count=1) for m in self.messages if prefix.match(m)]


def _safe_evaluate(program: Program, prompt: str, example: dict[str, Any]) -> Score:
    """``program.evaluate`` with an error scored 0, as policyopt's engine does (failure_score)."""
    try:
        result = program.evaluate(prompt, example)
    except Exception as exc:
        return Score(0.0, feedback=f"The program failed: {type(exc).__name__}: {exc}")
    return result if isinstance(result, Score) else Score(float(result))


class PolicyoptProgramAdapter:
    """A ``gepa.GEPAAdapter`` running a policyopt Program, ``N_JOBS`` rollouts in parallel."""

    propose_new_texts = None  # gepa's default reflective proposer does the proposing

    def __init__(self, program: Program, pool: ThreadPoolExecutor) -> None:
        self.program = program
        self.pool = pool
        self.rollouts = 0
        self._lock = threading.Lock()

    def evaluate(
        self, batch: list[dict[str, Any]], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        from gepa.core.adapter import EvaluationBatch

        prompt = candidate["prompt"]
        scores = list(self.pool.map(lambda ex: _safe_evaluate(self.program, prompt, ex), batch))
        with self._lock:
            self.rollouts += len(batch)
        return EvaluationBatch(
            outputs=[s.output for s in scores],
            scores=[float(s.score) for s in scores],
            trajectories=list(zip(batch, scores, strict=True)) if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        records = [
            {
                "Inputs": {k: v for k, v in example.items() if k not in HIDDEN_KEYS},
                "Generated Outputs": "" if score.output is None else str(score.output),
                "Feedback": score.feedback or f"This answer scored {score.score:g}.",
            }
            for example, score in eval_batch.trajectories
        ]
        return {name: records for name in components_to_update}


def run_gepa_lib(task: Task, program: Program, budget: int, seed: int) -> RunResult:
    """The ``gepa`` library's optimize() on ``program``; returns its best prompt and spend."""
    import gepa

    logger = ListLogger()
    # no run_dir: it would pickle the state every iteration (policyopt runs without one too)
    with reflection_lm() as lm, ThreadPoolExecutor(max_workers=N_JOBS) as pool:
        adapter = PolicyoptProgramAdapter(program, pool)
        reflect = CountingReflectionLM(lm)
        started = time.perf_counter()
        result = gepa.optimize(
            seed_candidate={"prompt": task.seed_prompt},
            trainset=list(task.train),
            valset=list(task.val),
            adapter=adapter,
            reflection_lm=reflect,
            reflection_prompt_template=gepa_template(),
            candidate_selection_strategy="pareto",
            reflection_minibatch_size=MINIBATCH,
            use_merge=True,
            max_merge_invocations=MAX_MERGES,
            max_metric_calls=budget,
            seed=seed,
            logger=logger,
            display_progress_bar=False,
        )
        wall = time.perf_counter() - started
    best = result.best_candidate
    assert isinstance(best, dict)
    proposed = logger.proposals()
    return RunResult(
        name="gepa (library)",
        best_prompt=best["prompt"],
        rollouts=result.total_metric_calls or adapter.rollouts,
        reflection_calls=reflect.calls,
        wall_s=wall,
        notes={
            "adapter_rollouts": adapter.rollouts,
            "candidates": result.num_candidates,
            "val_best": result.val_aggregate_scores[result.best_idx],
            "val_seed": result.val_aggregate_scores[0],
            "proposed": len(proposed),
            "proposed_empty": sum(not p.strip() for p in proposed),
            "proposed_over_max_chars": sum(len(p) > MAX_PROMPT_CHARS for p in proposed),
            "accepted": logger.count(r"Accepted candidate"),
            "rejected": logger.count(r"is not better than"),
            "skipped_perfect": logger.count(r"All subsample scores perfect"),
            "merges_tried": logger.count(r"Merged programs"),
            "errors": logger.count(r"Exception"),
            "reflection_truncated": reflect.truncated,
            "reflection_empty": reflect.empty,
        },
    )


# --------------------------------------------------------------------------- policyopt
def run_policyopt(task: Task, program: Program, budget: int, seed: int) -> RunResult:
    """policyopt's GEPA on ``program``, configured as ``policyopt demo`` does."""
    with reflection_lm() as lm:
        optimizer = GEPA(
            reflection_lm=lm,
            max_rollouts=budget,
            n_jobs=N_JOBS,
            seed=seed,
            minibatch_size=MINIBATCH,
            candidate_selection="pareto",
            merge=True,
            max_merges=MAX_MERGES,
            progress=False,
            **SMALL_MODEL_SETTINGS,
        )
        started = time.perf_counter()
        result = optimizer.optimize(program, list(task.train), list(task.val))
        wall = time.perf_counter() - started
    counts = result.details.get("counts", {})
    assert isinstance(counts, dict)
    best = result.best_prompt
    assert isinstance(best, str)
    return RunResult(
        name="policyopt GEPA",
        best_prompt=best,
        rollouts=result.n_rollouts,
        reflection_calls=result.lm_usage["reflection"].calls,
        wall_s=wall,
        notes={
            "candidates": len(result.candidates),
            "val_best": result.best_score,
            "val_seed": result.candidates[0].val_score,
            "stop_reason": result.stop_reason,
            "iterations": result.details.get("iterations"),
            **counts,
            "rejections": result.details.get("rejections"),
            "failed_rollouts": result.details.get("failed_rollouts"),
        },
    )


# --------------------------------------------------------------------------- scoring, report
def score_on_test(program: Program, task: Task, prompt: str) -> float:
    """Accuracy of ``prompt`` on the held-out test split."""
    with RolloutEngine(program.evaluate, n_jobs=N_JOBS) as engine:
        ids = engine.add_split("test", task.test)
        scores = engine.run([(prompt, i) for i in ids], split="test").scores()
    return sum(scores) / len(scores)


def optimize_and_score(name: str, task: Task, budget: int, seed: int) -> RunResult:
    """One optimizer run on a fresh task LM, then its best prompt scored on the test split."""
    runner = run_policyopt if name == "policyopt" else run_gepa_lib
    with task_lm() as lm:
        program = task.program(lm)
        run = runner(task, program, budget, seed)
        run.test_accuracy = score_on_test(program, task, run.best_prompt)
    return run


def clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def seed_table(seed: int, budget: int, task: Task, seed_acc: float, runs: list[RunResult]) -> str:
    """The markdown table of one seed."""
    lines = [
        f"### seed {seed}, budget {budget} rollouts, test split {len(task.test)} examples",
        "",
        "| optimizer | test acc | rollouts | reflection calls | wall s | best prompt |",
        "|---|---:|---:|---:|---:|---|",
        f"| seed prompt | {seed_acc:.3f} | - | - | - | {clip(task.seed_prompt)} |",
    ]
    for run in runs:
        lines.append(
            f"| {run.name} | {run.test_accuracy:.3f} | {run.rollouts} | {run.reflection_calls} "
            f"| {run.wall_s:.1f} | {clip(run.best_prompt)} |"
        )
    return "\n".join(lines)


def details(run: RunResult, budget: int) -> str:
    """One line of search statistics, and whether the budget was overshot."""
    notes = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in run.notes.items()
    )
    over = run.rollouts - budget
    verdict = f"OVERSHOT the budget by {over}" if over > 0 else "within budget"
    return f"- {run.name}: {verdict}; {notes}"


def summary(pairs: list[tuple[int, RunResult, RunResult]], budget: int) -> str:
    """Per-seed and mean wall-time ratio and score difference, and the verdict on the target."""
    lines = [
        "## summary",
        "",
        "| seed | policyopt acc | gepa acc | acc diff (po - gepa) | policyopt s | gepa s "
        "| time ratio gepa/po | gepa rollouts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, ours, peer in pairs:
        lines.append(
            f"| {seed} | {ours.test_accuracy:.3f} | {peer.test_accuracy:.3f} "
            f"| {ours.test_accuracy - peer.test_accuracy:+.3f} | {ours.wall_s:.1f} "
            f"| {peer.wall_s:.1f} | {peer.wall_s / ours.wall_s:.2f} | {peer.rollouts}/{budget} |"
        )
    ours_acc = statistics.mean(o.test_accuracy for _, o, _ in pairs)
    peer_acc = statistics.mean(p.test_accuracy for _, _, p in pairs)
    ratio = sum(p.wall_s for _, _, p in pairs) / sum(o.wall_s for _, o, _ in pairs)
    overshoots = [s for s, _, p in pairs if p.rollouts > budget]
    target = ours_acc >= peer_acc and ratio >= 2.0
    lines += [
        "",
        f"Mean test accuracy: policyopt {ours_acc:.3f}, gepa {peer_acc:.3f} "
        f"(diff {ours_acc - peer_acc:+.3f}).",
        f"Total wall time ratio gepa/policyopt: {ratio:.2f} (target >= 2.00).",
        f"gepa overshot the budget: {'yes, seeds ' + str(overshoots) if overshoots else 'no'}.",
        f"Target (same or better score in at most half the wall time): "
        f"{'MET' if target else 'NOT MET'}.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budget", type=int, default=300, help="rollouts for each optimizer")
    args = parser.parse_args()
    try:
        import gepa  # noqa: F401
    except ImportError:
        print(INSTALL_HINT)
        return 0

    task = get_task(TASK)
    print(
        f"task {task.name} (train {len(task.train)}, val {len(task.val)}, test {len(task.test)}); "
        f"policyopt vs gepa {importlib.metadata.version('gepa')}; budget {args.budget}; "
        f"seeds {args.seeds}; {N_JOBS} rollouts in parallel",
        flush=True,
    )
    with task_lm() as lm:
        seed_acc = score_on_test(task.program(lm), task, task.seed_prompt)
    pairs: list[tuple[int, RunResult, RunResult]] = []
    for seed in args.seeds:
        ours = optimize_and_score("policyopt", task, args.budget, seed)
        peer = optimize_and_score("gepa", task, args.budget, seed)
        pairs.append((seed, ours, peer))
        print()
        print(seed_table(seed, args.budget, task, seed_acc, [ours, peer]))
        print()
        print(details(ours, args.budget))
        print(details(peer, args.budget))
        print(f"- best prompts: policyopt {ours.best_prompt!r}; gepa {peer.best_prompt!r}")
        print(f"- wall-time ratio gepa/policyopt {peer.wall_s / ours.wall_s:.2f}", flush=True)
    print()
    print(summary(pairs, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
