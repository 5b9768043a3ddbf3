"""When the parts the gateway depends on fail (issue 8): Redis, and the database.

Each test breaks a dependency of real daphne processes for real: it stops the test's own
redis-server, closes the PostgreSQL database to connections, or holds a lock on it (SQLite's
write lock on the embedded default). Then it shows what devices and operators notice: sockets
stay open and answer pings, a payment accepted while Redis is down reaches its terminal when it
is back, an action that needs the database while it is down gets `Service Unavailable` /
`Database unavailable, try again shortly`, `/healthz` says 503 and names the part,
the log has one warning per process and no traceback, and nothing is half-written. Once the
part is back the same processes serve again, with no restart: they catch up on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest

from tests.e2e.conftest import (
    DeviceClient,
    Gateway,
    pay,
    payment_frame,
    result,
    transaction_status,
)
from tests.e2e.harness import Deployment, Server, deployment_for_this_run, production_deployment
from tests.e2e.postgres import private_postgres
from tests.e2e.test_chaos import own_redis, pay_across

# server_dependent: Redis and the database failing under running servers: their sockets must
# stay open and their own log must hold one warning and no traceback.
pytestmark = [pytest.mark.e2e, pytest.mark.server_dependent]

TRACEBACK = "Traceback (most recent call last)"


# --- Helpers -------------------------------------------------------------------------------------


async def health_becomes(server: Server, status: int, timeout: float = 20) -> dict[str, Any]:
    """Poll /healthz until it answers ``status``; returns its body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        code, body = await asyncio.to_thread(server.healthz)
        if code == status:
            return body
        assert loop.time() < deadline, f"/healthz still {code} {body} after {timeout} s"
        await asyncio.sleep(0.2)


class LogSince:
    """A server's log from now on (each process appends to its own file)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.offset = len(server.log())

    def text(self) -> str:
        return self.server.log()[self.offset :]

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.text().splitlines() if needle in line]


async def logged(log: LogSince, needle: str, poke: Server, timeout: float = 20) -> list[str]:
    """Wait for a line (a part is "back" at its first success after 5 quiet seconds:
    /healthz is asked meanwhile, as a load balancer would)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := log.lines(needle)):
        assert loop.time() < deadline, f"no {needle!r} in the log:\n{log.text()[-3000:]}"
        await asyncio.to_thread(poke.healthz)
        await asyncio.sleep(0.5)
    return found


def assert_one_warning(log: LogSince, part: str) -> None:
    """The outage is one warning line in this process's log, and there is no traceback."""
    text = log.text()
    assert TRACEBACK not in text, text[-5000:]
    warnings = log.lines(f"WARNING posgateway.health {part} unavailable")
    assert len(warnings) == 1, "\n".join(warnings) or text[-3000:]


async def completes(desktop: DeviceClient, tids: set[str], timeout: float = 20) -> dict[str, str]:
    """The paymentComplete frames for these transactionIds, in any order: {tid: status}."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: dict[str, str] = {}
    while set(seen) != tids:
        frame = await desktop.recv_action("paymentComplete", max(0.01, deadline - loop.time()))
        if frame["transactionId"] in tids:
            seen[frame["transactionId"]] = frame["paymentResponse"]["status"]
            await desktop.send({"action": "ack", "seq": frame["seq"]})
    return seen


async def forwarded(terminal: DeviceClient, seconds: float = 0.5) -> list[dict[str, Any]]:
    return [f for f in await terminal.quiet_for(seconds) if f.get("action") == "paymentRequest"]


HALF_WRITTEN = """
import json
from django.db import connection
from django.db.models import Count
from payments.models import Transaction
txns = Transaction.objects.filter(group__slug={slug!r})
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT count(*) FROM payments_transactionevent e "
        "LEFT JOIN payments_transaction t ON t.id = e.transaction_id WHERE t.id IS NULL"
    )
    orphans = cursor.fetchone()[0]
