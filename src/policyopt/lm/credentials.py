"""Credentials of hosted models: what is missing before a run starts, and which failures are
authentication errors (never retried: a key does not appear by waiting)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["auth_failure", "first_line", "missing_credentials", "unreachable"]

_AUTH_WORDS = re.compile(
    r"missing credentials|(invalid|incorrect|missing|no) (api[_ ]?key|credentials)"
    r"|api[_ ]?key (is )?(required|missing|invalid|not (set|found|provided))|unauthori[sz]ed",
    re.I,
)


def auth_failure(exc: BaseException) -> bool:
    """A missing or rejected credential: retrying cannot help (litellm reports a missing key
    as an InternalServerError)."""
    if type(exc).__name__ in {"AuthenticationError", "PermissionDeniedError"}:
        return True
    if type(exc).__name__ in {"RateLimitError", "Timeout"}:
        return False
    return bool(_AUTH_WORDS.search(str(exc)[:2000]))


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An error's message as one short line (litellm's can run to kilobytes)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def missing_credentials(model: str, kwargs: Mapping[str, Any]) -> list[str]:
    """The environment variables holding keys that a hosted ``model`` needs and that are not
    set (litellm's ``validate_environment``); [] when none are missing, when ``kwargs`` bring
    their own ``api_key`` or ``api_base``, or when litellm cannot tell."""
    if kwargs.get("api_key") or kwargs.get("api_base"):
        return []
    from policyopt.lm._import import _litellm

    try:
        found = _litellm().validate_environment(model)
    except Exception:  # an unknown provider: the first call will say what is wrong
        return []
    missing = found.get("missing_keys") or []
    return [name for name in missing if "KEY" in name or "TOKEN" in name or "SECRET" in name]


def unreachable(api_base: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at ``api_base`` (an OpenAI-compatible server's URL), or None when a
    TCP connection opens: checked once before a run, so a wrong host or a server not started is
    one line instead of a failure, retried, on every rollout. Only connects; sends nothing."""
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(api_base)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"{api_base!r} is not a URL ({exc})"
    if not host or parts.scheme not in {"http", "https"}:
        return f"{api_base!r} is not an http(s) URL"
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"nothing answers at {host}:{port} ({reason})"
