"""Real deployments for end-to-end tests: migrated databases and server processes on 127.0.0.1.

A :class:`Deployment` is one database (+ channel layer) with its environment; it runs
``manage.py`` commands and starts any number of :class:`Server` processes sharing it.

The servers are daphne, the default; ``E2E_SERVER=uvicorn`` runs the same tests on uvicorn, the
supported alternative (``make test-uvicorn``), with the flags docs/operations.md gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from tests.services import ROOT, postgres_url
from tests.services import redis_url as default_redis_url

PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))
UVICORN = str(Path(sys.executable).with_name("uvicorn"))
SERVERS = ("daphne", "uvicorn")


def default_server() -> str:
    """The server the end-to-end tests start: ``E2E_SERVER``, daphne unless set."""
    kind = os.environ.get("E2E_SERVER") or "daphne"
    if kind not in SERVERS:
        raise RuntimeError(f"E2E_SERVER must be one of {', '.join(SERVERS)}, not {kind!r}")
    return kind


def server_command(kind: str, port: int) -> list[str]:
    """How docs/operations.md runs each server (bound to 127.0.0.1 here)."""
    app = "posgateway.asgi:application"
    if kind == "uvicorn":
        return [
            *(UVICORN, app, "--host", "127.0.0.1", "--port", str(port), "--backlog", "1024"),
            *("--ws-max-size", "1048576", "--ws-per-message-deflate", "false"),
            *("--timeout-graceful-shutdown", "10"),
        ]
    return [
        *(DAPHNE, "--websocket_timeout", "-1", "--websocket_connect_timeout", "30"),
        *("-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024", app),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process (daphne unless ``kind`` or ``E2E_SERVER`` says uvicorn)."""

    def __init__(
        self, deployment: Deployment, port: int | None = None, *, kind: str = "", **env: str
    ) -> None:
        self.deployment = deployment
        self.kind = kind or default_server()
        self.port = port or free_port()
        self.env = {**deployment.env, **env}
        self.log_path = deployment.workdir / f"{self.kind}-{self.port}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            server_command(self.kind, self.port),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self, timeout: float = 30) -> Server:
        """Start and wait until ``/healthz`` answers 200."""

        def healthy(remaining: float) -> bool:
            # A process's first request imports the URLconf and every view: on a loaded machine
            # that takes seconds, and a client that gives up early would only ask again.
            wait = max(1.0, min(15.0, remaining))
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=wait) as resp:
                return resp.status == 200

        return self._start_until(healthy, "become healthy", timeout)

    def start_listening(self, timeout: float = 30) -> Server:
        """Start and wait only until the port accepts connections: no request reaches the
        application (for tests of what a process does before anyone talks to it)."""

        def listening(remaining: float) -> bool:
            with socket.create_connection(("127.0.0.1", self.port), 1):
                return True

        return self._start_until(listening, "listen", timeout)

    def _start_until(self, ready: Callable[[float], bool], what: str, timeout: float) -> Server:
        """Spawn the server and poll ``ready`` (given the seconds left; OSError = not yet)."""
        self._spawn()
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start:\n{self.log()}")
            try:
                if ready(deadline - time.monotonic()):
                    return self
            except OSError as exc:
                last_error = exc
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.kind} did not {what} in {timeout} s (last: {last_error!r}):\n{self.log()}"
        )

    def healthz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """Die without a goodbye, as a crashed process does."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Deployment:
    """A database and channel layer shared by the servers started from it."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.servers: list[Server] = []

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def create_device(
        self, group: str, device_type: str, device_id: str | None = None, count: int = 1
    ) -> list[str]:
        args = ["create_device", "--group", group, "--type", device_type]
        if device_id:
            args += ["--device-id", device_id]
        if count != 1:
            args += ["--count", str(count)]
        out = self.manage(*args).stdout.strip().splitlines()
        return out[-count:]

    def key(self, group: str, device_type: str, device_id: str | None = None) -> str:
        return self.create_device(group, device_type, device_id)[0]

    def server(self, *, kind: str = "", **env: str) -> Server:
        server = Server(self, kind=kind, **env).start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


def _base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="posgateway.settings",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        SWEEP_INTERVAL_S="0.2",
        # The tests' webhook receivers listen on 127.0.0.1 over plain HTTP.
        WEBHOOK_ALLOW_HTTP="1",
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        WEBHOOK_POLL_INTERVAL_S="0.2",
        # DEBUG is off: a server refuses to start without a key of its own (posgateway/asgi.py).
        # One per deployment, shared by its processes (sessions signed by one, read by another).
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def sqlite_deployment(**extra: str):
    """The embedded default: an SQLite file and the in-memory layer (one process only)."""
    with tempfile.TemporaryDirectory(prefix="posgw-e2e-") as tmp:
        workdir = Path(tmp)
        env = _base_env(DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}", **extra)
        deployment = Deployment(env, workdir)
        deployment.manage("migrate", "--noinput")
        try:
            yield deployment
        finally:
            deployment.close()


@contextlib.contextmanager
def production_deployment(
    *, redis_url: str | None = None, postgres_server_url: str | None = None, **extra: str
):
    """PostgreSQL + Redis as production runs them: a fresh database, a private layer prefix.

    ``redis_url`` points the layer at another Redis (e.g. a test's own, to stop and restart);
    ``postgres_server_url`` the database at another PostgreSQL server (a test's own).
    """
    import psycopg

    server_url = postgres_server_url or postgres_url()
    layer_url = redis_url or default_redis_url()
    name = f"posgw_e2e_{uuid.uuid4().hex[:10]}"
    parsed = urlparse(server_url)
    db_url = urlunparse(parsed._replace(path=f"/{name}"))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory(prefix="posgw-e2e-") as tmp:
        workdir = Path(tmp)
        env = _base_env(
            DATABASE_URL=db_url, REDIS_URL=layer_url, CHANNEL_PREFIX=f"{name}:", **extra
        )
        deployment = Deployment(env, workdir)
        try:
            deployment.manage("migrate", "--noinput")
            yield deployment
        finally:
            deployment.close()
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def deployment_for_this_run(**extra: str):
    """PostgreSQL + Redis when the suite runs with DATABASE_URL, else the embedded default."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return production_deployment(**extra)
    return sqlite_deployment(**extra)
