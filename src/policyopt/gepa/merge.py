"""Merge (crossover): combine two lineages that improved different components.

Pick two front candidates neither of which descends from the other, find a common ancestor, and
build a child that takes, for each component, the text that changed from the ancestor (the
better parent's where both changed). The child is accepted when it does at least as well as both
parents on a small stratified subsample of the valset.

Unlike the reference implementation this never divides by an ancestor's score (a zero-scoring
ancestor is fine), works with any valset size (the subsample shrinks to the valset), and is
scheduled independently of whether the previous iteration accepted a child.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from policyopt.book import NewCandidate
from policyopt.events import CandidateEvaluated

if TYPE_CHECKING:
    from policyopt.gepa.optimizer import _Run

__all__ = ["MergePlan", "ancestors", "find_merge", "merge_step", "merge_subsample"]


@dataclass(frozen=True)
class MergePlan:
    """Parents ``first``/``second``, their ``ancestor``, and the merged prompt components."""

    first: int
    second: int
    ancestor: int
    prompt: dict[str, str]
    sources: tuple[int, ...]


def ancestors(candidate: int, parents: Sequence[Sequence[int]]) -> set[int]:
    """Every transitive parent of ``candidate``."""
    seen: set[int] = set()
    stack = list(parents[candidate])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(parents[node])
    return seen


def _combine(
    a: int, b: int, anc: int, prompts: Sequence[Mapping[str, str]], aggregate: Mapping[int, float]
) -> tuple[dict[str, str], tuple[int, ...]] | None:
    """The merged prompt and, per component, which candidate it came from; None if pointless."""
    merged: dict[str, str] = {}
    sources: list[int] = []
    took_a = took_b = False
    for name in prompts[anc]:
        base, text_a, text_b = prompts[anc][name], prompts[a][name], prompts[b][name]
        if text_a == text_b:
            merged[name], source = text_a, a
        elif text_a == base:
            merged[name], source, took_b = text_b, b, True
        elif text_b == base:
            merged[name], source, took_a = text_a, a, True
        else:  # both changed: the better parent's text (ties: the first)
            source = a if aggregate[a] >= aggregate[b] else b
            merged[name] = prompts[source][name]
            took_a, took_b = took_a or source == a, took_b or source == b
        sources.append(source)
    if not (took_a and took_b):
        return None  # the child would equal one parent: nothing to combine
    return merged, tuple(sources)


def find_merge(
    pool: Sequence[int],
    prompts: Sequence[Mapping[str, str]],
    parents: Sequence[Sequence[int]],
    aggregate: Mapping[int, float],
    rng: random.Random,
    tried: set[tuple[int, int, int]],
    existing: set[str],
    key: object,
) -> MergePlan | None:
    """A merge of two ``pool`` candidates not tried before, or None when there is none.

    ``existing`` holds the keys (``key(prompt)``) of prompts already in the population, so a
    merge never re-creates a known candidate. Pairs are visited in a seeded random order.
    """
    pairs = [(a, b) for i, a in enumerate(sorted(pool)) for b in sorted(pool)[i + 1 :]]
    rng.shuffle(pairs)
    for a, b in pairs:
        anc_a, anc_b = ancestors(a, parents), ancestors(b, parents)
        if a in anc_b or b in anc_a:
            continue
        common = sorted(anc_a & anc_b)
        # the ancestor should not beat its descendants; weights never all zero
        common = [c for c in common if aggregate[c] <= min(aggregate[a], aggregate[b])]
        rng.shuffle(common)
        common.sort(key=lambda c: -aggregate[c])  # the strongest shared ancestor first
        for anc in common:
            if (a, b, anc) in tried:
                continue
            combined = _combine(a, b, anc, prompts, aggregate)
            if combined is None:
                tried.add((a, b, anc))
                continue
            merged, sources = combined
            if key(merged) in existing:  # type: ignore[operator]
                tried.add((a, b, anc))
                continue
            return MergePlan(a, b, anc, merged, sources)
    return None


def merge_subsample(
    ids: Sequence[str],
    scores_a: Mapping[str, float],
    scores_b: Mapping[str, float],
    size: int,
    rng: random.Random,
) -> list[str]:
    """Up to ``size`` validation ids, stratified: where a beat b, where b beat a, and ties."""
    size = min(size, len(ids))
    a_wins = [i for i in ids if scores_a[i] > scores_b[i]]
    b_wins = [i for i in ids if scores_b[i] > scores_a[i]]
    ties = [i for i in ids if scores_a[i] == scores_b[i]]
    for group in (a_wins, b_wins, ties):
        rng.shuffle(group)
    third = -(-size // 3)
    chosen = a_wins[:third] + b_wins[:third]
    rest = [i for i in ties + a_wins[third:] + b_wins[third:] if i not in chosen]
    chosen += rest[: size - len(chosen)]
    return chosen[:size]


def merge_step(run: _Run) -> str | None:
    """One merge attempt of a GEPA run: a stop reason or None (moved out of the run loop)."""
    pop, s, engine = run.pop, run.s, run.engine
    agg = pop.aggregate()
    if run.counts["merges_accepted"] >= s.max_merges or run.counts["merges_tried"] >= max(
        10, 3 * s.max_merges
    ):
        run.merges_due = 0
        return None
    plan = run.pairing.find(
        pop.front.non_dominated(agg),
        pop.prompts,
        pop.parents,
        agg,
        run.rng_merge,
        run.tried_merges,
        set(pop.keys),
        pop.key,
    )
    if plan is None:
        run.merge_blocked_at = len(pop.prompts)  # try again when the population grows
        return None
    run.tried_merges.add((plan.first, plan.second, plan.ancestor))
    ids = merge_subsample(
        run.val_ids,
        pop.val_scores[plan.first],
        pop.val_scores[plan.second],
        s.merge_subsample_size,
        run.rng_merge,
    )
    requests = [(pop.shaped(plan.prompt), i) for i in ids]
    if not run.ctx.affordable(requests, run.val_split):
        return "budget"
    run.counts["merges_tried"] += 1
    run.merges_due -= 1
    scores = engine.run(requests, split=run.val_split, label="merge").scores()
    child = math.fsum(scores)
    parent_best = max(
        math.fsum(pop.val_scores[p][i] for i in ids) for p in (plan.first, plan.second)
    )
    ok = child >= parent_best - s.tie_tolerance
    run.events.emit(
        CandidateEvaluated(
            candidate=-1,
            split="merge_subsample",
            score=child / len(ids),
            n_examples=len(ids),
            accepted=ok,
        )
    )
    if not ok:
        return None
    run.counts["merges_accepted"] += 1
    return run._admit([NewCandidate(plan.prompt, [plan.first, plan.second], "merge")])
