"""``policyopt plot`` on a small run: titles and axis labels fit inside the figures, one
candidate is "1 candidate", and all-zero scores get a 0-to-1 score axis, not -0.04..0.04."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policyopt import GEPA, Program
from policyopt.runview import load_run, plots
from policyopt.testing.conformance import keyword_reflection_lm


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "zero"
    data = [{"id": f"e{i}", "x": i} for i in range(4)]
    GEPA(
        reflection_lm=keyword_reflection_lm(),
        max_rollouts=4,  # the seed on 4 examples: one candidate, every score 0
        n_jobs=1,
        run_dir=str(run_dir),
        progress=False,
    ).optimize(Program("Solve the task.", lambda prompt, example: 0.0), data, data)
    return run_dir


def test_small_run_plots_fit_and_read_well(
    zero_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    save = plots._save

    def checked(fig: Any, path: Path) -> Path:
        fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes[:1]:
            texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
            seen[path.stem] = {"ylim": ax.get_ylim(), "title": ax.get_title()}
            for text in texts:
                box = text.get_window_extent(renderer)
                inside = (
                    box.x0 >= fig.bbox.x0 - 1
                    and box.x1 <= fig.bbox.x1 + 1
                    and box.y0 >= fig.bbox.y0 - 1
                    and box.y1 <= fig.bbox.y1 + 1
                )
                assert inside, f"{path.name}: {text.get_text()!r} is cut"
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", checked)
    plots.plot_run(load_run(zero_run), tmp_path / "plots")
    assert "(1 candidate;" in seen["lineage"]["title"]
    for name in ("lineage", "curve"):
        low, high = seen[name]["ylim"]
        assert low <= 0.0 < 1.0 <= high and high - low < 1.5, (name, low, high)
