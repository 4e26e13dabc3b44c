"""A real PostgreSQL server for the job-store tests: ``initdb`` + ``postgres`` in a temp dir on
a free loopback port, stopped by PID. Skips (with the reason) only when the binaries are absent.

As root (CI containers), the server runs as the ``postgres`` system user (``initdb`` refuses
root); its directory is then made for that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.remote.support import free_port

__all__ = ["PostgresServer", "find_bin_dir", "postgres_server"]


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: $POLICYOPT_PG_BIN, the newest
    /usr/lib/postgresql/*/bin, or the PATH."""
    candidates = [os.environ.get("POLICYOPT_PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    for place in candidates:
        if place and (Path(place) / "initdb").is_file() and (Path(place) / "postgres").is_file():
            return Path(place)
    return None


class PostgresServer:
    """One throwaway PostgreSQL cluster (trust auth, loopback only, fsync off)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="policyopt-pg-"))
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user to run initdb as")
            self.user = "postgres"
            shutil.chown(self.root, user="postgres")
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://policyopt@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, user=self.user, capture_output=True, timeout=120, cwd=self.root)
        if done.returncode:
            raise AssertionError(f"{argv[0]} failed:\n{done.stderr.decode()[-2000:]}")

    def start(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "policyopt",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-F",  # fsync off: a test database
                    "-c",
                    "max_connections=200",
                ],
                user=self.user,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited early:\n{self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"postgres not ready in 60 s:\n{self.log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), SIGKILL after 20 s; then the directory goes."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def fresh_database(self, name: str) -> str:
        """A new empty database on this server; its URL."""
        import psycopg

        with contextlib.closing(psycopg.connect(self.url, autocommit=True)) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://policyopt@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started server, stopped and removed on exit; ``pytest.skip`` without the binaries."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb/postgres in /usr/lib/postgresql/*/bin or "
            "on PATH; .ci/run installs the Debian package 'postgresql')"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'policyopt[remote]')")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
