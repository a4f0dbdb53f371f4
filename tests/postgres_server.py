"""A real PostgreSQL server for the tests of shared studies: PostgreSQL's own initdb and pg_ctl, into a
folder of its own, listening on a Unix socket only (no TCP port). As root, the server runs as the
`postgres` user, which PostgreSQL requires. `.ci/run` installs the server programs when they are missing."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile


def server_programs() -> str:
    """The folder of initdb and pg_ctl (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise RuntimeError("PostgreSQL's server programs are not installed (apt-get install postgresql; .ci/run does)")


class PostgresServer:
    def __init__(self) -> None:
        self.bin = server_programs()
        self.folder = tempfile.mkdtemp(prefix="alloy-pg-")  # /tmp: reachable by the postgres user
        self.data = os.path.join(self.folder, "data")
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.folder, "log"), "-w", "start")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@/postgres?host={self.folder}"

    def _run(self, program: str, *args: str) -> None:
        command = [os.path.join(self.bin, program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
