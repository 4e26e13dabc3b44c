"""The job server's secret: API-key owner ids (HMAC) and task-app keys sealed at rest (Fernet).

One random 32-byte secret lives in a file only the server's user can read (created 0600,
next to the database unless told otherwise). Two keys are derived from it with HKDF:

- an HMAC-SHA256 key: an API key's owner id is ``HMAC(secret, key)``, so the database alone
  neither holds the keys nor lets anyone test guesses against them offline;
- a Fernet key (AES-128-CBC + HMAC-SHA256, from ``cryptography``): the task-app key a job
  config carries (needed to resume the job after a restart) is stored encrypted.

Losing the secret file makes stored task-app keys unreadable (those jobs fail with the reason
on resume) and changes every owner id (old jobs are no longer listed); keep it with the
database in backups.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from policyopt.errors import ConfigError, StateError

__all__ = ["SEALED_KEY", "ServerSecret", "legacy_owner_id", "private_dir"]

#: where a sealed task-app key lives in a stored job config (instead of ``api_key``)
SEALED_KEY = "api_key_sealed"
_SECRET_BYTES = 32


def legacy_owner_id(key: str) -> str:
    """The owner id servers before the HMAC used: the key's plain SHA-256 (for migration)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def private_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) so that only this user can enter it (0700)."""
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


class ServerSecret:
    """The derived keys of one server secret; see the module docstring."""

    def __init__(self, secret: bytes) -> None:
        from cryptography.fernet import Fernet

        if len(secret) < _SECRET_BYTES:
            raise ConfigError(f"The server secret must be at least {_SECRET_BYTES} bytes.")
        self._secret = secret
        self._mac_key = _derive(secret, b"policyopt api-key owner id")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"policyopt sealed")))

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (a job's child process gets the server's secret this way, over a pipe)."""
        return (ServerSecret, (self._secret,))

    @classmethod
    def load_or_create(cls, path: str | Path) -> ServerSecret:
        """The secret in ``path``, created (0600, random) when missing. A secret file that
        others can read is refused: its keys would no longer be secret."""
        file = Path(path)
        if not file.parent.exists():
            private_dir(file.parent)
        if not file.exists():
            # written aside, then linked in place: replicas starting together on a fresh
            # directory never read a half-written secret, and all end up with the same one
            tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, file)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            raise StateError(
                f"The server secret {file} can be read by other users (mode {mode:o}); "
                f"run 'chmod 600 {file}'."
            )
        try:
            secret = base64.urlsafe_b64decode(file.read_bytes().strip())
        except ValueError as exc:
            raise StateError(f"The server secret {file} is not valid base64: {exc}") from None
        return cls(secret)

    def owner_id(self, api_key: str) -> str:
        """The stored id of an API key: HMAC-SHA256 with the server secret, in hex."""
        if not isinstance(api_key, str) or not api_key:
            raise ConfigError("An API key must be a non-empty string.")
        return hmac.new(self._mac_key, api_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, text: str) -> str:
        """``text`` encrypted and authenticated (a Fernet token)."""
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def unseal(self, token: str) -> str:
        """The text of a :meth:`seal` token; :class:`StateError` when it is not one of ours."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise StateError(
                "a stored task-app key cannot be decrypted with this server's secret (was the "
                "secret file replaced?)"
            ) from None

    def seal_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A job config to store: ``task_app.api_key`` replaced by its sealed form."""
        out = copy.deepcopy(dict(config))
        task_app = dict(out.get("task_app") or {})
        key = task_app.pop("api_key", None)
        if key is not None:
            task_app[SEALED_KEY] = self.seal(str(key))
        out["task_app"] = task_app
        return out

    def unseal_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A stored job config with its task-app key readable again (plain ones pass)."""
        out = copy.deepcopy(dict(config))
        task_app = out.get("task_app")
        if isinstance(task_app, dict) and SEALED_KEY in task_app:
            task_app = dict(task_app)
            task_app["api_key"] = self.unseal(str(task_app.pop(SEALED_KEY)))
            out["task_app"] = task_app
        return out


def _derive(secret: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
