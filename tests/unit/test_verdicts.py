"""Proposal verdicts: the loop journals one verdict per answer it judges, a resumed run does not
journal them twice, and ``show``/``runview`` read them (an older run's are re-derived)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policyopt import GEPA, OPRO
from policyopt.cli import app
from policyopt.events import REASONS, ProposalJudged
from policyopt.gepa.proposer import Proposer
from policyopt.gepa.reflection import DEFAULT_TEMPLATE
from policyopt.proposals import DUPLICATE, ProposalLoop
from policyopt.runview import load_run
from policyopt.state.journal import Journal
from policyopt.state.memo import MAX_ANSWER_CHARS, JournaledLM
from policyopt.testing import ScriptedLM
from policyopt.testing.conformance import keyword_reflection_lm, keyword_task
from policyopt.testing.scripted import keyword_meta_lm
from tests.unit.test_proposals import LEAK, echoing_lm

GOOD = "```\nGive the opposite of the word.\n```"
CURRENT = "Answer the question."
RECORDS = [
    {"Input": "the sky is blue today", "Generated Outputs": "red", "Feedback": "wrong"},
    {"Input": "grass grows slowly", "Generated Outputs": "fast", "Feedback": "wrong"},
]


def judge(answer: str, tmp_path: Path, *, finish: str = "stop") -> list[dict[str, Any]]:
    """The verdicts journaled on ``answer`` then a usable one, by GEPA's proposer (all guards)."""
    journal = Journal(tmp_path / "journal.jsonl")
    events: list[ProposalJudged] = []
    lm = JournaledLM(
        ScriptedLM([answer, GOOD], finish_reason=finish),
        journal=journal,
        on_verdict=events.append,
    )
    proposer = Proposer(
        lm, template=DEFAULT_TEMPLATE, max_retries=1, max_chars=200, reject_copies=True
    )
    proposer.propose("1/0/prompt", "prompt", CURRENT, RECORDS)
    journal.close()
    verdicts = [r for r in journal.read() if r["type"] == "verdict"]
    assert verdicts == [e.record() for e in events]  # every journaled verdict was emitted
    return verdicts


@pytest.mark.parametrize(
    ("answer", "finish", "code"),
    [
        ("```\nHalf an instruction", "length", "cut_off"),
        ("```\nHalf an instruction", "stop", "unparsable"),
        ("```\n\n```", "stop", "empty"),
        (f"```\n{CURRENT}\n```", "stop", "unchanged"),
        ("```\n" + "word " * 60 + "\n```", "stop", "too_long"),
        ("x" * (MAX_ANSWER_CHARS + 10), "stop", "too_long"),
        ('```\nAnswer "the sky is blue today" with red.\n```', "stop", "copies_example"),
        (f"```\n{LEAK}\n```", "stop", "echoes_prompt"),
    ],
    ids=["cut_off", "unparsable", "empty", "unchanged", "too_long", "capped", "copies", "echo"],
)
def test_every_rejection_is_journaled_with_its_code(
    answer: str, finish: str, code: str, tmp_path: Path
) -> None:
    verdicts = judge(answer, tmp_path, finish=finish)
    first = verdicts[0]
    assert (first["key"], first["attempt"], first["role"]) == ("1/0/prompt/0", 0, "proposal")
    assert (first["verdict"], first["reason"], first["text"]) == ("rejected", code, None)
    assert code in REASONS and first["detail"]
    if finish == "stop":  # the retry's answer is usable: accepted, with its text
        assert verdicts[1]["verdict"] == "accepted" and verdicts[1]["reason"] is None
        assert verdicts[1]["text"] == "Give the opposite of the word."
        assert verdicts[1]["key"] == "1/0/prompt/1"


