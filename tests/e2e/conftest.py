"""Fixtures for the end-to-end tests: real daphne processes, stores made by ``create_device``.

Deployments and servers are session-scoped (a migrate plus a daphne start costs seconds); each
test makes its own store with :meth:`Gateway.store`, so tests never see each other's devices.
Servers whose timers differ get their own deployment: a process's sweeper applies its own
heartbeat and grace settings to every connection in its database, and on the embedded default
each process has its own in-memory channel layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.harness import Deployment, Server, deployment_for_this_run
from tests.e2e.ws import Client

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

_open_clients: list[DeviceClient] = []


class DeviceClient(Client):
    """A connected device: the ``connected`` frame it got is kept as ``hello``."""

    hello: dict[str, Any]

    @property
    def connection_id(self) -> str:
        return self.hello["connectionId"]

    async def ping(self) -> None:
        """Ping and read up to the pong: proves the socket is open and answering."""
        await self.request({"action": "ping"}, "pong")

    async def frames_until_pong(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Send a ping; every frame that arrives before its pong, the pong excluded."""
        await self.send({"action": "ping"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frames = []
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame.get("action") == "pong":
                return frames
            frames.append(frame)

    async def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame other than pong that arrives within ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        frames = []
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await self.recv(left)
            except TimeoutError:
                break
            if frame.get("action") != "pong":
                frames.append(frame)
        return frames

    async def wait_closed(self, timeout: float = 10) -> int | None:
        """Wait for the server to close the socket; returns the close code."""
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code

    async def drain_until_closed(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Every frame the server sends before it closes the socket."""
        frames = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - loop.time()))
            except Exception as exc:
                if exc.__class__.__name__.startswith("ConnectionClosed"):
                    return frames
                raise
            frames.append(json.loads(raw))


@dataclass
class Store:
    """One store's slug and the keys of its devices (created by ``manage.py create_device``)."""

    slug: str
    desktop_keys: list[str]
    terminal_keys: list[str]
    terminal_ids: list[str | None] = field(default_factory=list)

    @property
    def desktop(self) -> str:
        return self.desktop_keys[0]

    @property
    def terminal(self) -> str:
        return self.terminal_keys[0]

    @property
    def terminal_id(self) -> str | None:
        return self.terminal_ids[0]


# One ``manage.py shell`` makes a batch of stores with the real ``create_device`` command
# (call_command, the same arguments a script would give it): a Django start-up per device cost
# more CPU than most of the tests using them.
_MAKE_STORES = """
import io, json, uuid
from django.core.management import call_command


def create_device(slug, device_type, device_id, count):
    args = ["create_device", "--group", slug, "--type", device_type]
    if device_id:
        args += ["--device-id", device_id]
    if count != 1:
        args += ["--count", str(count)]
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-count:]


made = []
for desktops, terminals, desktop_id, terminal_id in json.loads(SHAPES):
    slug = "e2e-" + uuid.uuid4().hex[:12]
    # One after the other: the first command creates the store's row.
    desktop_keys = create_device(slug, "desktop", desktop_id, desktops)
    terminal_keys = create_device(slug, "terminal", terminal_id, terminals) if terminals else []
    made.append([slug, desktop_keys, terminal_keys])
print("STORES" + json.dumps(made))
"""

Shape = tuple[int, int, str | None, str | None]
DEFAULT_SHAPE: Shape = (1, 1, "POS", "TERM")


class Gateway:
    """A deployment and one server on it, with helpers to make stores and connect devices.

    Stores are made in batches by one Django process (``_MAKE_STORES``); those of the default
    shape a batch ahead, in the background, while tests mostly wait on sockets.
    """

    BATCH = 8

    def __init__(self, deployment: Deployment, server: Server) -> None:
        self.deployment = deployment
        self.server = server
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._ready: deque[Store] = deque()
        self._next: Future[list[Store]] | None = None
        self._lock = threading.Lock()

    def store(
        self,
        *,
        desktops: int = 1,
        terminals: int = 1,
        desktop_id: str | None = "POS",
        terminal_id: str | None = "TERM",
    ) -> Store:
        """A new store with these devices; deviceIds are ``ID`` alone, or ``ID-1`` … ``ID-N``."""
        return self.stores(
            1,
            desktops=desktops,
            terminals=terminals,
            desktop_id=desktop_id,
            terminal_id=terminal_id,
        )[0]

    def stores(
        self,
        count: int,
        *,
        desktops: int = 1,
        terminals: int = 1,
        desktop_id: str | None = "POS",
        terminal_id: str | None = "TERM",
    ) -> list[Store]:
        """``count`` new stores of one shape (see :meth:`store`)."""
        shape = (desktops, terminals, desktop_id, terminal_id)
        if shape != DEFAULT_SHAPE:
            return self._make_stores([shape] * count)
        with self._lock:
            while len(self._ready) < count:
                if self._next is None:
                    self._next = self._pool.submit(self._make_stores, [shape] * self.BATCH)
                self._ready.extend(self._next.result())
                self._next = None
            taken = [self._ready.popleft() for _ in range(count)]
            if len(self._ready) < self.BATCH // 2 and self._next is None:
                self._next = self._pool.submit(self._make_stores, [shape] * self.BATCH)
            return taken

    def _make_stores(self, shapes: list[Shape]) -> list[Store]:
        script = _MAKE_STORES.replace("SHAPES", repr(json.dumps(shapes)))
        lines = self.deployment.manage("shell", "-c", script).stdout.splitlines()
        made = json.loads(next(line for line in lines if line.startswith("STORES"))[6:])
        stores = []
        for (_, terminals, _, terminal_id), (slug, desktop_keys, terminal_keys) in zip(
            shapes, made, strict=True
        ):
            if terminal_id is None:
                ids: list[str | None] = [None] * terminals
            elif terminals == 1:
                ids = [terminal_id]
            else:
                ids = [f"{terminal_id}-{n}" for n in range(1, terminals + 1)]
            stores.append(Store(slug, desktop_keys, terminal_keys, ids))
        return stores

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def connect(
        self, key: str | None, *, header: bool = True, url: str | None = None
    ) -> DeviceClient:
        """Connect and read the ``connected`` frame (failing if anything else comes)."""
        client = await DeviceClient.connect(url or self.server.ws_url, key, header=header)
        _open_clients.append(client)
        frame = await client.recv()
        assert frame.get("action") == "connected", frame
        client.hello = frame
        return client

    async def connect_raw(self, key: str | None, *, header: bool = True, **kw: Any) -> DeviceClient:
        """Connect without reading anything (for refused keys)."""
        client = await DeviceClient.connect(self.server.ws_url, key, header=header, **kw)
        _open_clients.append(client)
        return client


@pytest.fixture
async def close_clients():
    """Close what a test left open, so the servers see a clean goodbye (use it in async tests)."""
    yield
    clients, _open_clients[:] = list(_open_clients), []
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)


@contextlib.contextmanager
def _gateway(**env: str):
    with deployment_for_this_run() as deployment:
        gw = Gateway(deployment, deployment.server(**env))
        try:
            yield gw
        finally:
            gw.close()


@pytest.fixture(scope="session")
def gateway():
    """The main server: default timers, a small MAX_MESSAGE_BYTES to test the limit."""
    with _gateway(MAX_MESSAGE_BYTES="4096") as gw:
        yield gw


@pytest.fixture(scope="session")
def timeout_gateway():
    """A server whose payments time out after 1 s."""
    with _gateway(PAYMENT_TIMEOUT_S="1") as gw:
        yield gw


@pytest.fixture(scope="session")
def heartbeat_gateway():
    """A server with second-scale heartbeat and grace timers."""
    with _gateway(HEARTBEAT_INTERVAL_S="1", HEARTBEAT_TIMEOUT_S="1", RECONNECT_GRACE_S="2") as gw:
        yield gw


@contextlib.asynccontextmanager
async def keep_alive(*clients: Client, every: float = 0.3):
    """Ping in the background, as a real client does, so short heartbeat timers spare it."""

    async def pinger() -> None:
        while True:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.send({"action": "ping"})
            await asyncio.sleep(every)

    task = asyncio.create_task(pinger())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- Protocol steps shared by the e2e modules -----------------------------------------------------


def payment_frame(
    terminal_id: Any, tid: str, amount: Any = "10.00", currency: str = "USD", **request: Any
) -> dict[str, Any]:
    return {
        "action": "payment",
        "terminalId": terminal_id,
        "paymentRequest": {
            "transactionId": tid,
            "amount": amount,
            "currency": currency,
            **request,
        },
    }


def result(tid: str, status: str = "SUCCESS", **extra: Any) -> dict[str, Any]:
    response = {
        "transactionId": tid,
        "status": status,
        "authorizationCode": "AUTH-1" if status == "SUCCESS" else None,
        "errorMessage": None if status == "SUCCESS" else f"{status.lower()} by the terminal",
        **extra,
    }
    return {"action": "paymentResponse", "paymentResponse": response}


async def pay(
    desktop: DeviceClient, terminal: DeviceClient, terminal_id: str, tid: str, **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a payment; returns the desktop's paymentAccepted and the terminal's paymentRequest."""
    await desktop.send(payment_frame(terminal_id, tid, **kw))
    while True:
        accepted = await desktop.recv()
        assert "error" not in accepted, accepted
        if accepted.get("action") == "paymentAccepted":
            break
    assert accepted["transactionId"] == tid
    forwarded = await terminal.recv_action("paymentRequest")
    assert forwarded["paymentRequest"]["transactionId"] == tid
    return accepted, forwarded


async def finish(
    desktop: DeviceClient, terminal: DeviceClient, tid: str, status: str = "SUCCESS"
) -> dict[str, Any]:
    """The terminal answers; returns the desktop's paymentComplete."""
    await terminal.send(result(tid, status))
    return await desktop.recv_action("paymentComplete", transactionId=tid)


async def transaction_status(desktop: DeviceClient, tid: str) -> dict[str, Any]:
    return await desktop.request(
        {"action": "getTransactionStatus", "transactionId": tid}, "transactionStatus"
    )


async def status_update(desktop: DeviceClient, status: str, timeout: float = 10) -> dict[str, Any]:
    """The next terminalStatusUpdate with this status, skipping earlier ones."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        update = await desktop.recv_action(
            "terminalStatusUpdate", timeout=max(0.01, deadline - loop.time())
        )
        if update["terminal"]["status"] == status:
            return update
