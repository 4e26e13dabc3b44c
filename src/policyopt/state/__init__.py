"""Durable run state: the append-only JSONL journal that makes runs resumable."""

from policyopt.state.journal import Journal

__all__ = ["Journal"]