def test_a_duplicate_is_a_second_verdict_on_the_accepted_answer(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    request.addfinalizer(journal.close)
    lm = JournaledLM(ScriptedLM([GOOD, GOOD]), journal=journal)
    loop = ProposalLoop(lm, max_retries=0, max_chars=99)
    assert loop.propose("3/1", lambda *_: "p") == "Give the opposite of the word."
    loop.reject(DUPLICATE, "3/1", "a sibling proposed it")
    got = [(r["key"], r["verdict"], r["reason"]) for r in journal.read() if r["type"] == "verdict"]
    assert got == [("3/1/0", "accepted", None), ("3/1/0", "rejected", DUPLICATE)]
    assert loop.rejections == {DUPLICATE: 1}
    # a guard's duplicate is rejected before it is accepted
    guard = lambda text: (DUPLICATE, "proposed before")  # noqa: E731
    assert loop.propose("4/0", lambda *_: "q", guards=[guard]) is None
    assert journal.read()[-1]["reason"] == DUPLICATE
    assert loop.rejections == {DUPLICATE: 2}


def test_an_opro_run_journals_its_sibling_duplicates(tmp_path: Path) -> None:
    program, train, val = keyword_task()
    run_dir = tmp_path / "run"
    result = OPRO(
        meta_lm=keyword_meta_lm(), max_rollouts=120, n_jobs=2, progress=False, run_dir=str(run_dir)
    ).optimize(program, train, val)
    records = Journal(run_dir / "journal.jsonl").read()
    rejected = [r for r in records if r["type"] == "verdict" and r["verdict"] == "rejected"]
    assert len(rejected) == result.details["rejections"][DUPLICATE] > 0  # type: ignore[index]
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    judged = [e for e in events if e["kind"] == "proposal_judged"]
    assert len(judged) == sum(r["type"] == "verdict" for r in records)
    # show: a duplicate's last verdict (rejected after it was accepted) is the one shown
    shown = [p for p in load_run(run_dir).proposals if p.code == DUPLICATE]
    assert len(shown) == len(rejected) and all(p.status == "unusable" for p in shown)


def gepa_run(run_dir: Path, max_rollouts: int = 150, lm: Any = None) -> Any:
    program, train, val = keyword_task()
    return GEPA(
        reflection_lm=lm or keyword_reflection_lm(),
        max_rollouts=max_rollouts,
        n_jobs=2,
        progress=False,
        run_dir=str(run_dir),
    ).optimize(program, train, val)


def verdict_records(run_dir: Path) -> list[str]:
    return sorted(
        json.dumps(r, sort_keys=True)
        for r in Journal(run_dir / "journal.jsonl").read()
        if r["type"] == "verdict"
    )


def test_a_resumed_run_journals_each_verdict_once(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    gepa_run(fresh)
    want = verdict_records(fresh)
    assert want and len(set(want)) == len(want)
    # a finished run replayed: every verdict is judged again, none is written again
    gepa_run(fresh)
    assert verdict_records(fresh) == want
    # killed between answers and their verdicts: the resumed run journals the missing ones
    cut = tmp_path / "cut"
    gepa_run(cut, max_rollouts=60)
    path = cut / "journal.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    dropped = [x for x in lines if '"type":"verdict"' in x][-2:]
    assert dropped
    path.write_text("".join(x for x in lines if x not in dropped), encoding="utf-8")
    gepa_run(cut)
    assert verdict_records(cut) == want


def test_show_reads_the_journaled_verdicts(tmp_path: Path) -> None:
    run_dir = tmp_path / "echo"
    gepa_run(run_dir, max_rollouts=60, lm=echoing_lm())
    view = load_run(run_dir)
    assert view.verdicts_recorded and view.proposals
    # only the journaled verdicts know of the echo guard: the basic checks pass these answers
    assert {p.code for p in view.proposals} == {"echoes_prompt"}
    assert all(p.status == "unusable" for p in view.proposals)
    assert view.proposals[0].reason.startswith("echoes_prompt: it repeats the request's own words")
    result = CliRunner().invoke(app, ["show", str(run_dir), "--json"])
    data = json.loads(result.stdout)
    assert data["proposal_verdicts_recorded"] is True
    assert {p["code"] for p in data["proposals"]} == {"echoes_prompt"}


def test_an_older_run_without_verdicts_is_still_shown(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    gepa_run(run_dir, max_rollouts=60, lm=echoing_lm())
    path = run_dir / "journal.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(x for x in lines if '"type":"verdict"' not in x), encoding="utf-8")
    view = load_run(run_dir)
    assert not view.verdicts_recorded and view.proposals
    # re-derived by the basic checks, which do not know the echo guard
    assert all(p.code != "echoes_prompt" for p in view.proposals)
    result = CliRunner().invoke(app, ["show", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "did not record the proposal loop's verdicts" in result.stdout
    data = json.loads(CliRunner().invoke(app, ["show", str(run_dir), "--json"]).stdout)
    assert data["proposal_verdicts_recorded"] is False
