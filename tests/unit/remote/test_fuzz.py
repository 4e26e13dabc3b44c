"""Fuzz the whole job server API from its own OpenAPI schema with schemathesis.

A real server (uvicorn on 127.0.0.1; a scripted task app and reflection LM, so an accepted job
costs little). For every operation, schemathesis generates valid requests (positive mode) and
invalid ones (negative mode: wrong types, missing fields, out-of-range values); each is sent
with the valid key and again with no key. Every answer must be a non-5xx that matches the
schema (status code, content type, body, headers); afterwards the server still answers.

Name resolution is confined to this machine: a task-app URL with a generated host name is
resolved by a stub that knows only ``localhost`` (the server would otherwise ask DNS).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from policyopt.remote._serving import ServerThread
from policyopt.remote.server.app import create_app
from tests.integration.remote.support import OWNER_KEY, ScriptedTaskApp, scripted_reflection
from tests.strategies import examples

pytestmark = pytest.mark.timeout(240)

#: examples per operation and mode; 16 operations x 2 modes, each sent with and without a key
EXAMPLES = examples(10)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
AUTH = {"Authorization": f"Bearer {OWNER_KEY}"}


def local_only(real: Any) -> Any:
    """``socket.getaddrinfo`` that resolves IP literals and localhost, and nothing else."""

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        text = host.decode() if isinstance(host, bytes) else str(host)
        if text != "localhost":
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
            except OSError:
                raise socket.gaierror(socket.EAI_NONAME, "not resolved in tests") from None
        return real(host, port, *args, **kwargs)

    return resolve


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(socket, "getaddrinfo", local_only(socket.getaddrinfo))
    app = create_app(
        tmp_path / "jobs.db",
        tmp_path / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        task_app_factory=ScriptedTaskApp(delay=0.01).factory,
        reflection_lm_factory=scripted_reflection,
        max_body_bytes=64 << 10,
    )
    server = ServerThread(app).start()
    try:
        yield server.url
    finally:
        server.stop(timeout=30)


@pytest.mark.slow
def test_no_request_of_any_shape_gives_a_5xx_or_breaks_the_schema(served: str) -> None:
    raw = httpx.get(f"{served}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16, [op.label for op in operations]
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.path != "/health":  # nothing in it to get wrong
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                for headers in (AUTH, {}):
                    response = case.call(base_url=served, headers=headers, timeout=30)
                    counts[case.operation.label] += 1
                    statuses[response.status_code] += 1
                    if not headers and case.operation.path.startswith("/api/"):
                        assert response.status_code == 401, (case, response.text)
                    case.validate_response(response, checks=CHECKS, headers=headers)

            run()
    total = sum(counts.values())
    print(f"\nschemathesis: {total} requests over {len(counts)} operations; statuses {statuses}")
    assert not [code for code in statuses if code >= 500]
    assert len(counts) == 16 and total >= 16 * 2 * 2
    assert httpx.get(f"{served}/health", timeout=10).json()["status"] == "ok"
    listed = httpx.get(f"{served}/api/policy-optimization/online/jobs", headers=AUTH, timeout=10)
    assert listed.status_code == 200
