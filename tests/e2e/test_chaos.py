"""Payments under faults (issue 3, "Proven under faults"; issue 20, blips the store never notices).

The chaos test runs thousands of payments, and refunds of some of them, over two daphne
processes sharing PostgreSQL and the test's own redis-server, while sockets are cut, one process
is killed and Redis is stopped for 3 s (less than the payment deadline); then it checks, in the
database and against what every client saw, that nothing was lost, doubled or left hanging, no
payment failed by the outage (none FAILED, none a terminal would have answered timed out), no
terminal got a request twice on one connection, and that no payment's refunds add up to more
than it unless a late success explains it. A shorter test shows the gateway serving again
after PostgreSQL (or SQLite) refused a query; test_dependencies.py has Redis and the database
going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import re
import shutil
import socket
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.e2e.conftest import DeviceClient, finish, pay, payment_frame
from tests.e2e.harness import Deployment, Server, free_port, production_deployment
from tests.services import missing

# server_dependent: server processes killed and restarted on their port, sockets cut
# mid-payment, Redis restarted under them: what each server does with its sockets and its log.
pytestmark = [pytest.mark.e2e, pytest.mark.server_dependent]

Frame = dict[str, Any]

FAILED_TO_PROCESS = {"error": "Internal Server Error", "message": "Failed to process message"}
FINAL = {"SUCCESS", "DECLINED", "FAILED", "CANCELLED", "TIMEOUT"}
EXCEEDS = "amount exceeds the refundable amount"


# --- A redis-server of the test's own, to stop and start at will --------------------------------


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"redis-{self.port}.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        with self.log_path.open("ab") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def _spawn(self, log: Any) -> subprocess.Popen:
        return subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


def restart(server: Server) -> Server:
    """A new daphne on the same port and deployment, as a supervisor restarts a dead one."""
    again = Server(server.deployment, port=server.port, **server.env).start()
    server.deployment.servers.append(again)
    return again


def query(deployment: Deployment, sql: str, *params: Any) -> list[tuple]:
    import psycopg

    with psycopg.connect(deployment.env["DATABASE_URL"], autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


# --- Server logs ---------------------------------------------------------------------------------

LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) ")
ACCESS_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+:\d+ - - \[")


def tracebacks(log: str) -> list[tuple[float | None, str]]:
    """Every logged traceback: the time of the record it belongs to, and the record's text."""
    found: list[tuple[float | None, str]] = []
    record: list[str] = []
    stamp: float | None = None

    def close() -> None:
        text = "\n".join(record)
        if "Traceback (most recent call last)" in text:
            found.append((stamp, text))

    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match or ACCESS_LINE.match(line):
            close()
            record = [line]
            stamp = (
                dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if match
                else None
            )
        else:
            record.append(line)
    close()
    return found


def is_redis_outage(text: str) -> bool:
    return "redis.exceptions.ConnectionError" in text or "redis.exceptions.TimeoutError" in text


# --- Devices that reconnect --------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.started = 0
        self.target = 0
        self.drops = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.closes: Counter[int | None] = Counter()
        # Redis outage window (wall clock), once the chaos task has restarted Redis.
        self.outage: tuple[float, float] | None = None
        self.unexpected: list[str] = []

    def more(self) -> bool:
        return self.started < self.target


