"""A throwaway PostgreSQL server for the tests and the bench, from Debian's package.

``initdb`` in a temporary directory, ``pg_ctl start`` on a free port with its unix
socket in that directory, ``pg_ctl stop`` and the directory removed afterwards.
PostgreSQL refuses to run as root: when we are root, the server runs as the
``postgres`` OS user (the Debian package creates it; ``nobody`` otherwise) through
``runuser``, and the directory is handed to that user.

Durability is switched off (``fsync=off``) unless ``durable``: a test server lives
for one session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = ("PostgreSQL binaries not found: apt-get install -y --no-install-recommends"
                " postgresql (.ci/run does this)")


def find_bin(name: str) -> str | None:
    """``name`` (initdb, pg_ctl) on PATH or in Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def available() -> bool:
    return find_bin("initdb") is not None and find_bin("pg_ctl") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """The OS user to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run"
                       " PostgreSQL as")


@dataclass
class PostgresServer:
    """One running server; ``dsn(db)`` connects over its unix socket."""

    # Under root the server's user must reach the directory: /tmp, not a private TMPDIR.
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(
        prefix="bot-pg-", dir="/tmp" if os.geteuid() == 0 else None)))
    port: int = field(default_factory=free_port)
    user: str | None = field(default_factory=_server_user)
    superuser: str = "postgres"
    durable: bool = False  # True: fsync and synchronous commits, as in production (bench)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def dsn(self, database: str = "postgres") -> str:
        return (f"postgresql://{self.superuser}@/{database}"
                f"?host={self.socket_dir}&port={self.port}")

    def tcp_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({result.returncode}):"
                               f" {result.stderr.strip()}\n{tail}")

    def start(self) -> PostgresServer:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError(INSTALL_HINT)
        self.socket_dir.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(initdb, "-D", str(self.data), "-U", self.superuser, "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
                   " -c max_connections=200 -c shared_buffers=32MB")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "30", "start")
        return self

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        try:
            if pg_ctl is not None and (self.data / "postmaster.pid").exists():
                self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
