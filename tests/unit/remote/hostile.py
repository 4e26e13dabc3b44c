"""Hostile inputs for the job server's fuzz tests, and a raw HTTP/1.1 sender that puts any
bytes on the wire (non-UTF-8 paths and headers that httpx would refuse or re-encode).

``send_raw`` fails the test when the server resets or closes the connection without an answer:
"no connection reset" is checked on every request, not only "no 5xx".
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from hypothesis import strategies as st

__all__ = [
    "EXTREME_NUMBERS",
    "JSON_VALUES",
    "ODD_TEXTS",
    "Answer",
    "Hostile",
    "check_answer",
    "hostile_request",
    "leaks",
    "nodes",
    "send_hostile",
    "send_raw",
    "spliced",
]

#: numbers past every integer column and every float, as JSON number text
EXTREME_NUMBERS = [
    str(2**63),
    str(-(2**63) - 1),
    str(2**64),
    "1" + "0" * 400,
    "-" + "9" * 400,
    "1e308",
    "-1e308",
    "1e999",
    "-0.0",
    "5e-324",
    "Infinity",
    "-Infinity",
    "NaN",
]
#: odd strings as JSON string literals (escapes kept: lone surrogates, NUL, controls, bidi,
#: combining marks, huge ints as text, very long)
ODD_TEXTS = [
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"a\\u0000b"',
    '"\\u0000"',
    '"\\u202e\\u200f\\u0301\\u0301e"',
    '"\\ufeff\\uffff\\ufffe"',
    '"\\u001b[31m\\r\\n"',
    f'"{2**63}"',
    '"Infinity"',
    '"NaN"',
    '"-0.0"',
    '"' + "x" * 70_000 + '"',
    '"' + "\\u0301" * 5_000 + '"',
]


@dataclass
class Hostile:
    """A request with one hostile value: where it is, and the bytes to send."""

    where: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    content_length: bytes | None


@dataclass
class Answer:
    """A raw HTTP answer: status, lower-cased headers and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


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
def hostile_request(
    draw: st.DrawFn,
    template: str,
    params: dict[str, str],
    query: dict[str, str],
    body_value: Any,
    api_key: str,
) -> Hostile:
    """A valid request (path ``template`` filled from ``params``, ``query``, JSON
    ``body_value`` or None, the key's Authorization) with one hostile value in one location."""
    params = {k: quote(str(v), safe="") for k, v in params.items()}
    path = template.encode()
    headers = {b"Authorization": f"Bearer {api_key}".encode()}
    body = b"" if body_value is None else json.dumps(body_value).encode()
    if body_value is not None:
        headers[b"Content-Type"] = b"application/json"
    length = None
    where = draw(st.sampled_from(["body", "query", "header", *(["path"] if params else [])]))
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
    return Hostile(where, target, list(headers.items()), body, length)


def send_raw(
    base_url: str,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    *,
    content_length: bytes | None = None,
    timeout: float = 30.0,
    read_body: bool = True,
) -> Answer:
    """Send one request with exactly these bytes; its answer (AssertionError on a reset, a
    close without an answer, or a malformed status line)."""
    parts = urlsplit(base_url)
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {parts.netloc}".encode()]
    lines += [name + b": " + value for name, value in headers or []]
    if not any(name.lower() == b"transfer-encoding" for name, _ in headers or []):
        lines.append(b"Content-Length: " + (content_length or str(len(body)).encode()))
    lines.append(b"Connection: close")
    wire = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        # the server may answer early (413) and close: read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(wire)
        chunks: list[bytes] = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                head = b"".join(chunks).partition(b"\r\n\r\n")[0]
                if len(head) < len(b"".join(chunks)) and (
                    not read_body or b"text/event-stream" in head.lower()
                ):
                    break  # an event stream runs until its job ends: its head is the answer
        except ConnectionResetError:
            if not chunks:
                raise AssertionError(
                    f"connection reset without an answer: {method} {target[:200]!r}"
                ) from None
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", status_line + b" ")
    assert match, f"no answer to {method} {target[:200]!r}: {raw[:200]!r}"
    found = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        found[name.decode("latin-1").lower()] = value.decode("latin-1").strip()
    if found.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return Answer(int(match.group(1)), found, rest)


def send_hostile(base_url: str, method: str, request: Hostile) -> Answer:
    """Send a :class:`Hostile` request; its answer, checked by :func:`check_answer`."""
    answer = send_raw(
        base_url,
        method,
        request.target,
        request.headers,
        request.body,
        content_length=request.content_length,
    )
    check_answer(answer, f"{method} {request.target[:200]!r} ({request.where})")
    return answer


def check_answer(answer: Answer, shown: str) -> None:
    """What every answer to any input must be: not a 5xx; an error is JSON whose ``detail``
    is a non-empty sentence; nothing in it names a server path, the home directory or Python."""
    shown = f"{shown}: {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500, shown
    text = answer.body.decode("utf-8", "replace")
    assert not leaks(text), (leaks(text), shown)
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("application/json"), shown
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and detail.strip(), shown


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def leaks(text: str, *extra: str) -> list[str]:
    """What of the server's own facts ``text`` shows: a filesystem path of this machine (home,
    temp, site-packages, the source tree), the Python version, a traceback."""
    import sys

    import policyopt

    places = [
        str(Path.home()),
        str(Path(policyopt.__file__).resolve().parents[1]),
        sys.prefix,
        "site-packages",
        "/tmp/",
        "Traceback (most recent call last)",
        f"Python {sys.version.split()[0]}",
        f"python{sys.version_info.major}.{sys.version_info.minor}",
        *extra,
    ]
    return [place for place in places if place and place in text]
