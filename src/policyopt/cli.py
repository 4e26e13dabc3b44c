"""The ``policyopt`` command line: ``demo``, ``tasks`` and ``version``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from policyopt._version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="policyopt: optimize the prompts of LLM programs (GEPA, MIPRO).",
)


@app.command()
def version() -> None:
    """Print the library version."""
    typer.echo(__version__)


@app.command()
def tasks() -> None:
    """List the built-in tasks."""
    from policyopt.tasks import TASKS, get_task

    for name in TASKS:
        task = get_task(name)
        typer.echo(
            f"{name}: {task.description} "
            f"(train {len(task.train)}, val {len(task.val)}, test {len(task.test)})"
        )


@app.command()
def demo(
    task: Annotated[str, typer.Option(help="Built-in task (see `policyopt tasks`).")] = "",
    split: Annotated[str, typer.Option(help="Split to score on.")] = "test",
    n_jobs: Annotated[int, typer.Option(help="Rollouts in parallel.")] = 4,
    limit: Annotated[int, typer.Option(help="Score only the first N examples (0 = all).")] = 0,
    cache: Annotated[
        Path | None, typer.Option(help="Directory for the LM disk cache (off when unset).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
) -> None:
    """The main job on the embedded local model: score prompts on a built-in task.

    Scores the task's naive seed prompt and its hand-written reference prompt with
    SmolLM2-135M (llama.cpp, in-process, on 127.0.0.1) on a held-out split.
    """
    from rich.console import Console
    from rich.table import Table

    from policyopt.events import EventBus, RunFinished, RunStarted
    from policyopt.lm import LocalLM
    from policyopt.progress import ProgressDisplay
    from policyopt.rollout import RolloutEngine
    from policyopt.tasks import DEFAULT_TASK, get_task

    console = Console()
    spec = get_task(task or DEFAULT_TASK)
    examples = list(spec.split(split))
    if limit > 0:
        examples = examples[:limit]
    console.print(
        f"[bold]policyopt demo[/bold]: task [cyan]{spec.name}[/cyan] "
        f"({len(examples)} {split} examples), local model SmolLM2-135M-Instruct"
    )
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with LocalLM(n_parallel=max(1, n_jobs), cache=cache or False) as lm:
        bus = EventBus([ProgressDisplay()] if progress else [])
        program = spec.program(lm)
        budget = 2 * len(examples)
        with RolloutEngine(
            program.evaluate, n_jobs=n_jobs, events=bus, max_rollouts=budget
        ) as engine:
            ids = engine.add_split(split, examples)
            bus.emit(
                RunStarted(optimizer="evaluate", max_rollouts=budget, n_train=0, n_val=len(ids))
            )
            for label, prompt in (("seed", spec.seed_prompt), ("reference", spec.reference_prompt)):
                result = engine.run([(prompt, i) for i in ids], split=split, label=label)
                scores = result.scores()
                rows.append(
                    {
                        "prompt": label,
                        "score": sum(scores) / len(scores),
                        "n": len(scores),
                        "failed": sum(r.failed for r in result.done()),
                        "text": prompt,
                    }
                )
            rollouts = engine.rollouts_used
            best = max(rows, key=lambda row: row["score"])
            bus.emit(
                RunFinished(
                    best_score=best["score"],
                    best_candidate=rows.index(best),
                    n_rollouts=rollouts,
                    stop_reason="done",
                    wall_time_s=time.perf_counter() - started,
                )
            )
        usage = lm.usage
    wall = time.perf_counter() - started

    table = Table(title=f"{spec.name}: accuracy on the {split} split")
    table.add_column("prompt")
    table.add_column("accuracy", justify="right")
    table.add_column("examples", justify="right")
    table.add_column("text")
    for row in rows:
        text = row["text"] if len(row["text"]) <= 60 else row["text"][:57] + "..."
        table.add_row(row["prompt"], f"{row['score']:.3f}", str(row["n"]), text)
    console.print(table)
    console.print(
        f"{rollouts} rollouts, {usage.calls} LM calls ({usage.cache_hits} cached), "
        f"{usage.prompt_tokens + usage.completion_tokens} tokens, {wall:.1f}s"
    )
    console.print(
        "GEPA and MIPRO (coming next) search for prompts like the reference one automatically."
    )
    if output is not None:
        payload = {
            "task": spec.name,
            "split": split,
            "rows": rows,
            "rollouts": rollouts,
            "lm_usage": usage.model_dump(),
            "wall_time_s": wall,
        }
        output.write_text(json.dumps(payload, indent=2))


def main() -> None:
    """Entry point of the ``policyopt`` script."""
    app()


if __name__ == "__main__":
    main()
