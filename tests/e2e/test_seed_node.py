"""The seed's own JavaScript examples, run unchanged with Node and the npm `ws` package.

tests/node/seed_examples.js holds the seed's code verbatim (getTerminals and its handler,
initiatePayment with its paymentComplete handler and usage call, startHeartbeat/handlePong) in a
small harness that reports, as JSON lines, what the seed's code printed. tests/node/terminal.js
is a fake terminal that answers every paymentRequest. Both talk to a real daphne.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.harness import deployment_for_this_run
from tests.services import ROOT, node_with_ws

pytestmark = [pytest.mark.e2e, pytest.mark.node]

NODE_DIR = ROOT / "tests" / "node"
SEED_SCRIPT = NODE_DIR / "seed_examples.js"
TERMINAL_SCRIPT = NODE_DIR / "terminal.js"

# The server's heartbeat: a connection quiet for 2 + 2 s is stale and closed (4408).
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 2.0
CLOSE_STALE = 4408
# The seed's 30 s ping interval and 10 s pong timeout, scaled by the harness to 1.5 s and 0.5 s.
SEED_TIME_SCALE = 0.05
HEARTBEAT_CYCLES = 5


@pytest.fixture(scope="module")
def node() -> str:
    return node_with_ws()


@pytest.fixture(scope="module")
def deployment(node):
    with deployment_for_this_run() as deployment:
        yield deployment


@pytest.fixture(scope="module")
def server(deployment):
    return deployment.server(
        HEARTBEAT_INTERVAL_S=str(HEARTBEAT_INTERVAL_S),
        HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
        RECONNECT_GRACE_S="30",
        PAYMENT_TIMEOUT_S="30",
    )


@dataclass
class Store:
    group: str
    desktop_key: str
    terminal_key: str


@pytest.fixture
def store(deployment) -> Store:
    """A store of its own: one desktop and one terminal with the seed's deviceId TERM-001."""
    group = f"seed-{uuid.uuid4().hex[:8]}"
    return Store(
        group=group,
        desktop_key=deployment.key(group, "desktop", "POS-1"),
        terminal_key=deployment.key(group, "terminal", "TERM-001"),
    )


@pytest.fixture
def desktop_key(deployment) -> str:
    """A desktop in a store of its own, for the heartbeat tests (no terminal needed)."""
    return deployment.key(f"seed-{uuid.uuid4().hex[:8]}", "desktop", "POS-1")


class NodeTerminal:
    """tests/node/terminal.js as a background process; its JSON lines read with deadlines."""

    def __init__(self, node: str, url: str, key: str, behaviour: str) -> None:
        env = {
            **os.environ,
            "TERMINAL_URL": url,
            "TERMINAL_KEY": key,
            "TERMINAL_BEHAVIOUR": behaviour,
            "TERMINAL_PING_MS": "1000",
        }
        self.proc = subprocess.Popen(
            [node, str(TERMINAL_SCRIPT)],
            cwd=NODE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, event: str, timeout: float = 10) -> dict[str, Any]:
        for seen in self.events:
            if seen.get("event") == event:
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"terminal.js did not report {event!r}: {self.events}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = {"event": "output", "text": line}
            self.events.append(parsed)
            if parsed.get("event") == event:
                return parsed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def start_terminal(node, server):
    started: list[NodeTerminal] = []

    def start(key: str, behaviour: str = "approve") -> NodeTerminal:
        terminal = NodeTerminal(node, server.ws_url, key, behaviour)
        started.append(terminal)
        terminal.wait_for("connected")
        return terminal

    yield start
    for terminal in started:
        terminal.stop()


@dataclass
class SeedRun:
    scenario: str
    returncode: int
    reports: list[dict[str, Any]]
    stderr: str
    logs: list[str] = field(init=False)
    errors: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.logs = [r["text"] for r in self.reports if r.get("seed") == "log"]
        self.errors = [r["text"] for r in self.reports if r.get("seed") == "error"]

    def harness(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r.get("harness") == kind]

    def frames(self, action: str) -> list[dict[str, Any]]:
        return [r["frame"] for r in self.harness("frame") if r["frame"].get("action") == action]

    @property
    def result(self) -> dict[str, Any]:
        results = self.harness("result")
        assert results, f"the {self.scenario} scenario did not finish:\n{self}"
        return results[-1]

    def __str__(self) -> str:
        lines = "\n".join(json.dumps(r) for r in self.reports)
        return f"exit {self.returncode}\n{lines}\nstderr:\n{self.stderr}"


