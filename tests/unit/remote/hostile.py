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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "EXTREME_NUMBERS",
    "ODD_TEXTS",
    "Answer",
    "leaks",
    "send_raw",
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
class Answer:
    """A raw HTTP answer: status, lower-cased headers and body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send_raw(
    base_url: str,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
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
    lines += [name + b": " + value for name, value in headers]
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