print(json.dumps({{
    "stored": dict(txns.values_list("transaction_id", "status")),
    "without_events": sorted(
        txns.annotate(n=Count("events")).filter(n=0).values_list("transaction_id", flat=True)
    ),
    "events_without_transaction": orphans,
}}))
"""


def stored(deployment: Deployment, slug: str) -> dict[str, Any]:
    """What the database holds for a store: every transaction and its status, and anything
    half-written (a transaction without its events, an event without its transaction)."""
    out = deployment.manage("shell", "-c", HALF_WRITTEN.format(slug=slug)).stdout
    return json.loads(out.strip().splitlines()[-1])


def assert_nothing_half_written(deployment: Deployment, slug: str) -> dict[str, str]:
    found = stored(deployment, slug)
    assert found["without_events"] == [], found
    assert found["events_without_transaction"] == 0, found
    return found["stored"]


async def pay_on(desktop: DeviceClient, terminal: DeviceClient, terminal_id: str, tid: str):
    """A whole payment on this terminal: accepted, forwarded, approved, completed."""
    _, request = await pay(desktop, terminal, terminal_id, tid)
    assert not request.get("resent"), request
    await terminal.send(result(tid))
    assert await completes(desktop, {tid}) == {tid: "SUCCESS"}


SERVICE_UNAVAILABLE = {
    "error": "Service Unavailable",
    "message": "Database unavailable, try again shortly",
}


def refused(action: str, tid: str) -> dict[str, str]:
    """What a frame gets while the database can't be used: nothing was stored, send it again."""
    return {**SERVICE_UNAVAILABLE, "requestAction": action, "transactionId": tid}


# --- Redis --------------------------------------------------------------------------------------


# Its own PostgreSQL + Redis deployment whichever pass runs: once, in the PostgreSQL pass.
@pytest.mark.production_pass_only
@pytest.mark.timeout(150)
async def test_redis_down_keeps_sockets_open_and_the_gateway_recovers_on_its_own(
    tmp_path, close_clients
):
    """Redis stops under two processes: sockets stay open and answer, a payment across the
    processes is accepted and waits for Redis, /healthz says 503 degraded channelLayer. Redis
    back: the terminal gets the waiting payment once, the same processes and sockets catch up
    and pay across processes again."""
    with (
        own_redis(tmp_path) as redis,
        production_deployment(redis_url=redis.url) as deployment,
    ):
        a, b = deployment.server(), deployment.server()
        pids = (a.proc.pid, b.proc.pid)
        gw = Gateway(deployment, a)
        store = gw.store()
        gw.close()
        desktop = await gw.connect(store.desktop)  # on process a
        terminal = await gw.connect(store.terminal, url=b.ws_url)  # on process b
        await pay_across(desktop, terminal, "before-outage")
        await pay(desktop, terminal, "TERM", "in-flight")  # the terminal is paying it
        logs = [LogSince(a), LogSince(b)]

        await asyncio.to_thread(redis.stop)
        for server in (a, b):
            body = await health_becomes(server, 503)
            assert (body["status"], body["channelLayer"], body["database"]) == (
                "degraded",
                "error",
                "ok",
            ), body
        # Both sockets are still open and answer: a ping needs no Redis.
        await desktop.ping()
        await terminal.ping()
        # The terminal's result is stored; its push to the other process must wait.
        await terminal.send(result("in-flight"))
        await terminal.ping()  # handled: frames of one socket are handled in order
        assert (await transaction_status(desktop, "in-flight"))["status"] == "SUCCESS"
        # A payment across the processes can't be handed to the terminal's process: it is
        # accepted as usual (the outage is the gateway's to ride out) and stays in flight.
        await desktop.send(payment_frame("TERM", "during-outage"))
        accepted = await desktop.recv_action("paymentAccepted")
        assert accepted["transactionId"] == "during-outage", accepted
        assert (await transaction_status(desktop, "during-outage"))["status"] == "IN_PROGRESS"
        assert await forwarded(terminal) == []
        body = (await asyncio.to_thread(a.healthz))[1]
        assert body.get("forwardsWaiting") == 1, body

        await asyncio.to_thread(redis.start)
        # The waiting payment reaches the terminal once (retried by a sweep, or re-sent by
        # the terminal's catch-up: whichever comes first; the socket drops the other).
        request = await terminal.recv_action("paymentRequest")
        assert request["paymentRequest"]["transactionId"] == "during-outage", request
        await terminal.send(result("during-outage"))
        for server in (a, b):
            await health_becomes(server, 200)
        assert (a.proc.poll(), b.proc.poll()) == (None, None)
        assert (a.proc.pid, b.proc.pid) == pids  # no restart
        # The same desktop socket, never closed, gets the results it missed ...
        assert await completes(desktop, {"in-flight", "during-outage"}) == {
            "in-flight": "SUCCESS",
            "during-outage": "SUCCESS",
        }
        assert await forwarded(terminal) == []  # sent once
        # ... and pays across the processes again, as does a new pair the other way round.
        await pay_across(desktop, terminal, "after-outage-1")
        await desktop.close()
        await terminal.close()
        desktop = await gw.connect(store.desktop, url=b.ws_url)
        terminal = await gw.connect(store.terminal)
        await pay_across(desktop, terminal, "after-outage-2")

        # The log: one warning per process for the whole outage, the refused forward in one
        # line with its transactionId (and its retries), no traceback; and a line when Redis
        # is back.
        for log in logs:
            await logged(log, "channel layer is back after", log.server)
            assert_one_warning(log, "channel layer")
        sent = logs[0].lines("paymentRequest transactionId=during-outage to")
        assert [line for line in sent if "WARNING posgateway.realtime" in line] != [], sent
        print(f"\nRedis outage, process a: {logs[0].lines('posgateway.health')}")
        assert_nothing_half_written(deployment, store.slug)


