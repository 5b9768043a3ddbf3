"""A new developer's first hour, as the README has it: ``make run`` (for real, on a database and
keys file of the test's own), the README's snippet run twice against it with a simulated
terminal, a second ``make run`` while the first still serves, a restart, a cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from posgateway.client import GatewayClient
from tests.e2e.conftest import Gateway
from tests.e2e.harness import Deployment, Server, _base_env, free_port
from tests.e2e.test_simulate_terminal import simulated_terminal
from tests.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("close_clients")]

KEY_LINE = re.compile(r"^\s+(desktop|terminal)\s+(\S+)\s+key: (\S+)$")


@dataclass
class MakeRun:
    """``make run`` in a process group of its own, and what it printed."""

    env: dict[str, str]
    port: int
    keys_file: Path
    proc: subprocess.Popen | None = None
    lines: list[str] = field(default_factory=list)

    def start(self, timeout: float = 90) -> MakeRun:
        self.lines = []
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # until the ready line (the server then logs on)
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready:"):
                return self
        raise AssertionError("make run ended without a ready line:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def keys(self) -> dict[str, str]:
        return {m[2]: m[3] for line in self.lines if (m := KEY_LINE.match(line))}

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def demo() -> Iterator[MakeRun]:
    with tempfile.TemporaryDirectory(prefix="posgw-make-run-") as tmp:
        env = _base_env(
            DATABASE_URL=f"sqlite:///{Path(tmp) / 'db.sqlite3'}",
            DEMO_KEYS=str(Path(tmp) / "demo-keys.json"),
            PORT=str(free_port()),
            PAYMENT_TIMEOUT_S="5",
            PYTHON=sys.executable,
            DEMO_SECRET_KEY=str(Path(tmp) / "demo-secret-key"),
        )
        del env["SECRET_KEY"]  # as in a developer's shell: make run brings its own
        run = MakeRun(env, int(env["PORT"]), Path(env["DEMO_KEYS"]))
        try:
            yield run.start()
        finally:
            run.stop()


def gateway_of(run: MakeRun) -> Gateway:
    """The server `make run` started, as the simulator's test helpers take it."""
    server = Server(Deployment(run.env, run.keys_file.parent), port=run.port)
    return Gateway(server.deployment, server)


def get(url: str) -> tuple[int, str, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def readme_snippet(desktop_key: str, port: int) -> str:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None
    snippet = code.group(1)
    assert "<desktop key>" in snippet
    assert "ws://127.0.0.1:8000/ws/" in snippet
    return snippet.replace("<desktop key>", desktop_key).replace(":8000/", f":{port}/")


async def run_snippet(snippet: str, timeout: float = 30) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        snippet,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, output.decode()
    return output.decode()


def test_make_run_keeps_the_demo_keys_in_a_file_only_the_owner_reads(demo: MakeRun):
    keys = demo.keys()
    kept = json.loads(demo.keys_file.read_text())

    assert stat.S_IMODE(demo.keys_file.stat().st_mode) == 0o600
    # Its SECRET_KEY too: random, made once, never the public development key.
    secret = demo.keys_file.with_name("demo-secret-key")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 50
    assert not secret.read_text().startswith("django-insecure")
    assert {d["deviceId"]: d["key"] for d in kept["devices"]} == keys
    assert set(keys) == {"POS-001", "TERM-001"}
    assert "manage.py createsuperuser" in "\n".join(demo.lines)
    ready = [line for line in demo.lines if line.startswith("ready:")]
    assert ready == [
        f"ready: {demo.url}/ (dashboard {demo.url}/dashboard/, admin {demo.url}/admin/, "
        f"POS and terminals {demo.ws_url})"
    ]


def test_root_redirects_to_the_dashboard_and_api_errors_are_json_under_debug(demo: MakeRun):
    status, _, _ = get(f"{demo.url}/")
    api = get(f"{demo.url}/api/no-such-thing/")
    terminal_api = get(f"{demo.url}/terminal-api/sync/")

    assert status == 302
    for code, content_type, body in (api, terminal_api):
        assert (code, content_type) == (404, "application/json"), body
        assert json.loads(body)["error"] == "Not Found"


def test_a_second_make_run_reports_the_taken_port_and_changes_nothing(demo: MakeRun):
    before = demo.keys_file.read_bytes()

    second = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert second.returncode != 0
    said = [line for line in second.stderr.splitlines() if line.startswith("make run:")]
    assert len(said) == 1, second.stderr
    assert f"port {demo.port}" in said[0]
    assert "migrate" not in second.stdout
    assert demo.keys_file.read_bytes() == before


async def test_the_readme_runs_twice_survives_a_restart_and_a_cancel(demo: MakeRun):
    keys = demo.keys()
    snippet = readme_snippet(keys["POS-001"], demo.port)
    gw = gateway_of(demo)
    async with simulated_terminal(gw, keys["TERM-001"], "approve", delay=0.1) as sim:
        await sim.wait_for_line("connected as TERM-001")
        first = await run_snippet(snippet)
        second = await run_snippet(snippet)  # at once: the stored results
    for output in (first, second):
        assert output.count("status='SUCCESS'") == 2, output
    assert sim.log().count("answered SUCCESS") == 2  # the second run started nothing

    # A restart: the same keys, printed again; they still work.
    await asyncio.to_thread(demo.stop)
    await asyncio.to_thread(demo.start)
    assert demo.keys() == keys
    assert "kept in" in "\n".join(demo.lines)

    async with (
        simulated_terminal(gw, keys["TERM-001"], "approve", delay=30) as sim,
        GatewayClient(demo.ws_url, keys["POS-001"], heartbeat_interval=None) as pos,
    ):
        await sim.wait_for_line("connected as TERM-001")
        assert (await pos.wait_result("TXN-1", timeout=5)).status == "SUCCESS"
        await pos.pay("TERM-001", transaction_id="TXN-2", amount="1.00", currency="EUR")
        await sim.wait_for_line("paymentRequest TXN-2")
        await pos.cancel("TXN-2")
        cancelled = await pos.wait_result("TXN-2", timeout=10)
        with contextlib.suppress(Exception):
            await pos.ping()
    assert cancelled.status == "CANCELLED"
