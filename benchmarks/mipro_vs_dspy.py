"""policyopt's MIPRO against DSPy's MIPROv2, side by side in one run.

Both optimizers search the prompt of the built-in ``antonyms`` task on the embedded local model
(SmolLM2-135M, llama.cpp in-process, no response cache) with the same seed, number of
instruction/demo-set candidates, number of minibatch trials, minibatch size, demo limits
(4 bootstrapped, 4 labeled) and 4 rollouts in parallel. policyopt gets ``--budget`` as its hard
rollout budget and ``num_trials`` is the largest that :func:`policyopt.mipro.estimate_rollouts`
fits into it; DSPy has no rollout budget, so it runs the same plan and its real spend is counted.

For each seed it reports the held-out test accuracy of each optimized program (and of the seed
prompt), rollouts (program runs; DSPy's metric calls too), LM calls (task model and proposer),
and the wall time of the ``optimize``/``compile`` call. Target: policyopt scores at least as well
in at most half of DSPy's wall time.

DSPy programs reach the model through an adapter. ``chat`` is DSPy's default ``ChatAdapter``
(instruction and field markers in a system message; this model ignores system messages and
rarely writes the markers). ``plain`` is a small adapter written here that renders exactly the
user message policyopt's task renders and reads the whole reply as the answer, so the two
optimizers are compared on equal prompts. Both run by default (``--dspy-adapters chat plain``).

DSPy's instruction proposer also answers in ``[[ ## field ## ]]`` blocks, which this model never
writes; DSPy then raises ``AdapterParseError`` out of ``compile``. So the proposer (DSPy's
default adapter, not the task program's) is a ``ChatAdapter`` that, when a reply cannot be
parsed, takes the whole reply as the field, as policyopt's proposer takes an unfenced answer.

DSPy is not a dependency of policyopt; install it into the venv first:
``.venv/bin/python -m uv pip install --python .venv/bin/python dspy``

Run: ``.venv/bin/python benchmarks/mipro_vs_dspy.py --seeds 0 --budget 300``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from policyopt import LocalLM, Program, RolloutEngine
from policyopt.mipro import MIPRO, MIPROSettings, estimate_rollouts, trials_for_budget
from policyopt.tasks import Task, get_task

TASK = "antonyms"
N_JOBS = 4
NUM_CANDIDATES = 4
MINIBATCH = 10
MAX_DEMOS = 4  # bootstrapped and labeled, both optimizers
TASK_MAX_TOKENS = 24  # the task's own lm_kwargs
PROPOSER_TEMPERATURE = 0.9
POLICYOPT_PROPOSER_TOKENS = 96
#: DSPy's proposer answers in [[ ## field ## ]] blocks (a data summary, a program description, the
#: instruction), which need more room than a one-line answer; a tighter cap only breaks them.
DSPY_PROPOSER_TOKENS = 128
NO_ERROR_LIMIT = 10**6  # DSPy aborts after max_errors failed runs; the tiny model fails often
ADAPTERS = ("chat", "plain")
INSTALL_HINT = (
    "DSPy is not installed, so there is nothing to compare against.\n"
    "Install it into this venv (it is not a dependency of policyopt):\n"
    "  .venv/bin/python -m uv pip install --python .venv/bin/python dspy"
)


def configure_environment() -> None:
    """Keep litellm and DSPy offline and quiet: local cost map, cache dir in /tmp, no tqdm."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TQDM_DISABLE", "1")  # DSPy's Evaluate always shows a progress bar
    os.environ.setdefault(
        "DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "policyopt-bench-dspy-cache")
    )


@dataclass
class RunResult:
    """What one optimizer run produced and spent."""

    name: str
    best_prompt: str
    rollouts: int
    task_lm_calls: int
    proposer_calls: int
    wall_s: float
    metric_calls: int | None = None
    test_accuracy: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lm_calls(self) -> int:
        return self.task_lm_calls + self.proposer_calls


