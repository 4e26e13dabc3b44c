"""Read a run directory back, read only: the result, candidates, curve and proposals.

Works on finished runs (``result.json``) and on runs that were killed or are still going (then
the candidates come from ``state.json`` and the curve from ``events.jsonl``). Nothing here writes
to the directory: a torn last journal record is skipped (as the library does on resume), a
damaged record anywhere else is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policyopt.errors import StateError
from policyopt.events import REASONS
from policyopt.lm.parsing import extract_instruction, proposal_problem
from policyopt.state.journal import read_journal
from policyopt.state.memo import split_choices
from policyopt.types import Candidate, OptimizationResult, prompt_key

__all__ = ["Proposal", "RunView", "load_run"]


@dataclass(frozen=True)
class Proposal:
    """One proposal LM answer and what became of it.

    ``status`` is ``accepted`` (it became candidate ``candidate``), ``rejected`` (scored on a
    training minibatch and not kept), ``unusable`` (refused before any rollout, ``reason``
    says why and ``code`` is its reason code), ``not scored`` (a duplicate, raced out by a
    sibling, or the budget ran out) or, for searches that combine proposals (MIPRO, OPRO),
    ``not kept``.
    """

    key: str
    text: str
    status: str
    reason: str
    candidate: int | None = None
    minibatch_score: float | None = None
    minibatch_size: int = 0
    code: str | None = None


@dataclass(frozen=True)
class RunView:
    """What ``policyopt show`` and ``policyopt plot`` read from one run directory."""

    path: Path
    optimizer: str
    finished: bool
    result: OptimizationResult | None
    candidates: list[Candidate]
    best_candidate: int | None
    stop_reason: str
    n_rollouts: int
    max_rollouts: int | None
    curve: list[tuple[int, float]]
    proposals: list[Proposal]
    failed_rollouts: int
    last_failure: str | None
    torn_tail: bool
    damaged_lines: int = 0  # journal lines in the middle that are not records, skipped
    running_pid: int | None = None  # a live run holds the directory's lock
    config: dict[str, Any] = field(default_factory=dict)
    verdicts_recorded: bool = True  # False: an older run, its proposals' verdicts re-derived

    @property
    def best(self) -> Candidate | None:
        """The best candidate (by the result, else by mean validation score)."""
        if not self.candidates:
            return None
        if self.best_candidate is not None:
            for c in self.candidates:
                if c.index == self.best_candidate:
                    return c
        return max(self.candidates, key=lambda c: c.val_score)

    @property
    def name(self) -> str:
        """A short label for legends: the directory's name."""
        return self.path.name or str(self.path)


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); the file is damaged."
        ) from exc
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}.") from exc


def _events(path: Path) -> list[dict[str, Any]]:
    events_path = path / "events.jsonl"
    if not events_path.exists():
        return []
    events = []
    lines = events_path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a torn last line: the run was killed while logging
            raise StateError(
                f"{events_path} line {number} is not valid JSON; the event log is damaged."
            ) from None
        if isinstance(event, dict):
            events.append(event)
    return events


def _candidates(state: dict[str, Any] | None) -> list[Candidate]:
    out = []
    for raw in (state or {}).get("candidates") or []:
        try:
            out.append(Candidate.model_validate(raw))
        except ValidationError:
            continue  # an optimizer whose state keeps candidates in another shape
    return out


def _seed_from_journal(journal: list[dict[str, Any]], config: dict[str, Any]) -> list[Candidate]:
    """The seed prompt as candidate 0, scored from the journal's rollouts: for a run killed
    before its first snapshot (no state.json yet, but the seed's rollouts are journaled)."""
    seed = (config.get("identity") or {}).get("seed_prompt")
    if seed is None:
        return []
    try:
        key = prompt_key(seed)
    except (TypeError, ValueError):
        return []
    mine = [r for r in journal if r.get("type") == "rollout" and r.get("prompt") == key]
    split = "val" if any(r.get("split") == "val" for r in mine) else "train"
    scores = {str(r["example"]): float(r["score"]) for r in mine if r.get("split") == split}
    if not scores:
        return []
    return [Candidate(index=0, prompt=seed, val_scores=scores)]