@pytest.fixture
def run_seed(node, server):
    def run(scenario: str, key: str, auth: str = "header", **env: str) -> SeedRun:
        proc = subprocess.run(
            [node, str(SEED_SCRIPT), scenario],
            cwd=NODE_DIR,
            env={
                **os.environ,
                "SEED_URL": server.ws_url,
                "SEED_KEY": key,
                "SEED_AUTH": auth,
                "SEED_DEADLINE_MS": "20000",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        reports = []
        for line in proc.stdout.splitlines():
            try:
                reports.append(json.loads(line))
            except ValueError:
                reports.append({"harness": "output", "text": line})
        run = SeedRun(scenario, proc.returncode, reports, proc.stderr)
        assert proc.returncode == 0, f"seed_examples.js {scenario} failed:\n{run}"
        assert run.harness("frame"), f"no frames:\n{run}"
        assert run.harness("frame")[0]["frame"]["action"] == "connected", str(run)
        return run

    return run


@pytest.mark.parametrize("auth", ["header", "query"])
def test_seed_get_terminals_handler_lists_the_online_terminal(
    store, start_terminal, run_seed, auth
):
    terminal = start_terminal(store.terminal_key)
    terminal_connection = terminal.wait_for("connected")["frame"]["connectionId"]

    run = run_seed("getTerminals", store.desktop_key, auth=auth)

    assert run.logs == ["Found 1 terminal(s)", "- TERM-001: online"], str(run)
    stored = run.result["availableTerminals"]
    assert [(t["deviceId"], t["status"], t["connectionId"]) for t in stored] == [
        ("TERM-001", "online", terminal_connection)
    ]


def test_seed_initiate_payment_usage_completes_with_the_terminal_authorization(
    store, start_terminal, run_seed
):
    terminal = start_terminal(store.terminal_key, "approve")

    run = run_seed("payment", store.desktop_key)

    txn_id = run.result["txnId"]
    assert re.fullmatch(r"TXN-\d{13}", txn_id), txn_id
    forwarded = terminal.wait_for("paymentRequest")["frame"]
    answered = terminal.wait_for("answered")["paymentResponse"]
    assert run.logs == [
        f"Payment initiated: {txn_id}",
        f"Payment successful: {txn_id}",
        f"Authorization: {answered['authorizationCode']}",
    ], str(run)
    assert run.errors == []
    # The terminal got the seed's request as the seed describes it, from this desktop.
    desktop_connection = run.frames("connected")[0]["connectionId"]
    assert forwarded["desktopId"] == desktop_connection
    request = forwarded["paymentRequest"]
    assert request["transactionId"] == txn_id
    assert (request["amount"], request["currency"], request["paymentMethod"]) == (
        "99.99",
        "USD",
        "CARD",
    )
    assert request["products"] == [
        {"id": "PROD-001", "name": "Widget", "price": "99.99", "quantity": 1}
    ]
    assert request["metadata"] == {"orderId": "ORD-12345"}


def test_seed_payment_complete_handler_reports_a_declined_payment_as_failed(
    store, start_terminal, run_seed
):
    terminal = start_terminal(store.terminal_key, "decline")

    run = run_seed("payment", store.desktop_key)

    txn_id = run.result["txnId"]
    assert terminal.wait_for("answered")["paymentResponse"]["status"] == "DECLINED"
    assert run.logs == [f"Payment initiated: {txn_id}"], str(run)
    assert run.errors == ["Payment failed: Insufficient funds"], str(run)
    [complete] = run.frames("paymentComplete")
    assert complete["paymentResponse"]["transactionId"] == txn_id


def test_seed_heartbeat_keeps_the_connection_open_across_ping_cycles(desktop_key, run_seed):
    # Without pings the server closes this socket after 4 s; the cycles below last 7.5 s.
    assert HEARTBEAT_CYCLES * 30 * SEED_TIME_SCALE > HEARTBEAT_INTERVAL_S + HEARTBEAT_TIMEOUT_S

    run = run_seed(
        "heartbeat",
        desktop_key,
        SEED_TIME_SCALE=str(SEED_TIME_SCALE),
        SEED_HEARTBEAT_CYCLES=str(HEARTBEAT_CYCLES),
    )

    result = run.result
    # The seed's own delays, as written, shortened only by the harness.
    assert {r["seedMs"] for r in run.harness("setInterval")} == {30000}
    assert {r["seedMs"] for r in run.harness("setTimeout")} == {10000}
    assert result["outcome"] == "cycles", str(run)
    assert result["openAfterCycles"] is True
    assert result["pongsClearingPendingPing"] >= HEARTBEAT_CYCLES
    assert result["timeoutsFired"] == 0
    assert "Connection timeout - reconnecting" not in run.logs
    assert len(run.frames("pong")) >= HEARTBEAT_CYCLES
    # The only close is the harness's own, after the cycles.
    assert [(c["code"], c["byHarness"]) for c in run.harness("close")] == [(1000, True)]


def test_without_the_seed_heartbeat_the_server_closes_the_quiet_connection(desktop_key, run_seed):
    """The heartbeat test's control: the same socket without startHeartbeat is closed as stale."""
    run = run_seed("idle", desktop_key)

    assert run.result["closeCode"] == CLOSE_STALE, str(run)
    # The server's unasked pong (the seed's "Server-Initiated Pong") reached the seed's handler.
    assert run.result["handlePongCalls"] >= 1
