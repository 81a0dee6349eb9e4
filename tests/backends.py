"""Store/index backends for tests: a real PostgreSQL server started by the tests, and the backend matrix."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("MEDSEARCH_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
BACKENDS = ("sqlite-faiss", "postgres-faiss", "milvus-lite")
TEST_SALT = "test-patient-salt-" + "0" * 32  # shared databases need one key on every machine


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp folder on 127.0.0.1 (as the `postgres` user when run as root)."""

    def __init__(self) -> None:
        missing = [name for name in ("initdb", "postgres") if not (PG_BIN / name).exists()]
        if missing:
            raise RuntimeError(
                f"PostgreSQL binaries {missing} not found in {PG_BIN}: apt-get install postgresql "
                "(.ci/run does), or set MEDSEARCH_TEST_PG_BIN"
            )
        self.root = Path(tempfile.mkdtemp(prefix="medsearch-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.port = free_port()
        self.user: dict[str, Any] = {}
        if os.getuid() == 0:  # postgres refuses to run as root
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            os.chown(self.sockets, account.pw_uid, account.pw_gid)
            self.user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.log = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def start(self) -> None:
        """initdb, then postgres in the background; returns once it accepts connections."""
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "medsearch", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=self.root,
            **self.user,
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off"),
                    *("-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                **self.user,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                self._admin("SELECT 1")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://medsearch@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=medsearch dbname=postgres", autocommit=True) as con:
            con.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown by PID, then remove the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Backend:
    """One store/index configuration; settings for a data folder under it (a fresh database per folder)."""

    name: str = "sqlite-faiss"
    server: PostgresServer | None = None
    databases: dict[Path, str] = field(default_factory=dict)

    def settings(self, data_dir: Path) -> dict[str, object]:
        """Settings fields that put `data_dir` on this backend."""
        if self.name == "postgres-faiss":
            assert self.server is not None
            key = Path(data_dir).resolve()
            if key not in self.databases:
                self.databases[key] = self.server.create_database()
            return {"database_url": self.databases[key], "patient_salt": TEST_SALT}
        if self.name == "milvus-lite":
            return {"vector_backend": "milvus"}
        return {}

    def env(self, data_dir: Path) -> dict[str, str]:
        """The same as MEDSEARCH_* environment variables, for `medsearch` child processes."""
        return {f"MEDSEARCH_{key.upper()}": str(value) for key, value in self.settings(data_dir).items()}


DEFAULT = Backend()
current = DEFAULT  # what make_settings uses; the `backend` fixture switches it for one test
