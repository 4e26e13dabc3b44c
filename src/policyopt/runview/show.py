"""``policyopt show``: a run directory as a summary, a lineage table and the proposals.

:func:`to_dict` is the ``--json`` form (stable keys, for machines); :func:`render` prints the
same content for people with rich, whole prompts wrapped, never cut.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from policyopt.prompts import prompt_text
from policyopt.runview.load import RunView

__all__ = ["render", "render_examples", "to_dict"]


def _prompt_text(prompt: object) -> str:
    """A prompt for people: a text as is, components and chat messages one per line."""
    return prompt_text(prompt)


def to_dict(view: RunView) -> dict[str, Any]:
    """Everything ``show`` prints, as JSON-ready data."""
    result = view.result
    best = view.best
    usage = {k: u.model_dump() for k, u in (result.lm_usage if result else {}).items()}
    details = result.details if result else {}
    return {
        "run_dir": str(view.path),
        "optimizer": view.optimizer,
        "finished": view.finished,
        "running_pid": view.running_pid,
        "best": None
        if best is None
        else {"candidate": best.index, "score": best.val_score, "prompt": best.prompt},
        "best_score": result.best_score if result else (best.val_score if best else None),
        "stop_reason": view.stop_reason,
        "stop_detail": details.get("stop_detail"),
        "n_rollouts": view.n_rollouts,
        "max_rollouts": view.max_rollouts,
        "lm_calls": sum(u["calls"] for u in usage.values()),
        "lm_usage": usage,
        "cost_usd": result.cost_usd if result else None,
        "wall_time_s": result.wall_time_s if result else None,
        "seed": result.seed if result else view.config.get("settings", {}).get("seed"),
        "failed_rollouts": view.failed_rollouts,
        "last_failure": view.last_failure,
        "quarantined_examples": details.get("quarantined_examples") or {},
        "reasks_skipped": details.get("reasks_skipped") or {},
        "journal_torn_tail": view.torn_tail,
        "journal_damaged_lines": view.damaged_lines,
        "candidates": [
            {
                "index": c.index,
                "parents": c.parents,
                "origin": c.origin,
                "val_score": c.val_score,
                "n_val": len(c.val_scores),
                "found_at_rollout": c.found_at_rollout,
                "prompt": c.prompt,
            }
            for c in view.candidates
        ],
        "curve": [{"rollouts": n, "best_score": s} for n, s in view.curve],
        "proposals": [
            {
                "key": p.key,
                "status": p.status,
                "reason": p.reason,
                "code": p.code,
                "candidate": p.candidate,
                "minibatch_score": p.minibatch_score,
                "minibatch_size": p.minibatch_size,
                "text": p.text,
            }
            for p in view.proposals
        ],
        "proposal_counts": dict(Counter(p.status for p in view.proposals)),
        "proposal_verdicts_recorded": view.verdicts_recorded,
    }


def _money(cost: float | None) -> str:
    return "unknown (unpriced model)" if cost is None else f"${cost:.4f}"


def render(view: RunView, console: Any, *, all_proposals: bool = False) -> None:
    """Print the run for people (``console`` is a ``rich.console.Console``)."""
    from rich.table import Table

    data = to_dict(view)
    state = "finished" if view.finished else "unfinished (no result.json yet)"
    if not view.finished and view.running_pid is not None:
        state = f"running (pid {view.running_pid})"
    console.print(f"[bold]{view.path}[/bold]: {view.optimizer} run, {state}")
    if view.torn_tail:
        console.print(
            "note: journal.jsonl ends in a torn record (the run was killed while writing); "
            "it is ignored, as a resumed run ignores it."
        )
    best = data["best"]
    lines = []
    if best is not None:
        lines.append(f"best: candidate {best['candidate']}, val score {best['score']:.3f}")
    budget = f"/{view.max_rollouts}" if view.max_rollouts is not None else ""
    lines.append(f"stop reason: {view.stop_reason}")
    if data["stop_detail"]:
        lines.append(f"stop detail: {data['stop_detail']}")
    lines.append(f"rollouts: {view.n_rollouts}{budget} ({view.failed_rollouts} failed)")
    if view.last_failure:
        lines.append(f"last failure: {view.last_failure}")
    if data["quarantined_examples"]:
        lines.append(f"quarantined examples: {', '.join(data['quarantined_examples'])}")
    if view.result is not None:
        roles = ", ".join(f"{k} {u['calls']}" for k, u in data["lm_usage"].items()) or "none"
        lines.append(f"LM calls: {data['lm_calls']} ({roles})")
        if data["reasks_skipped"]:
            skipped = ", ".join(f"{k} {n}" for k, n in sorted(data["reasks_skipped"].items()))
            lines.append(
                f"re-asks skipped (the LM kept failing that way): {skipped}",
            )
        lines.append(f"cost: {_money(data['cost_usd'])}")
        lines.append(f"wall time: {data['wall_time_s']:.1f}s, seed {data['seed']}")
    console.print("\n".join(lines), highlight=False)
    if best is not None:
        console.print("[bold]best prompt:[/bold]")
        console.print(_prompt_text(best["prompt"]), markup=False, highlight=False)

    table = Table(title="candidates (lineage)", show_lines=True, expand=True)
    for name, justify in [("#", "right"), ("parents", "left"), ("origin", "left")]:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    table.add_column("val", justify="right", no_wrap=True)
    table.add_column("at rollout", justify="right", no_wrap=True)
    table.add_column("prompt", overflow="fold", ratio=1)
    for c in view.candidates:
        mark = " *" if best is not None and c.index == best["candidate"] else ""
        table.add_row(
            f"{c.index}{mark}",
            ",".join(map(str, c.parents)) or "-",
            c.origin,
            f"{c.val_score:.3f}" if c.val_scores else "-",
            str(c.found_at_rollout),
            _prompt_text(c.prompt),
        )
    console.print(table)
    _render_proposals(view, data["proposal_counts"], console, all_proposals=all_proposals)


def _render_proposals(
    view: RunView, counts: dict[str, int], console: Any, *, all_proposals: bool
) -> None:
    """The proposals table: every accepted one, then the first others (all with the flag)."""
    from rich.table import Table

    if not view.proposals:
        console.print("proposals: none recorded in the journal")
        return
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    shown = list(view.proposals)
    if not all_proposals and len(shown) > 20:  # every accepted one, then the first others
        room = max(0, 20 - counts.get("accepted", 0))
        others = {id(p) for p in shown if p.status != "accepted"}
        kept_others = [p for p in shown if id(p) in others][:room]
        chosen = {id(p) for p in kept_others} | {id(p) for p in shown if id(p) not in others}
        shown = [p for p in shown if id(p) in chosen]
    table = Table(
        title=f"proposals ({len(view.proposals)}: {summary})", show_lines=True, expand=True
    )
    # the key and its status share one narrow column (one line each), so that the reason and
    # the text keep the width even on an 80-column terminal
    key_width = min(24, max([10, *(len(p.key) for p in shown)]))
    table.add_column("proposal", width=key_width, overflow="fold")
    table.add_column("why", ratio=1, min_width=20, overflow="fold")
    table.add_column("proposed text", ratio=2, min_width=20, overflow="fold")
    for p in shown:
        table.add_row(f"{p.key}\n{p.status}", p.reason, p.text or "(empty)")
    console.print(table)
    if not view.verdicts_recorded:
        console.print(
            "note: this run did not record the proposal loop's verdicts (an older version): "
            "they are judged again here by the basic checks only, without the optimizer's guards."
        )
    if len(shown) < len(view.proposals):
        console.print(
            f"... {len(view.proposals) - len(shown)} more proposals not shown: "
            "--all-proposals shows every one, --json gives them all."
        )


def _cell(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_examples(rows: list[dict[str, Any]], console: Any) -> None:
    """Per validation example: its input, and the seed and best prompts' output, score and
    feedback (``rows`` from :func:`policyopt.runview.examples.example_rows`)."""
    from rich.table import Table

    if not rows:
        console.print("examples: no validation rollouts in the journal")
        return
    table = Table(title=f"validation examples ({len(rows)})", show_lines=True, expand=True)
    table.add_column("example", ratio=1, overflow="fold")
    table.add_column("prompt", width=6)
    table.add_column("score", justify="right", width=5)
    table.add_column("output", ratio=2, overflow="fold")
    table.add_column("feedback", ratio=2, overflow="fold")
    for row in rows:
        head = row["id"] if row["input"] is None else f"{row['id']}: {_cell(row['input'])}"
        for label in ("seed", "best"):
            got = row[label]
            if got is None:
                table.add_row(head, label, "-", "(not run)", "")
            else:
                score = "-" if got["score"] is None else f"{got['score']:.2f}"
                output = _cell(got["output"]) if got["output"] is not None else ""
                note = got["error"] or got["feedback"] or ""
                table.add_row(head, label, score, output, _cell(note))
            head = ""
    console.print(table)