class Counter:
    """A thread-safe counter."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.value += n


#: runs of the DSPy task program (module-level: DSPy deep-copies programs, not globals)
DSPY_PROGRAM_RUNS = Counter()


# --------------------------------------------------------------------------- plan
def plan(budget: int, n_train: int, n_val: int) -> tuple[int, dict[str, int]]:
    """The largest ``num_trials`` whose estimated spend fits ``budget``, and that estimate."""
    common = {
        "num_candidates": NUM_CANDIDATES,
        "minibatch_size": MINIBATCH,
        "max_bootstrapped_demos": MAX_DEMOS,
        "max_labeled_demos": MAX_DEMOS,
    }
    trials = trials_for_budget(budget, n_train, n_val, **common)
    settings = MIPROSettings(max_rollouts=budget, num_trials=trials, **common)
    estimate = estimate_rollouts(settings, n_train, n_val, n_components=1)
    if estimate["total"] > budget:
        raise SystemExit(f"--budget {budget} cannot pay for even one trial; raise it.")
    return trials, estimate


# --------------------------------------------------------------------------- policyopt
def run_policyopt(task: Task, lm: LocalLM, trials: int, budget: int, seed: int) -> RunResult:
    """policyopt's MIPRO on the task's program over ``lm``."""
    program = task.program(lm)
    # sampled, as `policyopt demo --algorithm mipro` does: no newline stop, so a fenced answer fits
    with LocalLM.for_reflection(max_tokens=POLICYOPT_PROPOSER_TOKENS, stop=None) as proposer:
        optimizer = MIPRO(
            proposer_lm=proposer,
            max_rollouts=budget,
            num_candidates=NUM_CANDIDATES,
            num_trials=trials,
            minibatch_size=MINIBATCH,
            max_bootstrapped_demos=MAX_DEMOS,
            max_labeled_demos=MAX_DEMOS,
            n_jobs=N_JOBS,
            seed=seed,
            progress=False,
        )
        calls_before = lm.usage.calls
        started = time.perf_counter()
        result = optimizer.optimize(program, list(task.train), list(task.val))
        wall = time.perf_counter() - started
        task_calls = lm.usage.calls - calls_before
    best = result.best_prompt
    assert isinstance(best, str)
    return RunResult(
        name="policyopt MIPRO",
        best_prompt=best,
        rollouts=result.n_rollouts,
        task_lm_calls=task_calls,
        proposer_calls=result.lm_usage["proposer"].calls,
        wall_s=wall,
        notes={
            "val_seed": result.candidates[0].val_score,
            "val_best": result.best_score,
            "full_evals": len(result.candidates),
            "minibatch_trials": len(result.details.get("trials", [])),  # type: ignore[arg-type]
            "bootstrapped_demos": result.details.get("bootstrapped_demos"),
            "demo_set_sizes": result.details.get("demo_set_sizes"),
            "rejected_proposals": result.details.get("rejected_proposals"),
            "stop_reason": result.stop_reason,
        },
    )


def score_on_test(program: Program, task: Task, prompt: str) -> float:
    """Accuracy of ``prompt`` on the held-out test split, through policyopt's engine."""
    with RolloutEngine(program.evaluate, n_jobs=N_JOBS) as engine:
        ids = engine.add_split("test", task.test)
        scores = engine.run([(prompt, i) for i in ids], split="test").scores()
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- DSPy glue
def lm_counter() -> Any:
    """A DSPy callback counting LM calls (LM copies share their callbacks)."""
    from dspy.utils.callback import BaseCallback

    class LMCallCounter(BaseCallback):
        def __init__(self) -> None:
            self.calls = Counter()

        def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.calls.add()

    return LMCallCounter()


def dspy_lm(local: LocalLM, counter: Any, *, temperature: float, max_tokens: int) -> Any:
    """A ``dspy.LM`` over the embedded model's OpenAI-compatible server, uncached."""
    import dspy

    return dspy.LM(
        model=local.model,
        api_base=local.api_base,
        api_key="sk-local",
        temperature=temperature,
        max_tokens=max_tokens,
        cache=False,
        num_retries=2,
        callbacks=[counter],
    )


