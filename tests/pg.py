"""A real PostgreSQL server for tests (Debian's `postgresql` package, which `scripts/install`
installs): a fresh cluster in a temporary directory on a free loopback port, run as the
`postgres` system user when the tests run as root (PostgreSQL refuses to run as root), stopped
when the `with` block ends.

    with start_postgres(tmp_path) as pg:
        pg.superuser_dsn, pg.dsn_for("signoff_app")
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg

from tests.prom import free_port


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    port: int
    superuser: str

    @property
    def superuser_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.superuser} dbname=postgres"

    def dsn_for(self, role: str) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/postgres"

    def create_role(self, role: str) -> str:
        with psycopg.connect(self.superuser_dsn, autocommit=True) as db:
            db.execute(f'DROP ROLE IF EXISTS "{role}"')
            db.execute(f'CREATE ROLE "{role}" LOGIN')
        return self.dsn_for(role)


@contextmanager
def start_postgres(workdir: Path) -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed; run `bash scripts/install` (it installs Debian's postgresql).")
    run_as: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        # pytest's tmp directories are private to root; the server's own lives in /tmp
        user = "postgres"
        workdir = Path(tempfile.mkdtemp(prefix="signoff-pg-"))
        shutil.chown(workdir, user)
        run_as = ["runuser", "-u", user, "--"]
    data = workdir / "pgdata"
    port = free_port()
    log = workdir / "postgres.log"
    subprocess.run(run_as + [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    proc = subprocess.Popen(
        run_as + [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(workdir), "-c", "fsync=off"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 (the server keeps it open)
    )
    server = PostgresServer(port, user)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.superuser_dsn, connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if run_as:
            shutil.rmtree(workdir, ignore_errors=True)
