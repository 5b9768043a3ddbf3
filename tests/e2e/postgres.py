"""A PostgreSQL server of the test's own, to stop and start at will (never the machine's).

``initdb`` into a temporary directory and ``pg_ctl`` on a free port of 127.0.0.1, trust
authentication, no fsync: for tests that restart the database under a running gateway. The
binaries are PostgreSQL's own (on PATH, or Debian's /usr/lib/postgresql/*/bin); as root they
run as the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.harness import free_port
from tests.services import missing


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class PrivatePostgres:
    """One PostgreSQL server in its own data directory, on its own port."""

    def __init__(self, bindir: Path, workdir: Path, user: str | None) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.user = user
        self.datadir = workdir / "data"
        self.log_path = workdir / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.log_path), "-o", options, "-w",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` ends every session (a restart as an operator does it),
        ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        missing("PostgreSQL's initdb and pg_ctl are not installed")
    assert bindir is not None
    user = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing("running as root without a postgres user to run PostgreSQL as")
        user = "postgres"
    workdir = Path(tempfile.mkdtemp(prefix="posgw-pg-"))
    if user is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bindir, workdir, user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(workdir, ignore_errors=True)
