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
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet

from policyopt.remote._serving import ServerThread
from policyopt.remote.server import create_app
from tests.integration.remote.support import (
    OWNER_KEY,
    ScriptedTaskApp,
    job_config,
    scripted_reflection,
)
from tests.unit.remote.hostile import EXTREME_NUMBERS, ODD_TEXTS, leaks, send_raw
from tests.unit.remote.test_fuzz import local_only

pytestmark = pytest.mark.timeout(240)

#: hostile requests per operation (16 operations)
EXAMPLES = 40
JOBS = "/api/policy-optimization/online/jobs"
AUTH = {"Authorization": f"Bearer {OWNER_KEY}"}
LIMIT = 64 << 10
MARKER = "__hostile_value__"
#: extreme values as JSON text: numbers, odd strings, huge ints either side of 64 bits
JSON_VALUES = st.one_of(
    st.sampled_from(EXTREME_NUMBERS + ODD_TEXTS),
    st.integers(min_value=2**63).map(str),
    st.integers(max_value=-(2**63) - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
#: raw bytes for a path segment or a query value: percent-escaped NUL and surrogates, bytes
#: that are not UTF-8, traversal, RTL, and numbers past every column
RAW_TEXTS = [
    b"%00",
    b"a%00b",
    b"%ED%A0%80",
    b"%FF%FE",
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"%2E%2E%2F%2E%2E",
    quote("\u202e\u200f\u0301e").encode(),
    b"x" * 5000,
    *(n.encode() for n in EXTREME_NUMBERS),
]
#: raw header values: not UTF-8, NUL, RTL in UTF-8, very long, and the extreme numbers
HEADER_VALUES = [
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"a\x00b",
    "\u202e\u0301".encode(),
    b"x" * 8000,
    b"",
    *(n.encode() for n in EXTREME_NUMBERS),
]
#: Content-Length values that are malformed or past the limit (a well-formed length between
#: the body's and the limit is a request still arriving, not a hostile one), and short ones
CONTENT_LENGTHS = [
    b"0",
    b"-1",
    b"+5",
    b"1_0",
    b"0x10",
    b" ",
    *(n.encode() for n in EXTREME_NUMBERS),
]
HEADERS = ["Authorization", "Bearer", "Last-Event-ID", "Content-Type", "Content-Length", "Accept"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A job server on SQLite and the id of a job of its key (the paths' real id)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(socket, "getaddrinfo", local_only(socket.getaddrinfo))
    root = tmp_path_factory.mktemp("extreme")
    app = create_app(
        root / "jobs.db",
        root / "runs",
        [OWNER_KEY],
        max_concurrent_jobs=1,
        task_app_factory=ScriptedTaskApp(delay=0.01).factory,
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


def nodes(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every node's path in a JSON value (the root included)."""
    yield at
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from nodes(sub, (*at, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from nodes(sub, (*at, index))


def spliced(body: Any, at: tuple[Any, ...], as_key: bool, odd: str) -> bytes:
    """``body`` as JSON text with ``odd`` (JSON text) at ``at``: as its value, or as a key."""
    body = json.loads(json.dumps(body))
    if not at:
        body = {MARKER: 1} if as_key else MARKER
    else:
        parent = body
        for step in at[:-1]:
            parent = parent[step]
        if as_key and isinstance(parent, dict):
            parent[MARKER] = parent.pop(at[-1])
        else:
            parent[at[-1]] = MARKER
    text = json.dumps(body)
    key_odd = odd if odd.startswith('"') else json.dumps(odd)  # a key is a string
    return text.replace(f'"{MARKER}":', f"{key_odd}:").replace(f'"{MARKER}"', odd).encode()


@st.composite
def hostile(
    draw: st.DrawFn, case: Any, job_id: str
) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes, Any]:
    """One request from ``case`` with a hostile value in one location; (location, target,
    headers, body, Content-Length or None). Half the path ids are a real job's."""
    params = {k: quote(str(v), safe="") for k, v in (case.path_parameters or {}).items()}
    if params and draw(st.booleans()):
        params["job_id"] = job_id
    path = case.operation.path.encode()
    query = {k: str(v) for k, v in (case.query or {}).items()}
    headers = {b"Authorization": f"Bearer {OWNER_KEY}".encode()}
    body_value = None if isinstance(case.body, NotSet) else case.body
    body = b"" if body_value is None else json.dumps(body_value).encode()
    if body_value is not None:
        headers[b"Content-Type"] = b"application/json"
    length = None
    where = draw(st.sampled_from(["body", "path", "query", "header"]))
    if where == "path" and not params:
        where = "query"
    if where == "body":
        at = draw(st.sampled_from(list(nodes(body_value))))
        body = spliced(body_value, at, draw(st.booleans()), draw(JSON_VALUES))
        headers[b"Content-Type"] = b"application/json"
        where = f"body {'.'.join(map(str, at)) or '(root)'}"
    raw_params = {k: v.encode() for k, v in params.items()}
    if where == "path":
        name = draw(st.sampled_from(sorted(params)))
        raw_params[name] = draw(st.sampled_from(RAW_TEXTS))
        where = f"path {name}"
    for name, value in raw_params.items():
        path = path.replace(b"{" + name.encode() + b"}", value)
    target = path + (b"?" + urlencode(query).encode() if query else b"")
    if where == "query":
        name = draw(st.sampled_from(sorted({*query, "since_seq", "limit"})))
        rest = urlencode({k: v for k, v in query.items() if k != name}).encode()
        value = draw(st.sampled_from(RAW_TEXTS))
        target = path + b"?" + (rest + b"&" if rest else b"") + name.encode() + b"=" + value
        where = f"query {name}"
    if where == "header":
        name = draw(st.sampled_from(HEADERS))
        if name == "Content-Length":
            length = draw(st.sampled_from(CONTENT_LENGTHS))
        elif name == "Bearer":
            headers[b"Authorization"] = b"Bearer " + draw(st.sampled_from(HEADER_VALUES))
        else:
            headers[name.encode()] = draw(st.sampled_from(HEADER_VALUES))
        where = f"header {name}"
    return where, target, list(headers.items()), body, length


@pytest.mark.slow
def test_extreme_values_in_every_location_give_no_5xx_and_no_reset(
    served: tuple[str, str],
) -> None:
    served, job_id = served
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
            where, target, headers, body, length = data.draw(hostile(case, job_id))
            started = time.monotonic()
            answer = send_raw(
                served, case.method.upper(), target, headers, body, content_length=length
            )
            places[where.split(" ")[0]] += 1
            statuses[answer.status] += 1
            shown = f"{case.method.upper()} {target[:300]!r} {where}: {answer.status} "
            shown += repr(answer.body[:300])
            assert answer.status < 500, shown
            response = httpx.Response(
                answer.status,
                headers=answer.headers,
                content=answer.body,
                request=httpx.Request(case.method.upper(), served + "/"),
            )
            response.elapsed = dt.timedelta(seconds=time.monotonic() - started)
            case.validate_response(response, checks=[not_a_server_error])
            if answer.status >= 400:
                assert answer.headers.get("content-type", "").startswith("application/json"), shown
                detail = answer.json()["detail"]
                assert isinstance(detail, str) and detail, shown
                assert not leaks(detail), shown

        run()
    total = sum(places.values())
    print(f"\nextreme fuzz: {total} requests; locations {dict(places)}; statuses {dict(statuses)}")
    assert total >= 16 * EXAMPLES // 2 and set(places) == {"body", "path", "query", "header"}
    assert httpx.get(f"{served}/health", timeout=10).json()["status"] == "ok"
    listed = httpx.get(f"{served}{JOBS}", headers=AUTH, timeout=10)
    assert listed.status_code == 200  # the key is not locked out
    again = httpx.post(f"{served}{JOBS}", json=job_config()["policy_optimization"], headers=AUTH)
    assert again.status_code == 201, again.text
