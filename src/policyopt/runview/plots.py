"""``policyopt plot`` and ``compare``: a run's charts as PNG files and one self-contained HTML page.

- curve: best validation score known against rollouts spent (several runs overlaid to compare);
- lineage: every candidate at the rollout it was found and its validation score, an arrow from
  each parent (mutations and merges), the best one ringed;
- coverage: candidates x validation examples, each cell the score, dotted where the candidate is
  on that example's Pareto front (the examples it is "best on", which GEPA samples parents by).

The HTML page embeds the PNGs (base64) and the prompts, so it can be mailed or attached as is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policyopt.errors import MissingDependencyError
from policyopt.prompts import prompt_text
from policyopt.runview.load import RunView
from policyopt.runview.show import to_dict

__all__ = ["compare_runs", "coverage", "curve", "lineage", "plot_run"]

_ORIGIN_COLORS = {"seed": "#555555", "mutation": "#1f77b4", "merge": "#d62728"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(
            "Plots need matplotlib: pip install 'policyopt[bench]'."
        ) from exc
    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _score_limits(ax: Any, ys: Sequence[float]) -> None:
    """A score axis that always shows 0 to 1 (scores usually live there; all-zero scores would
    otherwise get a -0.04..0.04 axis), widened for scores outside it."""
    if ys:
        low, high = min(0.0, *ys), max(1.0, *ys)
        pad = (high - low) * 0.05
        ax.set_ylim(low - pad, high + pad)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def curve(views: Sequence[RunView], path: Path) -> Path:
    """Best validation score against rollouts spent, one step line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = [v.name for v in views]
    unique = len(set(names)) == len(names)  # else label by the whole path
    for view in views:
        if not view.curve:
            continue
        xs = [x for x, _ in view.curve]
        ys = [y for _, y in view.curve]
        name = view.name if unique else str(view.path)
        label = f"{name}: {view.optimizer}" if len(views) > 1 else view.optimizer
        label += f" (best {ys[-1]:.3f})"
        ax.step(xs, ys, where="post", marker="o", markersize=3, label=label)
        if view.max_rollouts:
            ax.axvline(view.max_rollouts, color="#999999", linestyle=":", linewidth=1)
    _score_limits(ax, [y for v in views for _, y in v.curve])
    ax.set_xlabel("rollouts spent")
    ax.set_ylabel("best validation score")
    title = "best score against rollouts" + (" (dotted: budget)" if len(views) == 1 else "")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(v.curve for v in views):
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no scored candidate yet", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def lineage(view: RunView, path: Path) -> Path:
    """Candidates at (rollout found, validation score), arrows from parents, the best ringed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    where = {c.index: (c.found_at_rollout, c.val_score) for c in view.candidates}
    for c in view.candidates:
        for parent in c.parents:
            if parent in where:
                ax.annotate(
                    "",
                    xy=where[c.index],
                    xytext=where[parent],
                    arrowprops={
                        "arrowstyle": "->",
                        "color": _ORIGIN_COLORS.get(c.origin, "#2ca02c"),
                        "alpha": 0.6,
                        "shrinkA": 6,
                        "shrinkB": 6,
                    },
                )
    for origin in sorted({c.origin for c in view.candidates}):
        group = [c for c in view.candidates if c.origin == origin]
        ax.scatter(
            [where[c.index][0] for c in group],
            [where[c.index][1] for c in group],
            s=60,
            color=_ORIGIN_COLORS.get(origin, "#2ca02c"),
            label=origin,
            zorder=3,
        )
    best = view.best
    for c in view.candidates:
        x, y = where[c.index]
        ax.annotate(
            f"{c.index}: {c.val_score:.2f}",
            (x, y),
            textcoords="offset points",
            xytext=(6, 5),
            fontsize=7,
        )
    if best is not None:
        ax.scatter(*where[best.index], s=220, facecolors="none", edgecolors="#ff7f0e", zorder=4)
    ax.set_xlabel("found at rollout")
    ax.set_ylabel("validation score")
    ax.set_title(f"candidate lineage ({_plural(len(view.candidates), 'candidate')}; ringed: best)")
    ax.grid(alpha=0.3)
    if view.candidates:
        ax.legend(fontsize=8, loc="lower right")
        _score_limits(ax, [y for _, y in where.values()])
    return _save(fig, path)


def _front(view: RunView, examples: list[str]) -> dict[str, set[int]]:
    """Per example, the candidates on its front (the run's own record when it kept one)."""
    recorded = (view.result.details.get("pareto_front") if view.result else None) or {}
    front: dict[str, set[int]] = {}
    for ex in examples:
        entry = recorded.get(ex) if isinstance(recorded, dict) else None
        members = entry.get("candidates") if isinstance(entry, dict) else None
        if isinstance(members, list):
            front[ex] = {int(i) for i in members if isinstance(i, (int, str))}
            continue
        scores = {c.index: c.val_scores[ex] for c in view.candidates if ex in c.val_scores}
        top = max(scores.values(), default=None)
        front[ex] = {i for i, s in scores.items() if top is not None and s >= top - 1e-6}
    return front


def coverage(view: RunView, path: Path) -> Path:
    """Heatmap: candidates x validation examples (score), dotted where on the Pareto front."""
    plt = _pyplot()
    examples: list[str] = []
    for c in view.candidates:
        for ex in c.val_scores:
            if ex not in examples:
                examples.append(ex)
    rows = [c for c in view.candidates if c.val_scores]
    # at least 7 x 4 inches: a small run's title and labels must fit, not be cut
    fig_w = min(16.0, max(7.0, 3 + 0.35 * len(examples)))
    fig_h = min(14.0, max(4.0, 2 + 0.32 * len(rows)))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    if not rows:
        ax.text(0.5, 0.5, "no candidate scored on validation yet", ha="center")
        ax.axis("off")
        return _save(fig, path)
    grid = [[c.val_scores.get(ex, math.nan) for ex in examples] for c in rows]
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1.0, *_flat(grid)))
    front = _front(view, examples)
    for r, c in enumerate(rows):
        for e, ex in enumerate(examples):
            if c.index in front.get(ex, set()):
                ax.plot(e, r, marker="o", markersize=4, color="white", markeredgecolor="black")
    covered = [sum(c.index in front.get(ex, set()) for ex in examples) for c in rows]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{c.index} ({c.origin}) {n}/{len(examples)}" for c, n in zip(rows, covered, strict=True)],
        fontsize=7,
    )
    ax.set_xticks(range(len(examples)))
    ax.set_xticklabels(examples, rotation=90, fontsize=7)
    ax.set_xlabel("validation example")
    ax.set_ylabel("candidate (on front)")
    ax.set_title("Pareto coverage per validation example\n(dot: on the front)", fontsize=10)
    fig.colorbar(image, ax=ax, label="score", fraction=0.03)
    return _save(fig, path)


