"""``policyopt show``: a run directory as a summary, a lineage table and the proposals.

:func:`to_dict` is the ``--json`` form (stable keys, for machines); :func:`render` prints the
same content for people with rich, whole prompts wrapped, never cut.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from policyopt.prompts import prompt_text
from policyopt.runview.load import RunView

__all__ = ["render", "to_dict"]


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
                "candidate": p.candidate,
                "minibatch_score": p.minibatch_score,
                "minibatch_size": p.minibatch_size,
                "text": p.text,
            }
            for p in view.proposals
        ],
        "proposal_counts": dict(Counter(p.status for p in view.proposals)),
    }


def _money(cost: float | None) -> str:
    return "unknown (unpriced model)" if cost is None else f"${cost:.4f}"


def render(view: RunView, console: Any, *, all_proposals: bool = False) -> None:
    """Print the run for people (``console`` is a ``rich.console.Console``)."""
    from rich.table import Table

    data = to_dict(view)
    state = "finished" if view.finished else "unfinished (no result.json yet)"
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

    counts = data["proposal_counts"]
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
    # fixed widths for the short columns: rich's ratio split otherwise lets them take the room
    table.add_column("key", width=min(24, max([3, *(len(p.key) for p in shown)])), overflow="fold")
    table.add_column("status", width=10, overflow="fold")
    table.add_column("why", ratio=1, overflow="fold")
    table.add_column("proposed text", ratio=2, overflow="fold")
    for p in shown:
        table.add_row(p.key, p.status, p.reason, p.text or "(empty)")
    console.print(table)
    if len(shown) < len(view.proposals):
        console.print(
            f"... {len(view.proposals) - len(shown)} more proposals not shown: "
            "--all-proposals shows every one, --json gives them all."
        )