# --- The database --------------------------------------------------------------------------------


def _admin_url(deployment: Deployment) -> tuple[str, str]:
    """The server's maintenance database URL, and the deployment's own database name."""
    parsed = urlparse(deployment.env["DATABASE_URL"])
    return urlunparse(parsed._replace(path="/postgres")), parsed.path.lstrip("/")


def close_database(deployment: Deployment, closed: bool) -> None:
    """PostgreSQL refuses new connections to the deployment's database and ends its open
    ones (``closed``), or takes them again."""
    import psycopg

    admin, name = _admin_url(deployment)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if closed else "true"}')
        if closed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


@dataclass
class Devices:
    """A store's desktop, and two terminals: TERM-1 is busy with a payment, TERM-2 is idle."""

    slug: str
    desktop: DeviceClient
    busy: DeviceClient
    idle: DeviceClient


async def devices(gw: Gateway, terminal_url: str) -> Devices:
    store = gw.store(terminals=2)
    gw.close()
    found = Devices(
        store.slug,
        await gw.connect(store.desktop),
        await gw.connect(store.terminal_keys[0], url=terminal_url),
        await gw.connect(store.terminal_keys[1], url=terminal_url),
    )
    await pay_on(found.desktop, found.idle, "TERM-2", "before-outage")
    await pay(found.desktop, found.busy, "TERM-1", "in-flight")
    return found


async def refused_while_down(pos: Devices) -> None:
    """What the devices see while the database can't be written: sockets open and answering,
    every step that writes refused, nothing forwarded or pushed."""
    await pos.desktop.ping()
    await pos.busy.ping()
    await pos.desktop.send(payment_frame("TERM-2", "during-outage"))
    assert await pos.desktop.recv_error() == refused("payment", "during-outage")
    await pos.busy.send(result("in-flight"))
    assert await pos.busy.recv_error() == refused("paymentResponse", "in-flight")
    assert await forwarded(pos.idle) == []
    assert [f for f in await pos.desktop.quiet_for(0.3) if "action" in f] == []
    await pos.desktop.ping()


async def retried_once_back(pos: Devices, deployment: Deployment) -> None:
    """The refused payment was never stored and the refused result not recorded: both are
    sent again on the same sockets and go through; nothing in the database is half-written."""
    await pos.desktop.send({"action": "getTransactionStatus", "transactionId": "during-outage"})
    assert (await pos.desktop.recv_error())["message"] == "Transaction not found"
    assert (await transaction_status(pos.desktop, "in-flight"))["status"] == "IN_PROGRESS"
    await pos.busy.send(result("in-flight"))
    assert await completes(pos.desktop, {"in-flight"}) == {"in-flight": "SUCCESS"}
    await pay_on(pos.desktop, pos.idle, "TERM-2", "during-outage")
    assert await asyncio.to_thread(assert_nothing_half_written, deployment, pos.slug) == {
        "before-outage": "SUCCESS",
        "in-flight": "SUCCESS",
        "during-outage": "SUCCESS",
    }


