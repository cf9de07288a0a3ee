"""A real, throw-away PostgreSQL server for tests and benchmarks.

``initdb`` + ``pg_ctl start`` in a temporary folder, listening on 127.0.0.1 on a free
port, trust authentication for local connections only. PostgreSQL refuses to run as
root, so under root the server runs as the ``postgres`` system user (created by the
Debian package) through ``runuser``.

Used by ``tests/conftest.py`` (the session fixture ``pg_server``) and by ``bench/``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` (or the one on PATH).

    Raises:
        RuntimeError: PostgreSQL is not installed (install the Debian package postgresql).
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (see the README's install command)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir; :meth:`dsn` names a database in it.

    Args:
        root: the cluster's folder (default: a new temp dir); under root it must be
            reachable by the ``postgres`` user (pytest's tmp_path is not).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.bin = pg_bin_dir()
        self.root = Path(root or tempfile.mkdtemp(prefix="facerec-pg-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self._run_as = ["runuser", "-u", "postgres", "--"] if self.user else []
        if self.user:
            shutil.chown(self.root, "postgres", "postgres")
            os.chmod(self.root, 0o755)
        self.role = "facerec"

    def _cmd(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self._run_as, *args], capture_output=True, text=True, check=check, timeout=timeout)

    def init(self) -> PgServer:
        self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.role, "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                    "max_connections = 100\nfsync = on\nshared_buffers = 64MB\n")
        return self

    def start(self, tries: int = 5) -> PgServer:
        for _ in range(tries):  # after a kill, old backends may hold shared memory for a moment
            r = self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log.txt"), "-w",
                          "-t", "60", "start", check=False)
            if r.returncode == 0:
                break
            time.sleep(1.0)
        if r.returncode != 0:
            log = (self.root / "log.txt").read_text(errors="replace")[-2000:] if (self.root / "log.txt").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr or r.stdout}\n{log}")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash: no shutdown checkpoint; recovery replays the WAL)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            # backends exit once the postmaster is gone; wait for the port to free up
            for _ in range(200):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                        time.sleep(0.05)
                except OSError:
                    break
            time.sleep(0.3)  # backends notice the postmaster's death and exit

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{dbname}"

    def create_db(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