def _flat(grid: list[list[float]]) -> list[float]:
    return [v for row in grid for v in row if not math.isnan(v)] or [1.0]


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _prompt(prompt: Any) -> str:
    return f"<pre>{html.escape(prompt_text(prompt))}</pre>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; width: 100%; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.9em; }
img { max-width: 100%; display: block; margin: 1em 0; }
.num { text-align: right; }
"""


def _page(title: str, body: list[str]) -> str:
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def plot_run(view: RunView, out_dir: Path) -> dict[str, Path]:
    """Write ``curve.png``, ``lineage.png``, ``coverage.png`` and ``report.html`` for one run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "curve": curve([view], out_dir / "curve.png"),
        "lineage": lineage(view, out_dir / "lineage.png"),
        "coverage": coverage(view, out_dir / "coverage.png"),
    }
    data = to_dict(view)
    facts = [
        ("optimizer", view.optimizer),
        ("best score", f"{data['best_score']:.3f}" if data["best_score"] is not None else "-"),
        ("stop reason", view.stop_reason),
        ("rollouts", f"{view.n_rollouts}/{view.max_rollouts or '-'}"),
        ("failed rollouts", str(view.failed_rollouts)),
        ("LM calls", str(data["lm_calls"])),
        ("cost (USD)", "-" if data["cost_usd"] is None else f"{data['cost_usd']:.4f}"),
        ("wall time (s)", "-" if data["wall_time_s"] is None else f"{data['wall_time_s']:.1f}"),
    ]
    body = ["<table>"]
    body += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts]
    body.append("</table>")
    if data["best"] is not None:
        body.append(f"<h2>best prompt (candidate {data['best']['candidate']})</h2>")
        body.append(_prompt(data["best"]["prompt"]))
    body.append("<h2>best score against rollouts</h2>" + _img(paths["curve"], "curve"))
    body.append("<h2>candidate lineage</h2>" + _img(paths["lineage"], "lineage"))
    body.append("<h2>Pareto coverage</h2>" + _img(paths["coverage"], "coverage"))
    body.append("<h2>candidates</h2><table><tr><th>#</th><th>parents</th><th>origin</th>")
    body.append("<th>val</th><th>at rollout</th><th>prompt</th></tr>")
    for c in view.candidates:
        body.append(
            f"<tr><td class=num>{c.index}</td><td>{html.escape(str(c.parents))}</td>"
            f"<td>{html.escape(c.origin)}</td><td class=num>{c.val_score:.3f}</td>"
            f"<td class=num>{c.found_at_rollout}</td><td>{_prompt(c.prompt)}</td></tr>"
        )
    body.append("</table>")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(data["proposal_counts"].items()))
    body.append(f"<h2>proposals ({counts or 'none'})</h2><table>")
    body.append("<tr><th>key</th><th>status</th><th>why</th><th>text</th></tr>")
    for p in view.proposals:
        body.append(
            f"<tr><td>{html.escape(p.key)}</td><td>{html.escape(p.status)}</td>"
            f"<td>{html.escape(p.reason)}</td><td>{_prompt(p.text)}</td></tr>"
        )
    body.append("</table>")
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(_page(f"policyopt run {view.path}", body), encoding="utf-8")
    return paths