# Its own PostgreSQL + Redis deployment whichever pass runs: once, in the PostgreSQL pass.
@pytest.mark.production_pass_only
@pytest.mark.timeout(150)
async def test_database_down_is_service_unavailable_and_nothing_is_half_written(
    tmp_path, close_clients
):
    """PostgreSQL closes the gateway's database under two processes: sockets stay open,
    actions get `Service Unavailable`, nothing is stored or forwarded, /healthz says 503
    database. Open again: the same processes serve, and the refused steps can be retried."""
    with (
        own_redis(tmp_path) as redis,
        production_deployment(redis_url=redis.url) as deployment,
    ):
        a, b = deployment.server(), deployment.server()
        pos = await devices(Gateway(deployment, a), b.ws_url)  # desktop on a, terminals on b
        logs = [LogSince(a), LogSince(b)]

        await asyncio.to_thread(close_database, deployment, True)
        try:
            for server in (a, b):
                body = await health_becomes(server, 503)
                assert (body["database"], body["channelLayer"]) == ("error", "ok"), body
            await refused_while_down(pos)
        finally:
            await asyncio.to_thread(close_database, deployment, False)

        for server in (a, b):
            await health_becomes(server, 200)
        await retried_once_back(pos, deployment)
        for log in logs:
            await logged(log, "database is back after", log.server)
            assert_one_warning(log, "database")
        print(f"\ndatabase outage, process a: {logs[0].lines('posgateway.health')}")


@contextlib.contextmanager
def database_locked(deployment: Deployment) -> Iterator[None]:
    """Hold a lock that stops the gateway writing payments, from another connection.

    SQLite: the write lock of the whole file (BEGIN EXCLUSIVE). PostgreSQL: the event table
    (ACCESS EXCLUSIVE), so a payment's own row could be written but not its events: only a
    transaction that is all or nothing leaves no trace.
    """
    url = deployment.env["DATABASE_URL"]
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///") :], timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE payments_transactionevent IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


@pytest.mark.timeout(150)
async def test_a_locked_database_is_service_unavailable_and_nothing_is_half_written(
    close_clients,
):
    """Another connection holds the database's lock longer than DB_LOCK_TIMEOUT_S: the
    gateway answers `Service Unavailable` instead of hanging, keeps the sockets, says
    503 database, writes nothing; released, it serves again (SQLite or PostgreSQL, whichever
    this run uses)."""
    with deployment_for_this_run(DB_LOCK_TIMEOUT_S="1") as deployment:
        server = deployment.server()
        pos = await devices(Gateway(deployment, server), server.ws_url)
        log = LogSince(server)

        with database_locked(deployment):
            body = await health_becomes(server, 503)
            assert (body["database"], body["channelLayer"]) == ("error", "ok"), body
            await refused_while_down(pos)
            assert (await asyncio.to_thread(server.healthz))[0] == 503

        await health_becomes(server, 200)
        await retried_once_back(pos, deployment)
        await logged(log, "database is back after", server)
        assert_one_warning(log, "database")
        print(f"\nlocked database: {log.lines('posgateway.health')}")


# --- A PostgreSQL restart under load ------------------------------------------------------------

PG_PAIRS = 4
PG_TIMEOUT_S = 20


async def accepted_or_error(desktop: DeviceClient, timeout: float = 20) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await desktop.recv(max(0.01, deadline - loop.time()))
        if frame.get("action") == "paymentAccepted" or "error" in frame:
            return frame


