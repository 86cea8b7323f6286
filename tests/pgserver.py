"""Pytest plugin: a throwaway PostgreSQL server for the session, and a fresh database per test.

Fixtures: `postgres_url` (session; the server's `postgres` database) and `postgres_db_url` (a new empty database
for one test, dropped afterwards). Without initdb/pg_ctl the tests are skipped, unless RECVAE_REQUIRE_POSTGRES=1
(CI), which turns that into a failure.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ENV = "RECVAE_REQUIRE_POSTGRES"
_counter = itertools.count()


def _find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    return candidates[0] if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != 5432 else _free_port()


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


class _Server:
    """A PostgreSQL cluster in a temporary folder, run as the `postgres` user when we are root."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="recvae-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root but `runuser` is missing (needed to run initdb as postgres)")
            shutil.chown(self.dir, user="postgres", group="postgres")
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.port = 0
        self.started = False

    def _run(self, args: list[str], timeout: float = 60) -> None:
        proc = subprocess.run(self.prefix + args, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")

    def start(self) -> None:
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        last: Exception | None = None
        for _ in range(3):  # the free port can be taken between choosing and binding it
            self.port = _free_port()
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
            try:
                self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-o", opts, "start"])
                self.started = True
                return
            except RuntimeError as exc:
                last = exc
        raise RuntimeError(f"could not start PostgreSQL: {last}")

    def stop(self) -> None:
        try:
            if self.started:
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=30)
                self.started = False
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server started for this test session (user postgres, trust auth, 127.0.0.1)."""
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if not (initdb and pg_ctl):
        _unavailable("initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run the server as")
    server = _Server(initdb, pg_ctl)
    try:
        try:
            server.start()
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            _unavailable(str(exc))
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database on the session's server; dropped after the test."""
    import psycopg

    name = f"recvae_test_{os.getpid()}_{next(_counter)}"
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # FILE_COPY (PostgreSQL 15+) copies the tiny template faster than the default WAL_LOG.
        strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(f'CREATE DATABASE "{name}"{strategy}')
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL, once per engine: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'recs.db'}"
    return request.getfixturevalue("postgres_db_url")