class Peer:
    """One device: a socket to either process, replaced by a new one whenever it is lost."""

    ping_every = 0.8
    silent_limit = 3.0

    def __init__(
        self,
        key: str,
        *,
        store: str,
        device_id: str,
        urls: list[str],
        first_url: str,
        rng: random.Random,
        stats: Stats,
    ) -> None:
        self.name = f"{store}/{device_id}"
        self.key = key
        self.store = store
        self.device_id = device_id
        self.urls = urls
        self.first_url = first_url
        self.rng = rng
        self.stats = stats
        self.ws: websockets.ClientConnection | None = None
        self.generation = 0
        self.up = asyncio.Event()
        self.lost = asyncio.Event()
        self.stopping = False
        self.errors: list[tuple[float, Frame]] = []
        self.waiters: list[tuple[Callable[[Frame], bool], asyncio.Future]] = []
        self.last_frame = 0.0
        self.last_sent = 0.0
        self.hello: Frame = {}
        self.connections: list[str] = []
        self.lost_at = 0.0

    # Hooks for desktops and terminals.
    def on_connected(self) -> None: ...

    def on_frame(self, frame: Frame) -> None: ...

    async def run(self) -> None:
        while not self.stopping:
            url = self.first_url if self.generation == 0 else self.rng.choice(self.urls)
            try:
                ws = await asyncio.wait_for(
                    websockets.connect(
                        url,
                        additional_headers={"Authorization": f"Bearer {self.key}"},
                        open_timeout=3,
                        close_timeout=1,
                        ping_interval=None,
                        max_size=None,
                    ),
                    4,
                )
            except Exception:
                self.stats.connect_failures += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
                continue
            try:
                hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            except Exception:
                self.stats.closes[ws.close_code] += 1
                with contextlib.suppress(Exception):
                    ws.transport.abort()
                await asyncio.sleep(self.rng.uniform(0.05, 0.2))
                continue
            if hello.get("action") != "connected":
                self.stats.unexpected.append(f"{self.name}: {hello} instead of connected")
                await ws.close()
                continue
            await self._serve(ws, hello)
            if not self.stopping:
                await asyncio.sleep(self.rng.uniform(0.01, 0.1))

    async def _serve(self, ws: websockets.ClientConnection, hello: Frame) -> None:
        hello_at = f"{dt.datetime.now():%H:%M:%S.%f}"
        self.hello = hello
        self.ws = ws
        self.generation += 1
        if self.generation > 1:
            self.stats.reconnects += 1
        self.lost = asyncio.Event()
        self.last_frame = time.monotonic()
        self.on_connected()
        self.up.set()
        pinger = asyncio.create_task(self._ping(ws))
        try:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for raw in ws:
                    self.last_frame = time.monotonic()
                    frame = json.loads(raw)
                    if "error" in frame:
                        self.errors.append((time.time(), frame))
                    self.on_frame(frame)
                    for waiter in list(self.waiters):
                        predicate, future = waiter
                        if not future.done() and predicate(frame):
                            future.set_result(frame)
                            self.waiters.remove(waiter)
        except Exception as exc:  # a bug of this test's own: say so, keep going
            self.stats.unexpected.append(f"{self.name}: {exc!r}")
        finally:
            pinger.cancel()
            self.up.clear()
            self.ws = None
            self.stats.closes[ws.close_code] += 1
            self.connections.append(
                f"{self.generation}: {hello_at} {self.hello.get('connectionId')} "
                f"..{dt.datetime.now():%H:%M:%S.%f} {ws.close_code}"
            )
            for _, future in self.waiters:
                if not future.done():
                    future.set_exception(ConnectionError("connection lost"))
            self.waiters.clear()
            self.lost_at = time.monotonic()
            self.lost.set()

    async def _ping(self, ws: websockets.ClientConnection) -> None:
        """Ping when otherwise quiet, as a real client does; give up a socket silent too long."""
        self.last_sent = 0.0
        while True:
            if time.monotonic() - self.last_sent >= self.ping_every:
                self.last_sent = time.monotonic()
                with contextlib.suppress(Exception):
                    await ws.send('{"action":"ping"}')
            await asyncio.sleep(self.ping_every / 2)
            if time.monotonic() - self.last_frame > self.silent_limit:
                ws.transport.abort()
                return

    async def send(self, frame: Frame) -> None:
        ws = self.ws
        if ws is None:
            raise ConnectionError("not connected")
        self.last_sent = time.monotonic()
        try:
            await ws.send(json.dumps(frame))
        except websockets.ConnectionClosed as exc:
            raise ConnectionError("connection lost") from exc

    def send_soon(self, frame: Frame) -> None:
        async def send() -> None:
            with contextlib.suppress(ConnectionError):
                await self.send(frame)

        asyncio.get_running_loop().create_task(send())

    async def request(
        self, frame: Frame, answers: Callable[[Frame], bool], timeout: float = 5
    ) -> Frame:
        future = asyncio.get_running_loop().create_future()
        waiter = (answers, future)
        self.waiters.append(waiter)
        try:
            await self.send(frame)
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def abort(self, *, chaos: bool = True) -> bool:
        """Cut the TCP connection without a close frame, as a network failure does."""
        ws = self.ws
        if ws is None:
            return False
        ws.transport.abort()
        self.stats.drops += chaos
        return True

    async def stop(self) -> None:
        self.stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)


ANSWERS = ("paymentAccepted", "paymentComplete", "refundAccepted", "refundComplete")


def payment_answer(reply_to: str) -> Callable[[Frame], bool]:
    """What answers a payment's (or a refund's) request, or a status request about it."""

    def answers(frame: Frame) -> bool:
        if frame.get("transactionId") != reply_to:
            return False
        if "error" in frame:
            return frame.get("requestAction") in ("payment", "refund", "getTransactionStatus")
        return frame.get("action") in (*ANSWERS, "transactionStatus")

    return answers


def outcome(frame: Frame) -> Frame:
    """A paymentComplete's paymentResponse, a refundComplete's refundResponse."""
    return frame.get("paymentResponse") or frame["refundResponse"]


# Of the transactions a desktop starts, this share are refunds of its own successful payments.
REFUND_SHARE = 0.12