def plain_adapter(task: Task) -> Any:
    """A DSPy adapter rendering policyopt's user message: instruction, demos, input, ``Answer:``.

    Demos enter the instruction as policyopt's default demo formatter writes them; the reply,
    whole, is the output field.
    """
    import dspy

    from policyopt.mipro import Demo, format_prompt

    class PlainAdapter(dspy.Adapter):
        def format(
            self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]
        ) -> list[dict[str, Any]]:
            shown = [
                Demo(str(d["word"]), str(d["opposite"]))
                for d in demos
                if d.get("word") and d.get("opposite")
            ]
            prompt = format_prompt(signature.instructions, shown)
            text = task.render(prompt, {"word": inputs["word"]})
            return [{"role": "user", "content": text}]

        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            return {name: completion for name in signature.output_fields}

    return PlainAdapter()


def lenient_chat_adapter() -> Any:
    """DSPy's ChatAdapter, except that an unparsable reply becomes every output field, whole."""
    import dspy
    from dspy.utils.exceptions import AdapterParseError

    class LenientChatAdapter(dspy.ChatAdapter):
        def parse(self, signature: Any, completion: str) -> dict[str, Any]:
            try:
                return super().parse(signature, completion)
            except AdapterParseError:
                return {name: completion.strip() for name in signature.output_fields}

    return LenientChatAdapter(use_json_adapter_fallback=False)


