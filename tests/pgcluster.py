"""A throwaway PostgreSQL cluster for the ``postgres`` tier: Debian's
server binaries, a data directory in a temporary directory, listening on a
free loopback port, run as an unprivileged user when the tests run as root
(PostgreSQL refuses to run as root), with fsync off: it holds nothing worth
keeping. ``.ci/run`` installs the ``postgresql`` package."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg

USER = "deepaas"  # the cluster's superuser, trusted on loopback


def server_binaries() -> Path:
    """Where initdb and pg_ctl are (the newest installed PostgreSQL)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "The postgres tier needs PostgreSQL's server binaries: "
            "apt-get install postgresql (.ci/run installs it)"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One PostgreSQL server, started by ``start`` and removed by ``stop``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="deepaas-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = server_binaries()
        self.runner: list[str] = []
        if os.geteuid() == 0:
            # Owned by the postgres system user the package creates.
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.runner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self.runner, *command],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data), "-U", USER, "--auth=trust", "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"t{uuid.uuid4().hex[:16]}"
        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(f"CREATE DATABASE {name}")
        finally:
            await connection.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                "-w", "stop",
            )  # fmt: skip
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