class Desktop(Peer):
    """A POS: pays in a loop, now and then refunds one of its successful payments (a refund
    that does not fit is refused: that is its result), never gives a payment up, acks results
    it has without gaps."""

    def __init__(self, *args: Any, terminal_id: str, payment_timeout: float, **kw: Any):
        super().__init__(*args, **kw)
        self.terminal_id = terminal_id
        self.payment_timeout = payment_timeout
        self.results: dict[str, list[Frame]] = defaultdict(list)
        self.status_results: dict[str, str] = {}
        self.done: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.started: list[str] = []
        self.seqs: set[int] = set()
        self.contiguous = 0
        self.acked = 0
        self.in_backlog = False
        self.ack_pending = False
        self.redeliveries = 0
        self.duplicate_accepts = 0
        self.abandoned: list[str] = []
        self.amounts: dict[str, str] = {}
        self.paid: list[str] = []  # its successful payments, to refund
        self.refunds: dict[str, tuple[str, str | None]] = {}  # tid: (payment, amount asked)
        self.refused: dict[str, Frame] = {}  # refunds that did not fit, with the error
        self.started_at: dict[str, float] = {}  # wall clock, for the outage's accounting

    def on_connected(self) -> None:
        # Frames before the first pong are the gateway's redelivery of unacknowledged results.
        self.in_backlog = True
        self.acked = 0

    def on_frame(self, frame: Frame) -> None:
        action = frame.get("action")
        if action == "pong":
            self.in_backlog = False
            self._ack()
        elif action in ("paymentComplete", "refundComplete"):
            seq = frame["seq"]
            if self.in_backlog or seq in self.seqs:
                self.redeliveries += 1
            self.seqs.add(seq)
            self.results[frame["transactionId"]].append(frame)
            self.done[frame["transactionId"]].set()
            while self.contiguous + 1 in self.seqs:
                self.contiguous += 1
            self._ack()

    def _ack(self) -> None:
        # "ack N" acknowledges everything up to N: only ever ack what arrived without a gap.
        # Acks go out at most once a second, covering whatever arrived meanwhile.
        if self.contiguous > self.acked and self.ws is not None and not self.ack_pending:
            self.ack_pending = True
            asyncio.get_running_loop().call_later(1, self._send_ack)

    def _send_ack(self) -> None:
        self.ack_pending = False
        if self.contiguous > self.acked and self.ws is not None:
            self.acked = self.contiguous
            self.send_soon({"action": "ack", "seq": self.contiguous})

    async def pay_loop(self) -> None:
        n = 0
        while self.stats.more() and not self.stopping:
            n += 1
            if self.paid and self.rng.random() < REFUND_SHARE:
                await self.refund_some(n)
                continue
            # S: approved, D: declined, T: never answered, L: answered late, C: cancelled.
            kind = self.rng.choices("SDTLC", weights=[84, 8, 3, 2, 3])[0]
            tid = f"{self.device_id}.{n:04d}{kind}"
            self.stats.started += 1
            self.started.append(tid)
            await self.one_payment(tid, kind)
            if self.final_status(tid) == "SUCCESS":
                self.paid.append(tid)

    def final_status(self, tid: str) -> str | None:
        if tid in self.status_results:
            return self.status_results[tid]
        frames = self.results.get(tid)
        return outcome(max(frames, key=lambda f: f["seq"]))["status"] if frames else None

    async def refund_some(self, n: int) -> None:
        """Refund one of its recent successful payments: part of it, what is left of it, or
        more than it (refused). The terminal answers by the kind, as for payments; after one
        answered late (L: after its timeout), what is left is refunded at once, so that the
        late success takes the refunds over the payment (recorded, and flagged)."""
        payment = self.rng.choice(self.paid[-4:])
        paid = Decimal(self.amounts[payment])
        pick = self.rng.random()
        if pick < 0.2:
            amount = None  # what is left
        elif pick < 0.3:
            amount = f"{paid + Decimal('0.01'):.2f}"  # more than the payment
        else:
            amount = f"{Decimal(self.rng.randint(1, max(1, int(paid * 60)))) / 100:.2f}"
        kind = self.rng.choices("SDTL", weights=[84, 8, 2, 6])[0]
        tid = f"{self.device_id}.{n:04d}R{kind}"
        await self.one_refund(tid, payment, amount)
        if kind == "L" and tid not in self.refused:
            await self.one_refund(f"{self.device_id}.{n:04d}RFS", payment, None)

    async def one_refund(self, tid: str, payment: str, amount: str | None) -> None:
        request = {"transactionId": tid, "originalTransactionId": payment}
        if amount is not None:
            request["amount"] = amount
        self.refunds[tid] = (payment, amount)
        self.stats.started += 1
        self.started.append(tid)
        frame = {"action": "refund", "terminalId": self.terminal_id, "refundRequest": request}
        await self.one_payment(tid, tid[-1], frame)
        if tid in self.refused:
            self.started.remove(tid)  # never stored

    async def one_payment(self, tid: str, kind: str, frame: Frame | None = None) -> None:
        """Start a payment (or the refund ``frame``) and see it through to its result."""
        loop = asyncio.get_running_loop()
        if frame is None:
            self.amounts[tid] = f"{self.rng.randint(1, 99999) / 100:.2f}"
            frame = {
                "action": "payment",
                "terminalId": self.terminal_id,
                "paymentRequest": {
                    "transactionId": tid,
                    "amount": self.amounts[tid],
                    "currency": "EUR",
                    "paymentMethod": "CARD",
                },
            }
        give_up = loop.time() + 45
        self.started_at.setdefault(tid, time.time())
        stored = False
        ask_status = False
        cancel_sent = False
        while not self.done[tid].is_set() and tid not in self.status_results:
            if loop.time() > give_up:
                self.abandoned.append(tid)
                return
            try:
                await asyncio.wait_for(self.up.wait(), 10)
            except TimeoutError:
                continue
            lost = self.lost
            if stored and (ask_status or self.rng.random() < 0.5):
                outgoing: Frame = {"action": "getTransactionStatus", "transactionId": tid}
            else:
                outgoing = frame  # the same payment again: the gateway is idempotent on it
            ask_status = False
            try:
                reply = await self.request(outgoing, payment_answer(tid))
            except (ConnectionError, TimeoutError):
                continue
            if "error" in reply:
                if reply.get("message") == EXCEEDS and reply.get("requestAction") == "refund":
                    self.refused[tid] = reply  # a refund that does not fit: its final answer
                    return
                if reply.get("message") == "Transaction not found":
                    stored = False  # never stored: pay again
                elif reply.get("message") != "Terminal connection not found" and not (
                    reply["error"] == FAILED_TO_PROCESS["error"]
                    and reply["message"] == FAILED_TO_PROCESS["message"]
                ):
                    self.stats.unexpected.append(f"{self.name} {tid}: {reply}")
                await asyncio.sleep(0.1)
                continue
            stored = True
            if reply["action"] in ("paymentComplete", "refundComplete"):
                break
            if reply["action"] == "transactionStatus":
                if reply["status"] in FINAL:
                    self.status_results[tid] = reply["status"]
                    break
            elif reply.get("duplicate"):
                self.duplicate_accepts += 1
            if kind == "C" and not cancel_sent:
                with contextlib.suppress(ConnectionError, TimeoutError):
                    answer = await self.request(
                        {"action": "cancelPayment", "transactionId": tid},
                        lambda f: (
                            f.get("transactionId") == tid
                            and f.get("action") in ("cancelRequested", "paymentComplete")
                        ),
                    )
                    cancel_sent = answer.get("forwarded", True)
            done = asyncio.ensure_future(self.done[tid].wait())
            gone = asyncio.ensure_future(lost.wait())
            finished, _ = await asyncio.wait(
                [done, gone],
                timeout=self.payment_timeout + 3,
                return_when=asyncio.FIRST_COMPLETED,
            )
            done.cancel()
            gone.cancel()
            if not finished:
                ask_status = True  # no result in time: ask for it