def dspy_program(task: Task, adapter: str) -> Any:
    """``word -> opposite`` with the task's seed instruction; counts its runs.

    ``chat`` runs DSPy's stock ChatAdapter (with its JSONAdapter fallback), ``plain`` the
    adapter of :func:`plain_adapter`.
    """
    import dspy

    signature = dspy.Signature("word -> opposite", task.seed_prompt)
    local_adapter = plain_adapter(task) if adapter == "plain" else dspy.ChatAdapter()

    class Antonym(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict(signature)

        def forward(self, word: str) -> Any:
            DSPY_PROGRAM_RUNS.add()
            with dspy.context(adapter=local_adapter):
                return self.predict(word=word)

    return Antonym()


def dspy_examples(rows: Sequence[dict[str, Any]]) -> list[Any]:
    """Task rows as ``dspy.Example`` (input ``word``; label ``opposite``, the first answer)."""
    import dspy

    return [
        dspy.Example(word=r["word"], opposite=r["answers"][0], answers=r["answers"]).with_inputs(
            "word"
        )
        for r in rows
    ]


def dspy_metric(task: Task, calls: Counter) -> Callable[..., float]:
    """The task's metric on the predicted text, 1.0 or 0.0; counts its calls."""

    def metric(example: Any, prediction: Any, trace: Any = None) -> float:
        calls.add()
        output = str(getattr(prediction, "opposite", "") or "")
        return task.metric(output, {"word": example.word, "answers": example.answers}).score

    return metric


def dspy_test_accuracy(program: Any, task: Task, examples: Sequence[Any]) -> float:
    """Accuracy of a DSPy program on ``examples``; a failed run scores 0 (as in our engine)."""
    metric = dspy_metric(task, Counter())

    def one(example: Any) -> float:
        try:
            return metric(example, program(word=example.word))
        except Exception:
            return 0.0

    with ThreadPoolExecutor(max_workers=N_JOBS) as pool:
        scores = list(pool.map(one, examples))
    return sum(scores) / len(scores)


def describe_dspy_program(program: Any) -> str:
    """The compiled predictor's instruction, plus its demo count."""
    predictor = program.predict
    demos = len(predictor.demos)
    return predictor.signature.instructions + (f" [+{demos} demos]" if demos else "")


def run_dspy(
    task: Task, lm: LocalLM, trials: int, seed: int, adapter: str
) -> tuple[RunResult, float]:
    """DSPy's MIPROv2 with policyopt's plan; returns the run and the seed program's test score."""
    import dspy
    from dspy.teleprompt import MIPROv2

    task_counter, proposer_counter, metric_calls = lm_counter(), lm_counter(), Counter()
    task_model = dspy_lm(lm, task_counter, temperature=0.0, max_tokens=TASK_MAX_TOKENS)
    trainset, valset = dspy_examples(task.train), dspy_examples(task.val)
    test = dspy_examples(task.test)
    # the default adapter serves the proposer; the task program sets its own
    dspy.configure(lm=task_model, adapter=lenient_chat_adapter())
    with LocalLM(n_parallel=2) as proposer:  # its own server, as policyopt's proposer has
        prompt_model = dspy_lm(
            proposer,
            proposer_counter,
            temperature=PROPOSER_TEMPERATURE,
            max_tokens=DSPY_PROPOSER_TOKENS,
        )
        optimizer = MIPROv2(
            metric=dspy_metric(task, metric_calls),
            prompt_model=prompt_model,
            task_model=task_model,
            auto=None,
            num_candidates=NUM_CANDIDATES,
            max_bootstrapped_demos=MAX_DEMOS,
            max_labeled_demos=MAX_DEMOS,
            num_threads=N_JOBS,
            max_errors=NO_ERROR_LIMIT,
            seed=seed,
            init_temperature=PROPOSER_TEMPERATURE,
            verbose=False,
        )
        student = dspy_program(task, adapter)
        runs_before = DSPY_PROGRAM_RUNS.value
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # DSPy prints each bootstrap round
            compiled = optimizer.compile(
                student,
                trainset=trainset,
                valset=valset,
                num_trials=trials,
                minibatch=True,
                minibatch_size=MINIBATCH,
                seed=seed,
            )
        wall = time.perf_counter() - started
    rollouts = DSPY_PROGRAM_RUNS.value - runs_before
    run = RunResult(
        name=f"DSPy MIPROv2 ({adapter})",
        best_prompt=describe_dspy_program(compiled),
        rollouts=rollouts,
        metric_calls=metric_calls.value,
        task_lm_calls=task_counter.calls.value,
        proposer_calls=proposer_counter.calls.value,
        wall_s=wall,
        notes={
            "val_best_pct": getattr(compiled, "score", None),
            "failed_runs": rollouts - metric_calls.value,
            "full_evals": len(getattr(compiled, "candidate_programs", [])),
            "minibatch_trials": len(getattr(compiled, "mb_candidate_programs", [])),
        },
    )
    run.test_accuracy = dspy_test_accuracy(compiled, task, test)
    seed_accuracy = dspy_test_accuracy(dspy_program(task, adapter), task, test)
    return run, seed_accuracy


# --------------------------------------------------------------------------- report
def clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def seed_table(
    seed: int, budget: int, task: Task, seed_rows: dict[str, float], runs: Sequence[RunResult]
) -> str:
    """The markdown table of one seed."""
    lines = [
        f"### seed {seed}, budget {budget} rollouts, test split {len(task.test)} examples",
        "",
        "| program | test acc | rollouts | metric calls | task LM calls | proposer LM calls "
        "| LM calls | wall s | best prompt |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, accuracy in seed_rows.items():
        lines.append(f"| {label} | {accuracy:.3f} | - | - | - | - | - | - | seed prompt |")
    for run in runs:
        metric = "=" if run.metric_calls is None else str(run.metric_calls)
        lines.append(
            f"| {run.name} | {run.test_accuracy:.3f} | {run.rollouts} | {metric} "
            f"| {run.task_lm_calls} | {run.proposer_calls} | {run.lm_calls} | {run.wall_s:.1f} "
            f"| {clip(run.best_prompt)} |"
        )
    return "\n".join(lines)


def details(run: RunResult, budget: int) -> str:
    """One line of search statistics, and whether the budget was overshot."""
    notes = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in run.notes.items()
    )
    over = run.rollouts - budget
    verdict = f"OVERSHOT the budget by {over}" if over > 0 else "within budget"
    return f"- {run.name}: {verdict}; {notes}; best prompt {run.best_prompt!r}"


def summary(results: list[tuple[int, RunResult, list[RunResult]]], budget: int) -> str:
    """Per-seed and overall score difference and wall-time ratio against each DSPy variant."""
    lines = [
        "## summary",
        "",
        "| seed | DSPy variant | policyopt acc | DSPy acc | diff (po - DSPy) | policyopt s "
        "| DSPy s | ratio DSPy/po | DSPy rollouts | DSPy LM calls / po |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for seed, ours, peers in results:
        for peer in peers:
            lines.append(
                f"| {seed} | {peer.name} | {ours.test_accuracy:.3f} | {peer.test_accuracy:.3f} "
                f"| {ours.test_accuracy - peer.test_accuracy:+.3f} | {ours.wall_s:.1f} "
                f"| {peer.wall_s:.1f} | {peer.wall_s / ours.wall_s:.2f} "
                f"| {peer.rollouts}/{budget} | {peer.lm_calls} / {ours.lm_calls} |"
            )
    lines.append("")
    ours_acc = statistics.mean(o.test_accuracy for _, o, _ in results)
    ours_s = sum(o.wall_s for _, o, _ in results)
    for name in dict.fromkeys(p.name for _, _, peers in results for p in peers):
        peers = [p for _, _, ps in results for p in ps if p.name == name]
        peer_acc = statistics.mean(p.test_accuracy for p in peers)
        ratio = sum(p.wall_s for p in peers) / ours_s
        met = ours_acc >= peer_acc and ratio >= 2.0
        lines.append(
            f"- vs {name}: mean test accuracy policyopt {ours_acc:.3f}, DSPy {peer_acc:.3f} "
            f"(diff {ours_acc - peer_acc:+.3f}); total wall-time ratio DSPy/policyopt "
            f"{ratio:.2f} (target >= 2.00); target (same or better score in at most half the "
            f"wall time): {'MET' if met else 'NOT MET'}."
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def quiet_dspy() -> None:
    """DSPy logs every trial at INFO and every cut-off reply at WARNING; keep errors only."""
    for name in ("dspy", "LiteLLM", "litellm", "httpx", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=300, help="policyopt's rollout budget")
    parser.add_argument(
        "--dspy-adapters",
        nargs="+",
        choices=ADAPTERS,
        default=list(ADAPTERS),
        help="DSPy adapters to run: chat (DSPy's default) and/or plain (policyopt's rendering)",
    )
    args = parser.parse_args()
    configure_environment()
    try:
        import dspy
    except ImportError:
        print(INSTALL_HINT)
        return 0
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    quiet_dspy()

    task = get_task(TASK)
    trials, estimate = plan(args.budget, len(task.train), len(task.val))
    print(
        f"task {task.name} (train {len(task.train)}, val {len(task.val)}, test {len(task.test)}); "
        f"policyopt vs DSPy {importlib.metadata.version('dspy')}; budget {args.budget}; "
        f"seeds {args.seeds}; num_candidates {NUM_CANDIDATES}, num_trials {trials}, minibatch "
        f"{MINIBATCH}, {N_JOBS} rollouts in parallel; policyopt's plan: {estimate}",
        flush=True,
    )
    results: list[tuple[int, RunResult, list[RunResult]]] = []
    for seed in args.seeds:
        with LocalLM(n_parallel=N_JOBS) as lm:
            seed_rows = {
                "seed prompt (policyopt)": score_on_test(task.program(lm), task, task.seed_prompt)
            }
            ours = run_policyopt(task, lm, trials, args.budget, seed)
            print(f"seed {seed}: policyopt MIPRO done in {ours.wall_s:.1f}s", flush=True)
            ours.test_accuracy = score_on_test(task.program(lm), task, ours.best_prompt)
        peers: list[RunResult] = []
        for adapter in args.dspy_adapters:
            with LocalLM(n_parallel=N_JOBS) as lm:
                peer, seed_accuracy = run_dspy(task, lm, trials, seed, adapter)
            print(f"seed {seed}: {peer.name} done in {peer.wall_s:.1f}s", flush=True)
            seed_rows[f"seed program (DSPy {adapter})"] = seed_accuracy
            peers.append(peer)
        results.append((seed, ours, peers))
        print()
        print(seed_table(seed, args.budget, task, seed_rows, [ours, *peers]))
        print()
        for run in (ours, *peers):
            print(details(run, args.budget))
        print(flush=True)
    print(summary(results, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
