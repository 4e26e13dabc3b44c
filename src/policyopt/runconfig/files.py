"""Reading a user's text files (configs, data) with one clear line for what goes wrong: a
directory, a missing file, a binary file (NUL bytes), text that is not UTF-8 (with where)."""

from __future__ import annotations

from pathlib import Path

from policyopt.errors import ConfigError

__all__ = ["read_text"]


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def read_text(path: Path, what: str) -> str:
    """The text of ``path`` (UTF-8; a UTF-8 byte-order mark is dropped). ``what`` names the
    file in errors, e.g. "config file" or "data.train: data file"."""
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give a file.")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}.") from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(
            f"{what} {str(path)!r} holds a NUL byte ({_where(data, nul)}): it is "
            "a binary file, or UTF-16 text; save it as UTF-8 text."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        raise ConfigError(
            f"{what} {str(path)!r} is not UTF-8 text (byte 0x{data[exc.start + bom]:02x} at "
            f"{_where(data, exc.start + bom)}; Latin-1 or Windows-1252?); save it as UTF-8."
        ) from None
