"""Processes for the replica tests: a keyword task app that logs every rollout it serves, and
a job-server replica whose reflection LM is scripted (so a kill lands in seconds).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from policyopt import Program, Score
from tests.integration.remote.support import keyword_dataset, keyword_evaluate

__all__ = ["LoggedKeywordEvaluate", "logged_keyword_app", "serve_replica", "served_rollouts"]


class LoggedKeywordEvaluate:
    """The keyword task with a fixed latency; appends ``[prompt, example id]`` to ``log`` once
    the rollout is done (one ``O_APPEND`` write per line: whole lines across threads)."""

    def __init__(self, log: str, delay: float = 0.05) -> None:
        self.log = log
        self.delay = delay

    def __call__(self, prompt: Any, example: dict[str, Any]) -> Score:
        time.sleep(self.delay)
        score = keyword_evaluate(prompt, example)
        line = json.dumps([prompt, example["id"]]) + "\n"
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
        return score


def logged_keyword_app(api_key: str, log: str) -> Any:
    """A real task app serving the keyword task, logging each rollout to ``log``."""
    from policyopt.remote.taskapp.app import task_app

    program = Program("Solve the task.", LoggedKeywordEvaluate(log))
    return task_app(program, keyword_dataset(50, 50, 50), api_key=api_key, name="keyword")


def served_rollouts(log: Path) -> list[tuple[str, str]]:
    """(prompt, example id) of every rollout the task app finished, in order."""
    if not log.exists():
        return []
    return [tuple(json.loads(line)) for line in log.read_text().splitlines() if line]  # type: ignore[misc]


def serve_replica(
    port: int, db: str, data_dir: str, name: str, lease_s: float, isolation: str
) -> None:
    """A job-server replica process: what ``policyopt serve --db DB --data-dir DIR
    --replica-id NAME --lease-seconds S --max-jobs 2 --isolation I`` builds, with the scripted
    keyword reflection LM in place of a model; run with ``python -c``."""
    from policyopt.remote._serving import serve_forever
    from policyopt.remote.server.app import create_app
    from tests.integration.remote.support import OWNER_KEY, scripted_reflection

    app = create_app(
        db,
        data_dir,
        [OWNER_KEY],
        max_concurrent_jobs=2,
        reflection_lm_factory=scripted_reflection,
        isolation=isolation,
        job_niceness=0,
        replica_id=name,
        lease_s=lease_s,
    )
    serve_forever(app, port=port, log_level="warning")
