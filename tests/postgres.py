"""A real PostgreSQL server for the tests: a private cluster (initdb) on a loopback port, started
and stopped with pg_ctl, restartable on the same data.

The server binaries come from the system (Debian's ``postgresql`` package; ``make test`` installs
it when it can). PostgreSQL refuses to run as root, so as root the cluster belongs to the
``postgres`` user the package creates and its programs run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import free_port

__all__ = ["PostgresProcess", "server_binaries"]


def server_binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (the newest installed version), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class PostgresProcess:
    """``start()`` (initdb on the first), ``stop()``, ``restart()``, ``close()`` (stops and removes
    the cluster); ``url`` for psycopg. Its directory is a fresh one under the system's temporary
    directory, not pytest's: pytest's is private to the user running the tests (mode 0700), and
    the server may run as ``postgres``."""

    def __init__(self) -> None:
        bin_dir = server_binaries()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server here: install Debian's 'postgresql' package (make test does)")
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        if not self.data.exists():
            if self.user is not None:
                shutil.chown(self.dir, self.user)
            # trust on loopback only: a throwaway cluster of a test run.
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.dir / "log"), "-o", options, "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()
