"""Ablations in the harness: variant names, sweeps, cells keyed by variant, paired statistics,
the Ablations report section, its CSV/JSON files and the forest plot."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policyopt.bench import (
    BenchSettings,
    CellContext,
    OptimizerOutcome,
    load_records,
    markdown_report,
    register,
    run_benchmark,
    write_report,
)
from policyopt.bench.records import CellKey, CellRecord, SplitScore
from policyopt.bench.report import ablation_plan, ablations
from policyopt.bench.stats import bootstrap_ci, compare, holm, paired_test, sign_test, win_tie_loss
from policyopt.bench.variants import (
    Variant,
    check_settings,
    expand_sweep,
    load_sweep_file,
    parse_variant,
    setting_names,
    split_names,
)
from policyopt.errors import ConfigError
from tests.unit.bench.test_harness import RULE, reflection_lm, task_lm, tiny_task

# --- variant names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name", "settings"),
    [
        ("gepa", "gepa", {}),
        (" gepa[] ", "gepa", {}),
        ("gepa[merge=false]", "gepa[merge=false]", {"merge": False}),
        (
            "gepa[minibatch_size=6, candidate_selection=current_best]",
            "gepa[candidate_selection=current_best,minibatch_size=6]",
            {"candidate_selection": "current_best", "minibatch_size": 6},
        ),
        ("mipro[sampler=random]", "mipro[sampler=random]", {"sampler": "random"}),
        ("x[a=null,b=1.5,c=-2]", "x[a=null,b=1.5,c=-2]", {"a": None, "b": 1.5, "c": -2}),
        (
            'x[s="a, b",t=\'q]\',u="1"]',
            'x[s="a, b",t="q]",u="1"]',
            {"s": "a, b", "t": "q]", "u": "1"},
        ),
        ("dspy-gepa[auto=light]", "dspy-gepa[auto=light]", {"auto": "light"}),
    ],
)
def test_variant_specs_parse_to_one_canonical_name(
    spec: str, name: str, settings: dict[str, Any]
) -> None:
    variant = parse_variant(spec)
    assert variant.name == name and dict(variant.settings) == settings
    assert parse_variant(variant.name) == variant  # the canonical name reads back the same


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gepa[merge=false", r"Unbalanced '\['.*'gepa\[merge=false'.*close it"),
        ("gepa]", r"Unbalanced '\]' in 'gepa\]'"),
        ("gepa[=1]", r"Empty setting name in 'gepa\[=1\]'"),
        ("gepa[merge=true,merge=false]", r"'merge' is given twice.*keep one"),
        ("gepa[merge]", r"'merge' in 'gepa\[merge\]' has no value: write merge=<value>"),
        ("gepa[merge=]", r"empty value"),
        ("gepa[merge=false,]", r"remove the extra ','"),
        ("gepa[merge=false]x", r"Text after the closing '\]'"),
        ('gepa[s="open]', r"Unterminated \" quote"),
        ("[merge=false]", r"Bad optimizer name ''"),
        ("", r"empty optimizer name"),
    ],
)
def test_malformed_specs_say_what_is_wrong_and_how_to_fix_it(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_variant(spec)


def test_names_split_only_outside_brackets() -> None:
    assert split_names("gepa, gepa[merge=false,minibatch_size=6],mipro") == [
        "gepa",
        "gepa[merge=false,minibatch_size=6]",
        "mipro",
    ]


def test_setting_names_are_checked_against_the_settings_model() -> None:
    assert {"merge", "minibatch_size", "candidate_selection"} <= (setting_names("gepa") or set())
    assert "seed" not in (setting_names("gepa") or set())  # the harness sets it
    assert setting_names("some-peer") is None  # unknown: the peer checks its own
    check_settings(["gepa", "gepa[merge=false,candidate_selection=current_best]", "peer[x=1]"])
    with pytest.raises(ConfigError, match=r"Unknown setting 'merg' in 'gepa\[merg=false\]'.*merge"):
        check_settings(["gepa[merg=false]"])
    names = setting_names("mipro") or set()
    if "sampler" not in names:  # until the strategies work adds it, the error lists what exists
        with pytest.raises(ConfigError, match=r"'sampler'.*mipro's settings are: .*num_trials"):
            check_settings(["mipro[sampler=random]"])
    with pytest.raises(ConfigError, match=r"sets seed.*--seeds"):
        check_settings(["gepa[seed=3]"])
    with pytest.raises(ConfigError, match=r"Bad value in 'gepa\[minibatch_size=0\]'"):
        check_settings(["gepa[minibatch_size=0]"])


# --- sweeps --------------------------------------------------------------------------------


def test_a_sweep_expands_to_the_cartesian_product() -> None:
    names = [v.name for v in expand_sweep("gepa:merge=true,false;minibatch_size=3,6")]
    assert names == [
        "gepa[merge=true,minibatch_size=3]",
        "gepa[merge=true,minibatch_size=6]",
        "gepa[merge=false,minibatch_size=3]",
        "gepa[merge=false,minibatch_size=6]",
    ]
    fixed = expand_sweep("gepa[candidate_selection=current_best]:merge=true,false")
    assert [dict(v.settings) for v in fixed] == [
        {"candidate_selection": "current_best", "merge": True},
        {"candidate_selection": "current_best", "merge": False},
    ]
    with pytest.raises(ConfigError, match="optimizer:key=v1,v2"):
        expand_sweep("gepa")
    with pytest.raises(ConfigError, match="swept twice"):
        expand_sweep("gepa:merge=true;merge=false")
    with pytest.raises(ConfigError, match="repeats the variant"):
        expand_sweep("gepa:merge=true,true")


def test_a_toml_grid_expands_like_the_option(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(
        '[[sweep]]\noptimizer = "gepa"\n[sweep.grid]\nmerge = [true, false]\n'
        "minibatch_size = [3, 6]\n\n"
        '[[sweep]]\noptimizer = "mipro"\n[sweep.grid]\nnum_candidates = [2, 4]\n'
        "minibatch_size = 5\n"
    )
    names = [v.name for v in load_sweep_file(grid)]
    assert names[:4] == [v.name for v in expand_sweep("gepa:merge=true,false;minibatch_size=3,6")]
    assert names[4:] == [
        "mipro[minibatch_size=5,num_candidates=2]",
        "mipro[minibatch_size=5,num_candidates=4]",
    ]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sweep]]\noptimiser = "gepa"\n')
    with pytest.raises(ConfigError, match=r"bad.toml \[\[sweep\]\] #1.*optimiser"):
        load_sweep_file(bad)


# --- statistics by hand --------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.3]) == pytest.approx([0.6, 0.6])
    adjusted = holm([0.2, math.nan, 0.01])  # NaN (no pairs) is not in the family
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def test_tests_and_intervals_by_hand() -> None:
    assert win_tie_loss([0.1, 0.0, -0.2, 5e-10, 0.3]) == (2, 2, 1)
    # six wins: the exact two-sided signed-rank p is 2 / 2**6
    exact = ("signed-rank exact", pytest.approx(1 / 32))
    assert paired_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == exact
    assert paired_test([0.0, 0.0, 1e-12]) == ("signed-rank exact", 1.0)  # all ties
    assert paired_test([])[0] == "none"
    diffs = [0.1, 0.3, -0.1, 0.2, 0.25, 0.05]
    low, high = bootstrap_ci(diffs)
    assert low < sum(diffs) / len(diffs) < high
    assert (low, high) == bootstrap_ci(diffs)  # seeded
    assert bootstrap_ci([0.2, 0.2]) == (0.2, 0.2)


def test_exact_tests_need_no_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_scipy(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    # 5 of 6 positive: P(X <= 1) = 7/64 for Binomial(6, 1/2), two-sided 14/64
    assert sign_test([1, 1, 1, 1, 1, -1]) == pytest.approx(14 / 64)
    # the signed-rank null distribution is counted without scipy too: 2 of 2**6 flips
    assert paired_test([1, 2, 3, 4, 5, 6]) == ("signed-rank exact", pytest.approx(2 / 64))


def _record(optimizer: str, seed: int, score: float, task: str = "t") -> CellRecord:
    key = CellKey(task=task, optimizer=optimizer, seed=seed, budget=10, fingerprint="x")
    return CellRecord(
        key=key,
        status="ok",
        baseline_test=SplitScore(score=0.0, n_examples=10),
        optimized_test=SplitScore(score=score, n_examples=10),
    )


def test_compare_pairs_on_cells_and_corrects_across_variants() -> None:
    records = [_record("g", s, 0.5) for s in range(7)]
    records += [_record("g[a=1]", s, 0.5 + 0.1 * (s + 1)) for s in range(7)]  # always better
    records += [_record("g[a=2]", s, 0.5) for s in range(7)]  # always tied
    records += [_record("g[a=3]", s, 0.5 + (0.1 if s % 2 else -0.1)) for s in range(3)]
    records += [_record("g[a=1]", 9, 0.9)]  # no baseline cell for seed 9: not a pair
    rows = {c.variant: c for c in compare(records, ["g[a=1]", "g[a=2]", "g[a=3]"], "g")}
    better, tied, mixed = rows["g[a=1]"], rows["g[a=2]"], rows["g[a=3]"]
    assert (better.n, better.wins, better.ties, better.losses) == (7, 7, 0, 0)
    assert better.mean_diff == pytest.approx(0.4) and better.ci_low > 0
    assert better.p == pytest.approx(1 / 64)
    # Holm over the three: 1/64 is the smallest -> times 3
    assert better.p_holm == pytest.approx(3 / 64)
    assert better.verdict == "resolved: better"
    assert (tied.wins, tied.ties, tied.p, tied.p_holm) == (0, 7, 1.0, 1.0)
    assert tied.verdict.startswith("not resolved") and (tied.ci_low, tied.ci_high) == (0, 0)
    assert mixed.n == 3 and "too few" in mixed.verdict


# --- the harness ---------------------------------------------------------------------------

seen_settings: list[tuple[int, dict[str, Any]]] = []
_lock = threading.Lock()


class Knob:
    """Finds the rule unless told ``good=false``; remembers the settings it was given."""

    name = "knob"

    def unavailable(self) -> str | None:
        return None

    def run(self, ctx: CellContext) -> OptimizerOutcome:
        with _lock:
            seen_settings.append((ctx.seed, dict(ctx.settings)))
        good = ctx.settings.get("good", True)
        return OptimizerOutcome(best_prompt=RULE if good else "Answer.", rollouts=1)


def _run(out: Path, optimizers: list[str], seeds: list[int], **extra: Any) -> Any:
    register("knob", Knob)
    settings = BenchSettings(
        tasks=["tiny"], optimizers=optimizers, seeds=seeds, budget=60, n_jobs=2, **extra
    )
    return run_benchmark(
        settings, out, task_lm=task_lm(), reflection_lm=reflection_lm(), tasks={"tiny": tiny_task()}
    )


@pytest.fixture(scope="module")
def ablated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablate")
    names = ["knob", *(v.name for v in expand_sweep("knob:good=false,true"))]
    _run(out, names, list(range(7)), settings={"knob": {"level": 2}})
    return out


def test_cells_are_keyed_by_variant_and_settings_reach_the_optimizer(ablated: Path) -> None:
    records = load_records(ablated)
    names = sorted({r.key.optimizer for r in records})
    assert names == ["knob", "knob[good=false]", "knob[good=true]"]
    assert len(records) == 21 and all(r.status == "ok" for r in records)
    assert len({r.key.slug for r in records}) == 21
    slugs = sorted(p.name for p in (ablated / "cells").glob("*.json"))
    assert any(s.startswith("tiny__knob_good_false___s0__b60__") for s in slugs)
    given = {json.dumps(s, sort_keys=True) for _, s in seen_settings}
    assert given >= {
        '{"level": 2}',
        '{"good": false, "level": 2}',
        '{"good": true, "level": 2}',
    }
    bad = [r for r in records if r.key.optimizer == "knob[good=false]"]
    assert all(r.optimized_test and r.optimized_test.score == 0.0 for r in bad)


def test_variant_cells_resume_and_plain_names_keep_their_keys(ablated: Path) -> None:
    before = len(seen_settings)
    again = _run(
        ablated,
        ["knob[good=true]", "knob", "knob[good=false]"],
        list(range(7)),
        settings={"knob": {"level": 2}},
    )
    assert again.ran == [] and len(again.skipped) == 21 and len(seen_settings) == before
    # a spelling of the same variant is the same cell; a new variant runs only its own cells
    more = _run(
        ablated, ["knob[ good = false ]", "knob[good=0]"], [0], settings={"knob": {"level": 2}}
    )
    assert [k.optimizer for k in more.ran] == ["knob[good=0]"]
    # plain names keep the key (and file) an older record was written under
    bench = BenchSettings(tasks=["t"], optimizers=["gepa"], settings={"gepa": {"merge": True}})
    plain = CellKey.of(bench, "t", "gepa", 0)
    shared = {
        "limit": None,
        "split_seed": 0,
        "task_model": "local",
        "reflection_model": "local",
        "settings": {"merge": True},
    }
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:10]
    assert plain.slug == f"t__gepa__s0__b200__{digest}"


def test_old_records_load_and_report_unchanged(tmp_path: Path) -> None:
    old = {
        "key": {"task": "t", "optimizer": "gepa", "seed": 0, "budget": 5, "fingerprint": "ab"},
        "status": "ok",
        "baseline_test": {"score": 0.1, "n_examples": 3},
        "optimized_test": {"score": 0.4, "n_examples": 3},
    }
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "t__gepa__s0__b5__ab.json").write_text(json.dumps(old))
    (record,) = load_records(tmp_path)
    assert record.key.base_optimizer == "gepa" and record.key.variant == Variant("gepa")
    text = markdown_report([record])
    assert "## Ablations" not in text


def test_the_ablation_report_files_and_forest_plot(ablated: Path) -> None:
    records = [r for r in load_records(ablated) if r.key.optimizer != "knob[good=0]"]
    plan, orphans = ablation_plan(records)
    assert plan == {"knob": ["knob[good=false]", "knob[good=true]"]} and orphans == []
    paths = write_report(records, ablated)
    text = paths["markdown"].read_text()
    assert "## Overall" in text and "## Ablations" in text  # the old report stays
    section = text.split("## Ablations")[1]
    assert (
        "| variant | baseline | n | mean diff [95% CI] | W/T/L | p | p (Holm) | verdict |"
        in section
    )
    worse = next(line for line in section.splitlines() if line.startswith("| knob[good=false]"))
    # 7 losses of 1.0 each: exact p = 2/2**7, Holm over 2 variants (the other p is 1)
    assert "| knob | 7 | -1.000 [-1.000, -1.000] | 0/0/7 | 0.016 | 0.031 | resolved: worse |" in (
        worse
    )
    tied = next(line for line in section.splitlines() if line.startswith("| knob[good=true]"))
    assert "| 0/7/0 | 1.000 | 1.000 | not resolved" in tied
    rows = list(csv.DictReader(io.StringIO(paths["ablations_csv"].read_text())))
    assert [r["variant"] for r in rows] == ["knob[good=false]", "knob[good=true]"]
    assert list(rows[0])[:4] == ["variant", "baseline", "n", "mean_diff"]
    data = json.loads(paths["ablations_json"].read_text())
    assert data[0]["p_holm"] == pytest.approx(2 / 64) and data[1]["verdict"].startswith("not")
    png = paths["forest:knob"]
    assert png.name == "ablation_forest__knob.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a named baseline compares everything else with it
    named = ablations(records, ["knob[good=true]"])
    assert [(c.variant, c.baseline) for c in named] == [
        ("knob", "knob[good=true]"),
        ("knob[good=false]", "knob[good=true]"),
    ]
    with pytest.raises(ConfigError, match="Baseline 'nope' has no finished cells"):
        ablations(records, ["nope"])


def test_variants_without_their_plain_optimizer_are_named() -> None:
    records = [_record("g[a=1]", 0, 0.5)]
    text = markdown_report(records)
    assert "## Ablations" in text and "No baseline for g[a=1]" in text


def test_a_real_gepa_variant_gets_its_setting(tmp_path: Path) -> None:
    run = _run(tmp_path, ["gepa[merge=false,minibatch_size=2]"], [0])
    (record,) = run.records
    assert record.status == "ok", record.error
    settings = record.details["settings"]
    assert isinstance(settings, dict)
    assert settings["merge"] is False and settings["minibatch_size"] == 2
    with pytest.raises(ConfigError, match="Unknown setting 'merg'"):
        _run(tmp_path, ["gepa[merg=false]"], [0])


def test_the_cli_sweeps_and_names_a_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policyopt import cli

    calls: list[BenchSettings] = []

    def fake_run(settings: BenchSettings, out: Path, **_: Any) -> None:
        calls.append(settings)
        for name in settings.optimizers:
            for seed in settings.seeds:
                key = CellKey.of(settings, "t", name, seed)
                score = 0.5 + (0.1 * (seed + 1) if "merge=false" in name else 0.0)
                record = _record(name, seed, score).model_copy(update={"key": key})
                (out / "cells").mkdir(parents=True, exist_ok=True)
                (out / "cells" / f"{key.slug}.json").write_text(record.model_dump_json())

    monkeypatch.setattr("policyopt.bench.run_benchmark", fake_run)
    args = ["bench", "--tasks", "antonyms", "--seeds", "0,1,2,3,4,5", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.app, [*args, "--sweep", "gepa:merge=true,false", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert calls[0].optimizers == ["gepa", "gepa[merge=true]", "gepa[merge=false]"]
    assert "| gepa[merge=false] | gepa | 6 | +0.350" in result.output
    result = CliRunner().invoke(
        cli.app,
        [
            *args,
            "--optimizers",
            "gepa[merge=false],gepa",
            "--baseline",
            "gepa[merge=false]",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| gepa | gepa[merge=false] | 6 | -0.350" in result.output
    bad = CliRunner().invoke(cli.app, [*args, "--optimizers", "gepa", "--baseline", "mipro"])
    assert bad.exit_code != 0 and "not among the optimizers run" in bad.output
    bad = CliRunner().invoke(cli.app, [*args, "--sweep", "gepa:merge=true;merge=false"])
    assert bad.exit_code != 0 and "swept twice" in bad.output


def test_settings_of_a_users_registered_optimizer_come_from_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import BaseModel, ConfigDict

    from policyopt import registry
    from policyopt.registry import OptimizerSpec, register_optimizer

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave no trace

    class OwnSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = 1

    class Own:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def optimize(self, program: Any, trainset: Any, valset: Any = None) -> Any:
            raise NotImplementedError

    register_optimizer(OptimizerSpec(name="abl-own", cls=Own, settings=OwnSettings), replace=True)
    assert setting_names("abl-own") == {"depth"}
    check_settings(["abl-own[depth=3]"])
    with pytest.raises(ConfigError, match=r"'width'.*abl-own's settings are: depth"):
        check_settings(["abl-own[width=3]"])
    with pytest.raises(ConfigError, match=r"depth: .*integer"):
        check_settings(["abl-own[depth=deep]"])


def test_a_bad_baseline_overwrites_no_report(tmp_path: Path) -> None:
    records = [_record("g", 0, 0.5), _record("g[a=1]", 0, 0.6)]
    write_report(records, tmp_path, plots=False)
    before = (tmp_path / "cells.json").read_text()
    with pytest.raises(ConfigError, match="Baseline 'h'"):
        write_report([], tmp_path, plots=False, baselines=["h"])
    assert (tmp_path / "cells.json").read_text() == before