@dataclass
class PgPair:
    """A desktop paying in a loop and its terminal answering SUCCESS, on one server."""

    desktop: DeviceClient
    terminal: DeviceClient
    n: int = 0
    accepted: set[str] = field(default_factory=set)
    results: dict[str, list[str]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    unavailable: int = 0
    other_errors: list[dict[str, Any]] = field(default_factory=list)

    async def pay_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.n += 1
            tid = f"pg-{self.n:04d}"
            while True:  # the same payment again until it is accepted: idempotent
                await self.desktop.send(payment_frame("TERM", tid))
                reply = await accepted_or_error(self.desktop)
                if "error" not in reply:
                    break
                if reply["error"] != "Service Unavailable":
                    self.other_errors.append(reply)
                    return
                self.unavailable += 1
                await asyncio.sleep(0.2)
            self.accepted.add(tid)
            complete = await self.desktop.recv_action("paymentComplete", PG_TIMEOUT_S + 10)
            self.results.setdefault(complete["transactionId"], []).append(
                complete["paymentResponse"]["status"]
            )
            await self.desktop.send({"action": "ack", "seq": complete["seq"]})

    async def answer(self) -> None:
        """The terminal: answers each request once, and sends its answer again while the
        gateway says Service Unavailable (nothing was recorded)."""
        while True:
            frame = await self.terminal.recv(3600)
            if frame.get("action") == "paymentRequest":
                tid = frame["paymentRequest"]["transactionId"]
                self.requests[tid] += 1
                await asyncio.sleep(0.05)
                await self.terminal.send(result(tid))
            elif frame.get("error") == "Service Unavailable":
                self.unavailable += 1
                await asyncio.sleep(0.2)
                await self.terminal.send(result(frame["transactionId"]))
            elif "error" in frame:
                self.other_errors.append(frame)


# Its own PostgreSQL + Redis deployment whichever pass runs: once, in the PostgreSQL pass.
@pytest.mark.production_pass_only
@pytest.mark.timeout(150)
async def test_a_postgresql_restart_under_load_fails_no_payment(close_clients):
    """The test's own PostgreSQL is restarted under payments on two processes: frames that
    arrive meanwhile get `Service Unavailable` and are sent again, nothing is half-written,
    the processes reconnect on their own, and every payment ends SUCCESS with its result
    delivered once; no terminal gets a request twice."""
    with (
        private_postgres() as pg,
        production_deployment(
            postgres_server_url=pg.url,
            PAYMENT_TIMEOUT_S=str(PG_TIMEOUT_S),
            SWEEP_INTERVAL_S="0.2",
            DB_LOCK_TIMEOUT_S="2",
        ) as deployment,
    ):
        a, b = deployment.server(), deployment.server()
        pids = (a.proc.pid, b.proc.pid)
        gw = Gateway(deployment, a)
        stores = gw.stores(PG_PAIRS)
        gw.close()
        pairs = []
        for i, store in enumerate(stores):  # desktops and terminals on both processes
            desktop_url, terminal_url = (a.ws_url, b.ws_url) if i % 2 else (b.ws_url, a.ws_url)
            pairs.append(
                PgPair(
                    await gw.connect(store.desktop, url=desktop_url),
                    await gw.connect(store.terminal, url=terminal_url),
                )
            )
        logs = [LogSince(a), LogSince(b)]
        stop = asyncio.Event()
        terminals = [asyncio.create_task(p.answer()) for p in pairs]
        desktops = [asyncio.create_task(p.pay_until(stop)) for p in pairs]
        try:
            await asyncio.sleep(2)
            before = sum(p.n for p in pairs)
            await asyncio.to_thread(pg.stop, "fast")
            await asyncio.sleep(2)
            await asyncio.to_thread(pg.start)
            await asyncio.sleep(2)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*desktops), PG_TIMEOUT_S + 20)
        finally:
            stop.set()
            for task in [*desktops, *terminals]:
                task.cancel()
            await asyncio.gather(*desktops, *terminals, return_exceptions=True)

        for server in (a, b):
            await health_becomes(server, 200)
        assert (a.proc.poll(), b.proc.poll()) == (None, None)
        assert (a.proc.pid, b.proc.pid) == pids  # reconnected on their own
        unavailable = sum(p.unavailable for p in pairs)
        print(
            f"\nPostgreSQL restart: {sum(p.n for p in pairs)} payments ({before} before the "
            f"stop), Service Unavailable answered {unavailable} times"
        )
        assert unavailable > 0  # the restart was met
        assert [e for p in pairs for e in p.other_errors] == []
        for store, pair in zip(stores, pairs, strict=True):
            found = await asyncio.to_thread(assert_nothing_half_written, deployment, store.slug)
            assert set(found) == pair.accepted
            assert set(found.values()) == {"SUCCESS"}, found  # no FAILED, no TIMEOUT
            # Each result delivered, once.
            assert pair.results == {tid: ["SUCCESS"] for tid in pair.accepted}
            assert [tid for tid, n in pair.requests.items() if n > 1] == []  # no double send
        for log in logs:
            assert TRACEBACK not in log.text(), log.text()[-5000:]