class Terminal(Peer):
    """A payment terminal: answers payments and refunds by the kind their transactionId ends
    with, idempotently."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        # (transactionId, marked resent, the connection it came on)
        self.received: list[tuple[str, bool, int]] = []
        self.answers: dict[str, str] = {}
        self.answered_at: dict[str, float] = {}
        self.handling: dict[str, asyncio.Task] = {}
        self.cancels: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.resent_received = 0
        self.trace: dict[str, list[str]] = defaultdict(list)
        self.refund_tids: set[str] = set()

    def note(self, tid: str, what: str) -> None:
        self.trace[tid].append(f"{dt.datetime.now():%H:%M:%S.%f} {what} (conn {self.generation})")

    def on_connected(self) -> None:
        # A result sent just before the socket died may never have arrived: send it again
        # (the gateway ignores a repeat; one after a timeout is a late result, as it should be).
        for tid, at in self.answered_at.items():
            if at > self.lost_at - 1.5:
                self.note(tid, "answer again after reconnect")
                self.send_soon(self.response(tid))

    def on_frame(self, frame: Frame) -> None:
        action = frame.get("action")
        if action in ("paymentRequest", "refundRequest"):
            tid = frame[action]["transactionId"]
            if action == "refundRequest":
                self.refund_tids.add(tid)
            resent = frame.get("resent") is True
            self.resent_received += resent
            self.received.append((tid, resent, self.generation))
            self.note(tid, f"request{' resent' if resent else ''}")
            if tid in self.answers:
                self.send_soon(self.response(tid))
            elif tid not in self.handling:
                self.handling[tid] = asyncio.get_running_loop().create_task(self.handle(tid))
        elif action == "cancelPayment":
            self.note(frame["transactionId"], "cancel")
            self.cancels[frame["transactionId"]].set()

    async def handle(self, tid: str) -> None:
        kind = tid[-1]
        if kind == "T":
            return  # never answers: the gateway times it out
        if kind in "LC":
            # L answers SUCCESS only once the gateway gave up (its cancelPayment on timeout);
            # C is cancelled by the desktop.
            await self.cancels[tid].wait()
            status = "SUCCESS" if kind == "L" else "CANCELLED"
            if tid in self.refund_tids:  # after the desktop refunded what was left
                await asyncio.sleep(self.rng.uniform(0.3, 0.8))
        else:
            await asyncio.sleep(self.rng.uniform(0, 0.03))
            status = "SUCCESS" if kind == "S" else "DECLINED"
        self.answers[tid] = status
        self.answered_at[tid] = time.monotonic()
        try:
            await self.send(self.response(tid))
            self.note(tid, f"answered {status}")
        except ConnectionError:
            self.note(tid, f"answer {status} not sent")

    def response(self, tid: str) -> Frame:
        status = self.answers[tid]
        root = "refundResponse" if tid in self.refund_tids else "paymentResponse"
        return {
            "action": root,
            root: {
                "transactionId": tid,
                "status": status,
                "authorizationCode": f"A{abs(hash(tid)) % 1000000:06d}"
                if status == "SUCCESS"
                else None,
                "errorMessage": None if status == "SUCCESS" else status.title(),
            },
        }


# --- 1. The chaos test ---------------------------------------------------------------------------

# The payment deadline, above the Redis outage: a payment started during the outage must
# reach its terminal once Redis is back, not time out (issue 20).
CHAOS_TIMEOUT_S = 5
REDIS_OUTAGE_S = 3
CHAOS_ENV = {
    "PAYMENT_TIMEOUT_S": str(CHAOS_TIMEOUT_S),
    "HEARTBEAT_INTERVAL_S": "1",
    "HEARTBEAT_TIMEOUT_S": "1",
    "RECONNECT_GRACE_S": "2",
    "SWEEP_INTERVAL_S": "0.2",
    "LOG_LEVEL": "WARNING",
}
# PAYMENTS: transactions started, refunds (REFUND_SHARE of them) included.
STORES, PAIRS_PER_STORE, PAYMENTS = 4, 5, 2000
# Setup and payments end within this; settling, checks and teardown take the rest of the 175 s.
DEADLINE_S = 145


def create_devices(
    deployment: Deployment, slugs: list[str], count: int
) -> dict[str, dict[str, list[str]]]:
    """``create_device --count`` for the desktops and terminals of every store, in one Django
    start-up (each is seconds of CPU on a busy machine): ``{slug: {type: [keys]}}``."""
    code = (
        "import io, json\n"
        "from django.core.management import call_command\n"
        "keys = {}\n"
        f"for slug in {slugs!r}:\n"
        "    for kind, base in (('desktop', 'POS'), ('terminal', 'TERM')):\n"
        "        out = io.StringIO()\n"
        "        call_command('create_device', group=slug, device_type=kind, device_id=base,\n"
        f"                     count={count}, stdout=out, stderr=io.StringIO())\n"
        "        keys.setdefault(slug, {})[kind] = out.getvalue().split()\n"
        "print(json.dumps(keys))\n"
    )
    keys = json.loads(deployment.manage("shell", "-c", code).stdout.strip().splitlines()[-1])
    assert all(len(k) == count for store in keys.values() for k in store.values()), keys
    return keys


def now() -> str:
    return f"{dt.datetime.now():%H:%M:%S.%f}"


async def _chaos(
    rng: random.Random,
    stats: Stats,
    peers: list[Peer],
    servers: list[Server],
    redis: RedisServer,
    done: asyncio.Event,
    run_limit: float,
) -> list[str]:
    """Cut sockets all along; kill one daphne at 30 % and restart Redis at 60 % of the run
    (of its payments, or of its time limit on a machine too slow to reach them)."""
    log: list[str] = []
    killed = redis_restarted = False
    chaos_began = time.monotonic()

    def progress() -> float:
        return max(stats.started / stats.target, (time.monotonic() - chaos_began) / run_limit)

    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), rng.uniform(0.15, 0.6))
        if done.is_set():
            break
        rng.choice(peers).abort()
        if not killed and progress() >= 0.3:
            killed = True
            index = rng.randrange(len(servers))
            victim = servers[index]
            await asyncio.to_thread(victim.kill)
            log.append(
                f"{now()} killed daphne on port {victim.port} after {stats.started} transactions"
            )
            await asyncio.sleep(0.5)
            servers[index] = await asyncio.to_thread(restart, victim)
            log.append(f"{now()} restarted daphne on port {victim.port}")
        elif not redis_restarted and progress() >= 0.6:
            redis_restarted = True
            began = time.time()
            await asyncio.to_thread(redis.stop)
            log.append(f"{now()} stopped redis after {stats.started} transactions")
            await asyncio.sleep(max(0.0, REDIS_OUTAGE_S - (time.time() - began)))
            await asyncio.to_thread(redis.start)
            stats.outage = (began, time.time())
            log.append(f"{now()} restarted redis after {stats.outage[1] - began:.1f} s")
    assert killed, log
    assert redis_restarted, log
    return log


@pytest.mark.timeout(175)
# Its own PostgreSQL + Redis deployment whichever pass runs: once, in the PostgreSQL pass.
@pytest.mark.production_pass_only
async def test_payments_survive_drops_a_killed_process_and_a_redis_restart(tmp_path):
    """2,000+ payments and refunds under faults: none lost, none doubled, none left hanging,
    no payment refunded beyond its amount but by a late success (flagged)."""
    rng = random.Random(20260)
    phases: dict[str, float] = {}
    clock = time.monotonic()
    with (
        own_redis(tmp_path) as redis,
        production_deployment(redis_url=redis.url, **CHAOS_ENV) as deployment,
    ):
        slugs = [f"chaos-{n}" for n in range(STORES)]
        # Django start-ups all, side by side: the two servers and the devices.
        with ThreadPoolExecutor(3) as pool:
            starting = [pool.submit(deployment.server) for _ in range(2)]
            keys = create_devices(deployment, slugs, PAIRS_PER_STORE)
            servers = [future.result() for future in starting]
        urls = [s.ws_url for s in servers]  # ports survive the restart

        stats = Stats()
        stats.target = PAYMENTS
        desktops: list[Desktop] = []
        terminals: list[Terminal] = []
        for s, slug in enumerate(slugs):
            desktop_keys, terminal_keys = keys[slug]["desktop"], keys[slug]["terminal"]
            for p in range(PAIRS_PER_STORE):
                # Each pair starts on different processes; reconnects go to either.
                pair = s * PAIRS_PER_STORE + p
                common = {"store": slugs[s], "urls": urls, "rng": rng, "stats": stats}
                desktops.append(
                    Desktop(
                        desktop_keys[p],
                        device_id=f"POS-{p + 1}",
                        first_url=urls[pair % 2],
                        terminal_id=f"TERM-{p + 1}",
                        payment_timeout=CHAOS_TIMEOUT_S,
                        **common,
                    )
                )
                terminals.append(
                    Terminal(
                        terminal_keys[p],
                        device_id=f"TERM-{p + 1}",
                        first_url=urls[(pair + 1) % 2],
                        **common,
                    )
                )
        peers: list[Peer] = [*desktops, *terminals]

        runners = [asyncio.create_task(peer.run()) for peer in peers]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(p.up.wait() for p in peers)), 20
            )  # everyone connected before the clock starts
            began = time.monotonic()
            phases["setup"] = began - clock
            # The whole test stays within its time limit, whatever the setup took.
            run_limit = DEADLINE_S - phases["setup"]
            finished = asyncio.Event()
            chaos = asyncio.create_task(
                _chaos(rng, stats, peers, servers, redis, finished, run_limit)
            )
            try:
                await asyncio.wait_for(asyncio.gather(*(d.pay_loop() for d in desktops)), run_limit)
            except TimeoutError:
                # Too slow a machine: what was done is still checked, the count then fails.
                print(
                    f"\nchaos: stopped at {run_limit:.0f} s, {stats.started} transactions started"
                )
            finally:
                finished.set()
                chaos_log = await asyncio.wait_for(chaos, 30)
            phases["run"] = time.monotonic() - began

            # Let what is in flight time out and late answers arrive; the database then rests.
            await _wait_until_settled(deployment, CHAOS_TIMEOUT_S + 15)
            phases["settle"] = time.monotonic() - began - phases["run"]

            # Every desktop reconnects once more: whatever it has not acknowledged comes again.
            for desktop in desktops:
                desktop.abort(chaos=False)
            await asyncio.wait_for(
                asyncio.gather(*(_until_acked(d) for d in desktops)),
                20,
            )
            await _wait_for_acks(deployment, 10)
            phases["redelivery"] = time.monotonic() - began - phases["run"] - phases["settle"]
        finally:
            for peer in peers:
                await peer.stop()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
            for task in [t for terminal in terminals for t in terminal.handling.values()]:
                task.cancel()

        logs = {s.log_path.name: s.log() for s in deployment.servers}
        for name, text in logs.items():  # kept with the test's tmp_path for a post-mortem
            (tmp_path / name).write_text(text)
        _check(deployment, desktops, terminals, stats, logs, chaos_log, phases)


async def _wait_until_settled(deployment: Deployment, timeout: float) -> None:
    """No payment in flight, and no new event for a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        in_flight, events = (
            await asyncio.to_thread(
                query,
                deployment,
                "SELECT (SELECT count(*) FROM payments_transaction"
                "        WHERE status IN ('PENDING', 'IN_PROGRESS')),"
                "       (SELECT count(*) FROM payments_transactionevent)",
            )
        )[0]
        if in_flight == 0 and events == last:
            return
        last = events
        await asyncio.sleep(1)
    # Not settled: the checks below say what is hanging.