def compare_runs(views: Sequence[RunView], out_dir: Path) -> dict[str, Path]:
    """Overlay several runs' curves (``compare.png``) with a table of each (``compare.html``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"curve": curve(views, out_dir / "compare.png")}
    body = ["<table><tr><th>run</th><th>optimizer</th><th>best</th><th>rollouts</th>"]
    body.append("<th>stop</th><th>LM calls</th><th>wall (s)</th><th>best prompt</th></tr>")
    for view in views:
        data = to_dict(view)
        best = "-" if data["best_score"] is None else f"{data['best_score']:.3f}"
        wall = "-" if data["wall_time_s"] is None else f"{data['wall_time_s']:.1f}"
        prompt = _prompt(data["best"]["prompt"]) if data["best"] else "-"
        body.append(
            f"<tr><td>{html.escape(str(view.path))}</td><td>{html.escape(view.optimizer)}</td>"
            f"<td class=num>{best}</td><td class=num>{view.n_rollouts}/{view.max_rollouts or '-'}"
            f"</td><td>{html.escape(view.stop_reason)}</td><td class=num>{data['lm_calls']}</td>"
            f"<td class=num>{wall}</td><td>{prompt}</td></tr>"
        )
    body.append("</table>")
    body.append("<h2>best score against rollouts</h2>" + _img(paths["curve"], "curves"))
    paths["html"] = out_dir / "compare.html"
    paths["html"].write_text(_page(f"policyopt: {len(views)} runs", body), encoding="utf-8")
    return paths
