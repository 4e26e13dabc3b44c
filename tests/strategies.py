"""Hypothesis strategies for policyopt's tests, kept in one place."""

from __future__ import annotations

import os

from hypothesis import strategies as st

prompts = st.one_of(
    st.text(max_size=12),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=6), min_size=1),
)

#: a batch: list of (prompt index, example index) into small pools, so repeats are common
batches = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), min_size=0, max_size=25)


def examples(n: int) -> int:
    """``n`` requests a fuzz test sends, ten times as many under ``HYPOTHESIS_PROFILE=deep``
    (the suite keeps the quick count; a deep run searches longer)."""
    return n * 10 if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else n