async def _until_acked(desktop: Desktop) -> None:
    """Wait for the desktop's next connection to have replayed its backlog."""
    generation = desktop.generation
    while desktop.generation == generation or desktop.in_backlog or not desktop.up.is_set():
        await asyncio.sleep(0.05)


async def _wait_for_acks(deployment: Deployment, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        unacked = await asyncio.to_thread(
            query,
            deployment,
            "SELECT count(*) FROM payments_desktopmessage WHERE acked_at IS NULL",
        )
        if unacked[0][0] == 0:
            return
        await asyncio.sleep(0.2)


def history(deployment: Deployment, slug: str, tid: str) -> str:
    """The transaction's event log, to say what happened to it."""
    events = query(
        deployment,
        "SELECT e.created_at, e.kind, e.source, e.old_status, e.new_status, e.detail "
        "FROM payments_transactionevent e JOIN payments_transaction t ON t.id = e.transaction_id "
        "JOIN terminals_group g ON g.id = t.group_id WHERE g.slug = %s AND t.transaction_id = %s "
        "ORDER BY e.id",
        slug,
        tid,
    )
    return "; ".join(
        f"{at:%H:%M:%S.%f} {kind} {source} {old}->{new} {detail or ''}"
        for at, kind, source, old, new, detail in events
    )


def _check(
    deployment: Deployment,
    desktops: list[Desktop],
    terminals: list[Terminal],
    stats: Stats,
    logs: dict[str, str],
    chaos_log: list[str],
    phases: dict[str, float],
) -> None:
    rows = query(
        deployment,
        "SELECT g.slug, t.transaction_id, t.status, t.late, d.device_id, term.device_id "
        "FROM payments_transaction t JOIN terminals_group g ON g.id = t.group_id "
        "JOIN terminals_device d ON d.id = t.desktop_id "
        "JOIN terminals_device term ON term.id = t.terminal_id",
    )
    messages = query(
        deployment,
        "SELECT g.slug, d.device_id, m.seq, m.acked_at IS NOT NULL "
        "FROM payments_desktopmessage m JOIN terminals_device d ON d.id = m.device_id "
        "JOIN terminals_group g ON g.id = d.group_id",
    )
    status_of = {(slug, tid): status for slug, tid, status, *_ in rows}
    by_desktop = {(d.store, d.device_id): d for d in desktops}
    by_terminal = {(t.store, t.device_id): t for t in terminals}
    problems: list[str] = []

    # Every transaction final (nothing can legitimately be in flight this long after the run).
    hanging = [(slug, tid, status) for slug, tid, status, *_ in rows if status not in FINAL]
    problems += [f"still in flight: {h}" for h in hanging]

    # Exactly the payments and refunds the desktops started (not those refused), each stored
    # once in its store.
    stored = Counter((slug, tid) for slug, tid, *_ in rows)
    doubled_rows = [key for key, count in stored.items() if count > 1]
    started = {(d.store, tid) for d in desktops for tid in d.started}
    abandoned = [tid for d in desktops for tid in d.abandoned]
    problems += [f"stored twice: {key}" for key in doubled_rows]
    problems += [f"started, never stored: {key}" for key in sorted(started - set(stored))[:20]]
    problems += [f"stored, never started: {key}" for key in sorted(set(stored) - started)[:20]]
    problems += [f"desktop gave up on {tid}" for tid in abandoned]

    # Every final result reached its desktop (a paymentComplete, the latest one carrying the
    # stored status) or was answered by getTransactionStatus.
    lost: list[str] = []
    for slug, tid, status, _late, desktop_id, _terminal_id in rows:
        desktop = by_desktop[(slug, desktop_id)]
        frames = sorted(desktop.results.get(tid, []), key=lambda f: f["seq"])
        seen = outcome(frames[-1])["status"] if frames else None
        if status in FINAL and status not in (seen, desktop.status_results.get(tid)):
            lost.append(f"{slug}/{tid}: {status} in the database, desktop saw {seen}")
    # Every result pushed (a numbered DesktopMessage) reached the desktop and was acknowledged.
    for slug, device_id, seq, acked in messages:
        desktop = by_desktop[(slug, device_id)]
        if seq not in desktop.seqs:
            lost.append(f"{slug}/{device_id} never got result seq {seq}")
        elif not acked:
            problems.append(f"{slug}/{device_id} result seq {seq} received but not acked")

    # No terminal got the same payment twice on one connection (resent or not: issue 20), nor
    # twice unmarked across connections.
    duplicates: list[str] = []
    double_sends: list[str] = []
    for terminal in terminals:
        plain = Counter(tid for tid, resent, _ in terminal.received if not resent)
        duplicates += [f"{terminal.name} got {tid} {n}x" for tid, n in plain.items() if n > 1]
        per_connection = Counter((tid, conn) for tid, _, conn in terminal.received)
        double_sends += [
            f"{terminal.name} got {tid} {n}x on connection {conn}: {terminal.trace[tid]}"
            for (tid, conn), n in per_connection.items()
            if n > 1
        ]
    problems += double_sends
    # No payment doubled or dropped: the SUCCESSes the terminals reported are the SUCCESS rows.
    success_rows = defaultdict(set)
    for slug, tid, status, _late, _desktop_id, terminal_id in rows:
        if status == "SUCCESS":
            success_rows[(slug, terminal_id)].add(tid)
    for key, terminal in by_terminal.items():
        approved = {tid for tid, status in terminal.answers.items() if status == "SUCCESS"}
        for tid in sorted(approved ^ success_rows[key]):
            # Approved but not stored as such: the money moved, the gateway says otherwise.
            found = lost if tid in approved else duplicates
            found.append(
                f"{terminal.name} {tid}: terminal answered {terminal.answers.get(tid)}, "
                f"stored {status_of.get((key[0], tid))}; {history(deployment, key[0], tid)}; "
                f"terminal: {terminal.trace[tid]}; connections: {terminal.connections[-8:]}"
            )
    # Each result numbered once (a late one once more) and received under its own seqs only.
    numbered = query(
        deployment,
        "SELECT g.slug, t.transaction_id, array_agg(m.seq ORDER BY m.seq) "
        "FROM payments_desktopmessage m JOIN payments_transaction t ON t.id = m.transaction_id "
        "JOIN terminals_group g ON g.id = t.group_id GROUP BY g.slug, t.transaction_id",
    )
    seqs_of = {(slug, tid): seqs for slug, tid, seqs in numbered}
    for slug, tid, status, late, desktop_id, _terminal_id in rows:
        seqs = seqs_of.get((slug, tid), [])
        got = {f["seq"] for f in by_desktop[(slug, desktop_id)].results.get(tid, [])}
        if len(seqs) != (2 if late else 1) or not got <= set(seqs):
            duplicates.append(
                f"{slug}/{tid} ({status}, late={late}): results numbered {seqs}, desktop got "
                f"{sorted(got)}; {history(deployment, slug, tid)}"
            )
    problems += lost
    problems += duplicates
    refund_counts = _check_refunds(deployment, desktops, rows, problems)

    # Failed by infrastructure (issue 20): none FAILED (the drill's terminals never answer
    # FAILED), and no payment a terminal would have answered (S, D) timed out when its
    # deadline overlapped the Redis outage, shorter than the deadline.
    outage_from, outage_to = stats.outage or (0.0, 0.0)
    started_at = {(d.store, tid): at for d in desktops for tid, at in d.started_at.items()}
    failed_by_infra = [
        f"{slug}/{tid} FAILED" for slug, tid, status, *_ in rows if status == "FAILED"
    ]
    answered_timeouts = [
        (slug, tid) for slug, tid, status, *_ in rows if status == "TIMEOUT" and tid[-1] in "SD"
    ]
    failed_by_infra += [
        f"{slug}/{tid} TIMEOUT across the Redis outage; {history(deployment, slug, tid)}"
        for slug, tid in answered_timeouts
        if outage_from - CHAOS_TIMEOUT_S <= started_at.get((slug, tid), 0) <= outage_to
    ]
    problems += failed_by_infra

    # No 500s: "Internal Server Error" only while Redis was down.

    def in_outage(at: float | None) -> bool:
        return at is not None and outage_from - 0.5 <= at <= outage_to + 2

    errors = [(at, f, p.name) for p in [*desktops, *terminals] for at, f in p.errors]
    ise = [(at, f, name) for at, f, name in errors if f["error"] == "Internal Server Error"]
    ise_outside = [e for e in ise if not in_outage(e[0])]
    problems += [f"Internal Server Error outside the Redis outage: {e}" for e in ise_outside]
    problems += [f"unexpected: {u}" for u in stats.unexpected]
    error_kinds = Counter(f"{f['error']}: {f['message']}" for _, f, _ in errors)

    # The servers logged no traceback, except the Redis client's own while Redis was down.
    outage_tracebacks = 0
    for name, log in logs.items():
        for at, text in tracebacks(log):
            if is_redis_outage(text) and in_outage(at):
                outage_tracebacks += 1
            else:
                when = f"{at - outage_from:+.1f} s from the Redis stop" if at else "?"
                problems.append(f"traceback in {name} ({when}):\n{text[-3000:]}")

    statuses = Counter(status for _, _, status, *_ in rows)
    late = sum(1 for row in rows if row[3])
    counts = (
        f"transactions={len(rows)} succeeded={statuses['SUCCESS']} "
        f"declined={statuses['DECLINED']} "
        f"timeouts={statuses['TIMEOUT']} cancelled={statuses['CANCELLED']} "
        f"failed={statuses['FAILED']} late={late} drops={stats.drops} "
        f"reconnects={stats.reconnects} "
        f"redeliveries={sum(d.redeliveries for d in desktops)} "
        f"resent={sum(t.resent_received for t in terminals)} "
        f"duplicates={len(duplicates) + len(doubled_rows)} lost={len(lost)} "
        f"failed_by_infrastructure={len(failed_by_infra)} double_sends={len(double_sends)} "
        f"answered_kinds_timed_out={len(answered_timeouts)} {refund_counts}"
    )
    print(f"\nchaos: {counts}")
    print(
        f"chaos: {', '.join(f'{k} {v:.1f} s' for k, v in phases.items())}; "
        f"{'; '.join(chaos_log)}; "
        f"Internal Server Error: {len(ise) - len(ise_outside)} during the Redis outage "
        f"{[(name, f.get('requestAction'), f.get('transactionId')) for _, f, name in ise]}, "
        f"{len(ise_outside)} outside; "
        f"outage tracebacks logged={outage_tracebacks}; "
        f"idempotent repeats answered duplicate={sum(d.duplicate_accepts for d in desktops)}; "
        f"status answers={sum(len(d.status_results) for d in desktops)}; "
        f"close codes={dict(stats.closes)}; connect failures={stats.connect_failures}; "
        f"error frames={dict(error_kinds)}"
    )
    refused = sum(len(d.refused) for d in desktops)
    if len(rows) + refused < PAYMENTS:
        problems.insert(0, f"only {len(rows)} transactions and {refused} refusals, not {PAYMENTS}")
    assert not problems, "\n".join(problems[:40])


def _check_refunds(
    deployment: Deployment, desktops: list[Desktop], rows: list[tuple], problems: list[str]
) -> str:
    """Refunds of each payment never add up to more than it, unless a late success (the money
    had moved when the gateway gave the refund up) did it: then the payment is flagged once.
    A refused refund did not fit and was never stored. Returns the counts, to print."""
    refunds = query(
        deployment,
        "SELECT g.slug, p.transaction_id, p.amount, p.refunded_amount, p.over_refunded, "
        "       r.transaction_id, r.amount, r.status, r.late "
        "FROM payments_transaction p JOIN terminals_group g ON g.id = p.group_id "
        "JOIN payments_transaction r ON r.original_id = p.id",
    )
    flagged = query(
        deployment,
        "SELECT g.slug, p.transaction_id, p.refunded_amount, p.over_refunded, "
        "       (SELECT count(*) FROM payments_transactionevent e "
        "        WHERE e.transaction_id = p.id AND e.kind = 'over_refunded') "
        "FROM payments_transaction p JOIN terminals_group g ON g.id = p.group_id "
        "WHERE p.type = 'PAYMENT' AND (p.refunded_amount <> 0 OR p.over_refunded"
        "      OR EXISTS (SELECT 1 FROM payments_transaction r WHERE r.original_id = p.id))",
    )
    of_payment: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for slug, payment, *rest in refunds:
        of_payment[(slug, payment)].append(tuple(rest))
    over = 0
    for slug, payment, refunded, over_refunded, events in flagged:
        found = of_payment.get((slug, payment), [])
        amount = found[0][0] if found else None
        succeeded = [(a, late) for *_, a, status, late in found if status == "SUCCESS"]
        in_time = sum((a for a, late in succeeded if not late), Decimal(0))
        said = f"{slug}/{payment}: {amount} refunded {refunded}, refunds {found}"
        if refunded != sum((a for a, _ in succeeded), Decimal(0)):
            problems.append(f"{said}: refunded is not the sum of the successful refunds")
        if amount is None or in_time > amount:
            problems.append(f"{said}: refunds that succeeded in time exceed the payment")
        if over_refunded != (amount is not None and refunded > amount):
            problems.append(f"{said}: over_refunded={over_refunded}")
        if events != (1 if over_refunded else 0):
            problems.append(f"{said}: {events} over_refunded events")
        over += over_refunded
    stored = {(slug, tid) for slug, tid, *_ in rows}
    refused = 0
    for desktop in desktops:
        for tid, frame in desktop.refused.items():
            refused += 1
            _, asked = desktop.refunds[tid]
            left = Decimal(frame.get("refundableAmount", "NaN"))
            fits = left > 0 if asked is None else Decimal(asked) <= left
            if fits or (desktop.store, tid) in stored:
                problems.append(f"{desktop.name} {tid}: asked {asked}, refused {frame}")
    statuses = Counter(r[-2] for r in refunds)
    counts = (
        f"refunds={len(refunds)} refunds succeeded={statuses['SUCCESS']} "
        f"refunds late={sum(1 for r in refunds if r[-1])} refused={refused} over_refunded={over}"
    )
    if not (statuses["SUCCESS"] and refused and over):
        problems.append(f"too few refunds to say anything: {counts}")
    return counts


async def pay_across(desktop: DeviceClient, terminal: DeviceClient, tid: str) -> None:
    """A whole payment: accepted, forwarded once, approved, completed at the desktop."""
    _, request = await pay(desktop, terminal, "TERM", tid)
    assert not request.get("resent"), request
    complete = await finish(desktop, terminal, tid)
    assert complete["paymentResponse"]["status"] == "SUCCESS", complete
    await desktop.send({"action": "ack", "seq": complete["seq"]})


# --- 2. The database refuses a query --------------------------------------------------------------

REFUSE = {
    "postgresql": [
        "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER {name} BEFORE INSERT ON payments_transaction FOR EACH ROW "
        "WHEN (NEW.group_id = {group}) EXECUTE FUNCTION {name}()",
    ],
    "sqlite": [
        "CREATE TRIGGER {name} BEFORE INSERT ON payments_transaction "
        "WHEN NEW.group_id = {group} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    ],
}
ALLOW = {
    "postgresql": [
        "DROP TRIGGER {name} ON payments_transaction",
        "DROP FUNCTION {name}()",
    ],
    "sqlite": ["DROP TRIGGER {name}"],
}


def run_sql(deployment: Deployment, statements: dict[str, list[str]], slug: str, name: str):
    """Run the statements for this database (SQLite or PostgreSQL) with the store's id."""
    code = (
        "from django.db import connection\n"
        "from terminals.models import Group\n"
        f"group = Group.objects.get(slug={slug!r}).pk\n"
        f"statements = {statements!r}[connection.vendor]\n"
        "with connection.cursor() as cursor:\n"
        "    for sql in statements:\n"
        f"        cursor.execute(sql.format(name={name!r}, group=group))\n"
    )
    deployment.manage("shell", "-c", code)


async def test_a_refused_insert_is_an_internal_error_and_the_gateway_keeps_serving(
    gateway, close_clients
):
    """The database refuses to store a payment: the desktop is told, the socket stays up,
    nothing is stored or forwarded; once the database accepts again, the same payment works."""
    store = gateway.store()
    name = f"refuse_{store.slug.replace('-', '_')}"
    desktop = await gateway.connect(store.desktop)
    terminal = await gateway.connect(store.terminal)
    await asyncio.to_thread(run_sql, gateway.deployment, REFUSE, store.slug, name)
    try:
        await desktop.send(payment_frame("TERM", "refused-once"))
        error = await desktop.recv_error()
        assert error == {
            **FAILED_TO_PROCESS,
            "requestAction": "payment",
            "transactionId": "refused-once",
        }
        await desktop.ping()  # still up and answering
        await desktop.send({"action": "getTransactionStatus", "transactionId": "refused-once"})
        assert (await desktop.recv_error())["message"] == "Transaction not found"
        forwarded = [
            f for f in await terminal.quiet_for(0.5) if f.get("action") == "paymentRequest"
        ]
        assert not forwarded, forwarded
    finally:
        await asyncio.to_thread(run_sql, gateway.deployment, ALLOW, store.slug, name)

    await pay_across(desktop, terminal, "refused-once")
