"""Schemathesis over the job server's whole OpenAPI schema, each generated request given one
extreme number or odd string in one location (issue 26: no 5xx, no reset, on any input).

For every operation, schemathesis generates a valid request (positive mode); a Hypothesis
strategy then picks a location in it — any node or key of the JSON body at any depth (a body
is added where the operation takes none), the path parameter, a query parameter, or a header
(Authorization, Last-Event-ID, Content-Type, Content-Length, Accept) — and puts there one of
2**63, -2**63-1, huge integers, 1e308, 1e999, -0.0, Infinity, NaN, lone surrogates (as JSON
``\\ud800`` escapes), NUL, RTL and combining marks, very long text, or non-UTF-8 bytes. The
request is sent byte for byte on a raw socket (httpx would refuse or re-encode the bytes);
every request must get an answer (no reset, no close without one) that passes schemathesis'
``not_a_server_error``, and an error from the app must be JSON naming no server path.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi import schemas as _eager  # noqa: F401 (see below)

from policyopt.remote._serving import ServerThread
from policyopt.remote.server import create_app
from tests.integration.remote.support import (
    OWNER_KEY,
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
)
from tests.strategies import examples
from tests.unit.remote.hostile import hostile_request, send_hostile
from tests.unit.remote.test_fuzz import local_only

pytestmark = pytest.mark.timeout(240)
# ``_eager``: schemathesis' OpenAPI modules are imported (and assertion-rewritten by pytest)
# here, not lazily while the server's job threads run: CPython 3.11's AST recursion counter is
# shared between threads, and a concurrent compile failed that import with "AST constructor
# recursion depth mismatch"

#: hostile requests per operation (16 operations)
EXAMPLES = examples(25)
JOBS = "/api/policy-optimization/online/jobs"
AUTH = {"Authorization": f"Bearer {OWNER_KEY}"}
LIMIT = 64 << 10


@pytest.fixture(scope="module")
def extreme_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A job server on SQLite and the id of a job of its key (the paths' real id)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(socket, "getaddrinfo", local_only(socket.getaddrinfo))
    root = tmp_path_factory.mktemp("extreme")
    app = create_app(
        root / "jobs.db",
        root / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        # unhealthy: no job runs a search, whose rollout batches call ast.parse (joblib) in
        # job threads, which CPython 3.11 does not keep apart from the test thread's (see _eager)
        task_app_factory=ScriptedTaskApp(healthy=False).factory,
        reflection_lm_factory=scripted_reflection,
        max_body_bytes=LIMIT,
        max_active_jobs_per_key=100_000,
        secret_file=root / "server.secret",
    )
    server = ServerThread(app).start()
    try:
        config = job_config()["policy_optimization"]
        submitted = httpx.post(f"{server.url}{JOBS}", json=config, headers=AUTH, timeout=30)
        assert submitted.status_code == 201, submitted.text
        yield server.url, submitted.json()["job_id"]
    finally:
        server.stop(timeout=30)
        patch.undo()


@pytest.mark.slow
def test_extreme_values_in_every_location_give_no_5xx_and_no_reset(
    extreme_server: tuple[str, str],
) -> None:
    served, job_id = extreme_server
    raw = httpx.get(f"{served}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16, [op.label for op in operations]
    places: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)

        @given(case=strategy, data=st.data())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any, data: st.DataObject) -> None:
            params = dict(case.path_parameters or {})
            if params and data.draw(st.booleans()):
                params["job_id"] = job_id  # half the paths name a real job
            query = {k: str(v) for k, v in (case.query or {}).items()}
            body_value = None if isinstance(case.body, NotSet) else case.body
            sent = data.draw(
                hostile_request(case.operation.path, params, query, body_value, OWNER_KEY)
            )
            started = time.monotonic()
            answer = send_hostile(served, case.method.upper(), sent)
            places[sent.where.split(" ")[0]] += 1
            statuses[answer.status] += 1
            response = httpx.Response(
                answer.status,
                headers=answer.headers,
                content=answer.body,
                request=httpx.Request(case.method.upper(), served + "/"),
            )
            response.elapsed = dt.timedelta(seconds=time.monotonic() - started)
            case.validate_response(response, checks=[not_a_server_error])

        run()
    total = sum(places.values())
    print(f"\nextreme fuzz: {total} requests; locations {dict(places)}; statuses {dict(statuses)}")
    assert total >= 16 * EXAMPLES // 2 and set(places) == {"body", "path", "query", "header"}
    assert httpx.get(f"{served}/health", timeout=10).json()["status"] == "ok"
    listed = httpx.get(f"{served}{JOBS}", headers=AUTH, timeout=10)
    assert listed.status_code == 200  # the key is not locked out
    again = httpx.post(f"{served}{JOBS}", json=job_config()["policy_optimization"], headers=AUTH)
    assert again.status_code == 201, again.text