def running_pid(root: Path) -> int | None:
    """The pid of the live process holding the run dir's lock, None when no run holds it."""
    path = root / ".lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        return None
    try:
        with path.open("r", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # a run holds it: its pid is the file's text ("pid N")
                digits = "".join(ch for ch in handle.read() if ch.isdigit())
                return int(digits) if digits else 0
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def _curve(
    events: list[dict[str, Any]], candidates: list[Candidate], n_rollouts: int
) -> list[tuple[int, float]]:
    """Best validation score known against rollouts spent, as steps."""
    points = [
        (int(e["rollouts_used"]), float(e["score"]))
        for e in events
        if e.get("kind") == "new_best" and "rollouts_used" in e and "score" in e
    ]
    if not points:  # no event log: the candidates' own record
        best = float("-inf")
        for c in sorted(candidates, key=lambda c: c.found_at_rollout):
            if c.val_scores and c.val_score > best:
                best = c.val_score
                points.append((c.found_at_rollout, best))
    if points and n_rollouts > points[-1][0]:
        points.append((n_rollouts, points[-1][1]))
    return points


def _key_order(key: str) -> tuple[int, ...]:
    """``iteration/slot/component[/sN]/attempt`` keys sort numerically, samples and attempts
    too (parallel samples are journaled in the order they finished); others keep their place."""
    parts = key.split("/")
    numbers = [int(p) for p in parts if p.isdigit()]
    if len(numbers) < 2:
        return (1 << 30,)
    sample = next((int(p[1:]) for p in parts if p[:1] == "s" and p[1:].isdigit()), 0)
    return (numbers[0], numbers[1], sample, *numbers[2:])


#: a proposal answer as judged: (journal key, proposed text, why it was refused, reason code)
Draft = tuple[str, str, "str | None", "str | None"]

#: the code of an answer the run journaled but never judged (killed in between)
_UNJUDGED = "not_judged"


def _answers(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The proposal LM answers (GEPA: "proposal", MIPRO: "proposer", OPRO: "meta"), in the
    order of their keys; a dataset summary is context, not a proposal."""
    records = [
        dict(r)
        for r in split_choices(journal)  # a call of several samples: one record per sample
        if r.get("type") not in {"start", "rollout", "verdict"}
        and isinstance(r.get("text"), str)
        and not str(r.get("key", "")).startswith("summary")
    ]
    return sorted(records, key=lambda r: _key_order(str(r.get("key", ""))))  # stable


def _judged(answers: list[dict[str, Any]], journal: list[dict[str, Any]]) -> list[Draft] | None:
    """Each answer with the last verdict the proposal loop journaled on it (an accepted answer
    may be rejected after as a duplicate); None for a run that journaled no verdicts (an older
    version)."""
    last: dict[str, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    for r in journal:
        if r.get("type") == "verdict":
            last[str(r.get("key"))] = r
            if isinstance(r.get("text"), str):
                texts[str(r.get("key"))] = r["text"]
    if not last:
        return None
    drafts: list[Draft] = []
    for r in answers:
        key = str(r.get("key", ""))
        verdict = last.get(key)
        text = texts.get(key)
        if text is None:
            text = extract_instruction(str(r.get("text") or ""))[0]
        if verdict is None:
            why = "not judged: the run stopped between this answer and its verdict"
            drafts.append((key, text, why, _UNJUDGED))
        elif verdict.get("verdict") == "accepted":
            drafts.append((key, text, None, None))
        else:
            code = str(verdict.get("reason") or "")
            detail = verdict.get("detail") or REASONS.get(code, code)
            drafts.append((key, text, f"{code}: {detail}", code))
    return drafts


def _rederived(answers: list[dict[str, Any]], max_chars: int) -> list[Draft]:
    """Each answer judged again by the basic checks, for a run that journaled no verdicts (the
    optimizer's own reading and guards are not known here)."""
    drafts: list[Draft] = []
    for r in answers:
        text, balanced = extract_instruction(str(r.get("text") or ""))
        problem = (
            ("too_long", "the answer was too long and was cut")
            if r.get("capped")
            else proposal_problem(
                text,
                "",
                balanced=balanced,
                truncated=r.get("finish_reason") == "length",
                max_chars=max_chars,
            )
        )
        code, why = problem if problem is not None else (None, None)
        drafts.append((str(r.get("key", "")), text, why, code))
    return drafts


def _proposals(
    journal: list[dict[str, Any]],
    candidates: list[Candidate],
    events: list[dict[str, Any]],
    max_chars: int,
) -> tuple[list[Proposal], bool]:
    """Each proposal answer, matched to the candidate or the minibatch verdict it led to, and
    whether the run journaled the proposal loop's verdicts (else they are re-derived).

    A usable proposal that is not already a candidate is scored on a training minibatch; the
    optimizer logs those verdicts (``candidate_evaluated``, split ``minibatch``) in the order
    of the proposals' iteration and slot, which is how they are paired here. When the counts
    disagree (a step cut by the budget), the verdict falls back to the proposal's own rollouts.
    """
    by_key = {prompt_key(c.prompt): c for c in candidates}
    train: dict[str, list[float]] = {}
    for r in journal:
        if r.get("type") == "rollout" and r.get("split") != "val":
            score = r.get("score")
            if isinstance(score, (int, float)):
                train.setdefault(str(r.get("prompt")), []).append(float(score))
    answers = _answers(journal)
    reflective = all(r.get("type") == "proposal" for r in answers)
    judged = _judged(answers, journal)
    drafts = judged if judged is not None else _rederived(answers, max_chars)
    verdicts = [
        e
        for e in events
        if e.get("kind") == "candidate_evaluated" and e.get("split") == "minibatch"
    ]
    scored: list[int] = []  # positions in drafts of the proposals that reached a minibatch
    first_seen: set[str] = set()
    for n, (_, text, reason, _code) in enumerate(drafts):
        if reason is not None:
            continue
        hashed = prompt_key(text)
        cand = by_key.get(hashed)
        if cand is None or (cand.origin != "seed" and hashed not in first_seen):
            scored.append(n)  # a new text (or the proposal that made this candidate)
        first_seen.add(hashed)
    # one verdict per reflective child (GEPA logs them as candidate -1)
    gepa_style = reflective and all(e.get("candidate") == -1 for e in verdicts)
    paired = (
        dict(zip(scored, verdicts, strict=True))
        if gepa_style and len(scored) == len(verdicts)
        else {}
    )
    out, claimed = [], set()
    for n, (key, text, reason, code) in enumerate(drafts):
        if code == _UNJUDGED:
            out.append(Proposal(key, text, "not scored", str(reason)))
            continue
        if reason is not None:
            out.append(Proposal(key, text, "unusable", reason, code=code))
            continue
        hashed = prompt_key(text)
        cand = by_key.get(hashed)
        verdict = paired.get(n)
        mean: float | None
        if verdict is not None:
            mean, size = float(verdict.get("score", 0.0)), int(verdict.get("n_examples", 0))
        else:
            scores = train.get(hashed, [])
            mean, size = (sum(scores) / len(scores) if scores else None), len(scores)
        if cand is not None and cand.origin != "seed" and hashed not in claimed:
            claimed.add(hashed)
            why = f"became candidate {cand.index} (val {cand.val_score:.3f})"
            out.append(Proposal(key, text, "accepted", why, cand.index, mean, size))
        elif cand is not None:
            why = f"the same text as candidate {cand.index}: nothing to score"
            out.append(Proposal(key, text, "not scored", why, cand.index))
        elif verdict is not None and verdict.get("accepted"):
            why = (
                f"passed its minibatch ({mean:.3f} on {size} examples) but a sibling gained "
                "more, or the budget ran out before its validation"
            )
            out.append(Proposal(key, text, "not scored", why, None, mean, size))
        elif not reflective:
            why = "not among the candidates scored on the whole valset"
            out.append(Proposal(key, text, "not kept", why, None, mean, size))
        elif mean is not None:
            why = (
                f"minibatch score {mean:.3f} on {size} examples was not better than its "
                "parent's on the same examples"
            )
            out.append(Proposal(key, text, "rejected", why, None, mean, size))
        else:
            why = "not scored: the step was cut short (budget, time or stop)"
            out.append(Proposal(key, text, "not scored", why))
    return out, judged is not None


def load_run(path: str | Path) -> RunView:
    """Read the run in ``path``; :class:`StateError` says what is wrong when it is not one."""
    root = Path(path)
    if not root.exists():
        raise StateError(f"{root} does not exist. Give the run_dir= of a policyopt run.")
    if not root.is_dir():
        raise StateError(f"{root} is a file, not a run directory. Give the run's directory.")
    config_path = root / "config.json"
    if not config_path.exists():
        raise StateError(
            f"{root} is not a policyopt run directory (it has no config.json). Give the "
            "run_dir= an optimizer wrote to."
        )
    config = _json_file(config_path)
    if not isinstance(config, dict) or "optimizer" not in config:
        raise StateError(f"{config_path} has no 'optimizer': not a policyopt run directory.")
    result: OptimizationResult | None = None
    result_path = root / "result.json"
    if result_path.exists():
        try:
            result = OptimizationResult.from_json(result_path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            what = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
            raise StateError(
                f"{result_path} is not a valid result ({what}); the file is damaged or from "
                "another program."
            ) from None
    state_path = root / "state.json"
    state = _json_file(state_path) if state_path.exists() else None
    read = read_journal(root)  # result.json, when there is one, is read apart
    journal = read.records
    events = _events(root)
    started = [e for e in events if e.get("kind") == "run_started"]
    settings = dict(config.get("settings") or {})
    best: Any
    budget: Any
    if result is not None:
        candidates = list(result.candidates)
        best, stop = result.best_candidate, result.stop_reason
        n_rollouts, budget = result.n_rollouts, result.max_rollouts
    else:
        candidates = _candidates(state) or _seed_from_journal(journal, config)
        best = (state or {}).get("best")
        stop = "(unfinished: no result.json)"
        n_rollouts = sum(1 for r in journal if r.get("type") == "start")
        budget = settings.get("max_rollouts") or (
            started[-1].get("max_rollouts") if started else None
        )
    failures = [r for r in journal if r.get("type") == "rollout" and r.get("error")]
    max_chars = int(settings.get("max_prompt_chars") or 20000)
    proposals, verdicts_recorded = _proposals(journal, candidates, events, max_chars)
    return RunView(
        path=root,
        optimizer=str(config["optimizer"]),
        finished=result is not None,
        result=result,
        candidates=candidates,
        best_candidate=best if isinstance(best, int) else None,
        stop_reason=stop,
        n_rollouts=n_rollouts,
        max_rollouts=budget if isinstance(budget, int) else None,
        curve=_curve(events, candidates, n_rollouts),
        proposals=proposals,
        failed_rollouts=len(failures),
        last_failure=str(failures[-1]["error"]) if failures else None,
        torn_tail=read.torn_tail,
        damaged_lines=read.damaged_lines,
        running_pid=None if result is not None else running_pid(root),
        config=config,
        verdicts_recorded=verdicts_recorded,
    )
