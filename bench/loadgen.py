"""The load generator: real WebSocket clients (desktops, terminals, idle terminals).

Used by ``bench/run.py``, in its own process and in worker processes (``multiprocessing``) so
the clients are not the bottleneck of a fast server. Every wait is bounded and every loop ends
by itself: connects have a deadline, payments a timeout, closed loops a stop time, idle sockets
a maximum holding time.

Workers talk to the parent over a ``multiprocessing`` pipe:

    closed_loop_worker:  -> ("ready", info)   <- ("go", t_measure, t_stop)   -> ("done", result)
    holder_worker:       -> ("ready", {})      <- ("go", t0)   -> ("connected", info)
                         <- ("close",)         -> ("closed", info)

Times are ``time.monotonic()`` values, which all processes of the machine share.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import random
import resource
import time
from typing import Any

import websockets

PAYMENT_TIMEOUT_S = 30.0


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- One client ------------------------------------------------------------------------------


class Refused(Exception):
    """The server answered the handshake with something other than ``connected``."""


async def connect_once(url: str, key: str, timeout: float = 30) -> websockets.ClientConnection:
    """One connection attempt, bounded by ``timeout``: open, then wait for ``connected``.

    No compression (daphne does not negotiate it; the reference and uvicorn would), no
    client-side pings (the heartbeat is the protocol's own ``ping`` action).
    """
    ws = await websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        open_timeout=timeout,
        ping_interval=None,
        close_timeout=2,
        compression=None,
        max_size=2**20,
    )
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    except BaseException:
        await ws.close()
        raise
    if hello.get("action") != "connected":
        await ws.close()
        raise Refused(str(hello)[:200])
    return ws


async def connect(
    url: str, key: str, deadline: float, failures: list[str] | None = None
) -> websockets.ClientConnection:
    """Connect, retrying with a short backoff (as a terminal would) until ``deadline``.

    The deadline stops new attempts; one in flight keeps its own 30 s, so the server is not
    left with handshakes nobody waits for (it would go on working through them)."""
    for attempt in itertools.count():
        if time.monotonic() >= deadline:
            break
        try:
            return await connect_once(url, key, timeout=30.0)
        except (OSError, websockets.WebSocketException, TimeoutError, Refused) as exc:
            if failures is not None:
                failures.append(type(exc).__name__)
            await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)) * random.uniform(0.5, 1.5))
    raise TimeoutError("could not connect before the deadline")


async def close_quietly(sockets: list, timeout: float = 10) -> None:
    if not sockets:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), timeout
        )


LAST_SENT: dict[int, float] = {}  # id(ws) -> when this process last sent on it
PING = '{"action":"ping"}'


async def send(ws: websockets.ClientConnection, text: str) -> None:
    LAST_SENT[id(ws)] = time.monotonic()
    await ws.send(text)


async def keepalive(sockets: list, quiet_s: float = 10.0) -> None:
    """The protocol's heartbeat for sockets quiet for ``quiet_s``: the gateway closes a socket
    silent for HEARTBEAT_INTERVAL_S + HEARTBEAT_TIMEOUT_S (40 s), and a long connect phase
    would otherwise lose the pairs that connected first. Runs until cancelled."""
    now = time.monotonic()
    for ws in sockets:
        LAST_SENT.setdefault(id(ws), now)
    while True:
        await asyncio.sleep(quiet_s / 2)
        now = time.monotonic()
        for ws in sockets:
            if now - LAST_SENT.get(id(ws), now) > quiet_s:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await send(ws, PING)


def payment_response(tid: str) -> str:
    return json.dumps(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": tid,
                "status": "SUCCESS",
                "authorizationCode": "A1",
                "errorMessage": None,
            },
        }
    )


async def terminal_loop(ws: websockets.ClientConnection) -> None:
    """Answer every paymentRequest with SUCCESS at once; ends when the socket closes."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("action") == "paymentRequest":
                await send(ws, payment_response(msg["paymentRequest"]["transactionId"]))


class PaymentError(Exception):
    """The server answered a payment with an error frame."""


class Desktop:
    """A POS desktop: one payment at a time, results acknowledged in batches of 10."""

    def __init__(self, ws: websockets.ClientConnection, terminal_id: str) -> None:
        self.ws = ws
        self.terminal_id = terminal_id
        self.waiting: dict[str, asyncio.Future] = {}
        self.last_seq = 0
        self.acked = 0
        self.pong: asyncio.Future | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                msg = json.loads(raw)
                action = msg.get("action")
                if action == "paymentComplete":
                    fut = self.waiting.pop(msg["paymentResponse"]["transactionId"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                    seq = msg.get("seq")
                    if isinstance(seq, int):
                        self.last_seq = max(self.last_seq, seq)
                elif action == "pong":
                    if self.pong is not None and not self.pong.done():
                        self.pong.set_result(msg)
                elif "error" in msg:
                    fut = self.waiting.pop(msg.get("transactionId") or "", None)
                    if fut is not None and not fut.done():
                        fut.set_exception(PaymentError(f"{msg['error']}: {msg.get('message')}"))
        for fut in self.waiting.values():  # the socket closed: nothing more will come
            if not fut.done():
                fut.set_exception(PaymentError("connection closed"))

    async def ping(self, _tid: str = "", timeout: float = PAYMENT_TIMEOUT_S) -> float:
        """The protocol's ping; return the time until its pong."""
        self.pong = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await send(self.ws, PING)
        await asyncio.wait_for(self.pong, timeout)
        return time.perf_counter() - started

    async def pay(self, tid: str, timeout: float = PAYMENT_TIMEOUT_S) -> float:
        """Send one payment; return its round-trip latency in seconds once it completed."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[tid] = fut
        started = time.perf_counter()
        await send(
            self.ws,
            json.dumps(
                {
                    "action": "payment",
                    "terminalId": self.terminal_id,
                    "paymentRequest": {
                        "transactionId": tid,
                        "amount": "12.50",
                        "currency": "EUR",
                        "paymentMethod": "CARD",
                    },
                }
            ),
        )
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(tid, None)
        latency = time.perf_counter() - started
        if self.last_seq - self.acked >= 10:
            self.acked = self.last_seq
            await send(self.ws, json.dumps({"action": "ack", "seq": self.acked}))
        return latency


async def open_pairs(
    pairs: list[dict[str, str]], deadline: float, concurrency: int = 100
) -> tuple[list[Desktop], list, list[str]]:
    """Connect each pair (terminal first) to its URLs; returns desktops, closables, failures."""
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(p: dict[str, str]):
        async with sem:
            t = await connect(p["terminal_url"], p["terminal_key"], deadline, failures)
            try:
                d = await connect(p["desktop_url"], p["desktop_key"], deadline, failures)
            except BaseException:
                await t.close()
                raise
        return Desktop(d, p["terminal_id"]), t

    opened = await asyncio.gather(*(one(p) for p in pairs), return_exceptions=True)
    errors = [o for o in opened if isinstance(o, BaseException)]
    good = [o for o in opened if not isinstance(o, BaseException)]
    desktops = [d for d, _ in good]
    terminals = [t for _, t in good]
    tasks = [asyncio.create_task(terminal_loop(t)) for t in terminals]
    tasks.append(asyncio.create_task(keepalive([d.ws for d in desktops] + terminals)))
    if errors:
        await close_pairs(desktops, terminals + tasks)
        raise RuntimeError(f"{len(errors)} of {len(pairs)} pairs could not connect: {errors[0]!r}")
    return desktops, terminals + tasks, failures


async def close_pairs(desktops: list[Desktop], others: list) -> None:
    for o in others:
        if isinstance(o, asyncio.Task):
            o.cancel()
    await close_quietly(
        [d.ws for d in desktops] + [o for o in others if not isinstance(o, asyncio.Task)]
    )
    for d in desktops:
        d.reader.cancel()


# --- Closed loop -----------------------------------------------------------------------------


WINDOW_WAIT_S = 300.0  # a closed loop ends by itself if the parent never sends its window


async def run_closed_loop(
    desktops: list[Desktop],
    prefix: str,
    window: asyncio.Future,
    on_warm: Any = None,
    action: str = "pay",
) -> dict[str, Any]:
    """Each desktop pays, waits for the result, pays again, until the window's end.

    ``window`` resolves to (t_measure, t_stop) once the parent chose it; ``on_warm()`` is
    called when every desktop has had its first answer (the loop is in its steady state).
    Returns the latencies of the payments completed inside [t_measure, t_stop], and counts of
    every payment sent: answered (any time), errors (error frames), timeouts (no answer).
    """
    counter = itertools.count()
    done_at: list[tuple[float, float]] = []
    counts = {"sent": 0, "answered": 0, "errors": 0, "timeouts": 0}
    cold = [len(desktops)]
    cpu: dict[str, float] = {}

    def stopped() -> bool:
        return window.done() and time.monotonic() >= window.result()[1]

    async def loop(d: Desktop) -> None:
        first = True
        while not stopped():
            counts["sent"] += 1
            try:
                latency = await getattr(d, action)(f"{prefix}-{next(counter)}")
                counts["answered"] += 1
                done_at.append((time.monotonic(), latency))
            except TimeoutError:
                counts["timeouts"] += 1
            except PaymentError:
                counts["errors"] += 1
                await asyncio.sleep(0.1)
            if first:
                first = False
                cold[0] -= 1
                if cold[0] == 0 and on_warm is not None:
                    on_warm()

    async def cpu_marks() -> None:
        t_measure, t_stop = await window
        await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, t_stop - time.monotonic()))
        cpu["stop"] = time.process_time()

    await asyncio.gather(cpu_marks(), *(loop(d) for d in desktops))
    t_measure, t_stop = window.result()
    return {
        "latencies": [lat for t, lat in done_at if t_measure <= t <= t_stop],
        **counts,
        "answered_late": sum(1 for t, _ in done_at if t > t_stop),
        "client_cpu_s": cpu.get("stop", 0.0) - cpu.get("start", 0.0),
    }


def _recv(conn, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError("the parent did not answer in time")
    return conn.recv()


def closed_loop_worker(
    conn, pairs: list[dict[str, str]], prefix: str, connect_s: float, action: str = "pay"
) -> None:
    """Process entry: connect ``pairs``; on go, run the closed loop; say when warm; stop at
    the window the parent sends; report; exit.

    ``action`` is ``pay`` (payment round trips) or ``ping`` (ping/pong: transport only)."""
    raise_fd_limit()
    asyncio.run(_closed_loop_worker(conn, pairs, prefix, connect_s, action))


async def _closed_loop_worker(conn, pairs, prefix, connect_s, action) -> None:
    loop = asyncio.get_running_loop()
    try:
        desktops, others, failures = await open_pairs(pairs, time.monotonic() + connect_s)
    except Exception as exc:
        conn.send(("failed", repr(exc)))
        return
    try:
        conn.send(("ready", {"pairs": len(desktops), "connect_failures": len(failures)}))
        message = await loop.run_in_executor(None, _recv, conn, connect_s + 60)
        if message[0] != "go":
            return
        window: asyncio.Future = loop.create_future()

        async def wait_for_window() -> None:
            try:
                message = await loop.run_in_executor(None, _recv, conn, WINDOW_WAIT_S)
                window.set_result((message[1], message[2]))
            except Exception:
                now = time.monotonic()
                window.set_result((now, now))

        control = asyncio.create_task(wait_for_window())
        result = await run_closed_loop(
            desktops, prefix, window, lambda: conn.send(("warm", time.monotonic())), action
        )
        await control
        conn.send(("done", result))
    finally:
        await close_pairs(desktops, others)


# --- Many sockets: idle terminals with heartbeats, reconnect storms --------------------------


def holder_worker(
    conn,
    targets: list[tuple[str, str]],
    concurrency: int,
    ping_every: float,
    connect_s: float,
    hold_max_s: float,
) -> None:
    """Process entry: on go, connect every (url, key); heartbeat them until told to close.

    ``concurrency`` caps handshakes in flight (0 = all at once, a storm). ``ping_every`` > 0
    sends the protocol's ``ping`` action at that interval, each socket at its own phase. Holds
    at most ``hold_max_s`` after go, then closes by itself.
    """
    raise_fd_limit()
    asyncio.run(_holder_worker(conn, targets, concurrency, ping_every, connect_s, hold_max_s))


async def _holder_worker(conn, targets, concurrency, ping_every, connect_s, hold_max_s) -> None:
    loop = asyncio.get_running_loop()
    conn.send(("ready", {}))
    message = await loop.run_in_executor(None, _recv, conn, 120)
    if message[0] != "go":
        return
    t0 = message[1]
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    deadline = t0 + connect_s
    sem = asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
    failures: list[str] = []
    sockets: list = []
    done_at: list[float] = []
    dropped = 0
    cpu0 = time.process_time()

    async def heartbeat(ws) -> None:
        nonlocal dropped
        # Each socket at its own phase: a steady ping rate from the start, as in a real fleet.
        await asyncio.sleep(random.uniform(0, ping_every))
        while True:
            try:
                await send(ws, PING)
            except websockets.ConnectionClosed:
                dropped += 1
                return
            await asyncio.sleep(ping_every)

    async def drain(ws) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    tasks: list[asyncio.Task] = []

    async def one(url: str, key: str) -> None:
        async with sem:
            ws = await connect(url, key, deadline, failures)
        done_at.append(time.monotonic())
        LAST_SENT[id(ws)] = done_at[-1]
        sockets.append(ws)
        tasks.append(asyncio.create_task(drain(ws)))
        if ping_every > 0:
            tasks.append(asyncio.create_task(heartbeat(ws)))

    if ping_every <= 0:  # no heartbeat of their own: keep them from going stale while held
        tasks.append(asyncio.create_task(keepalive(sockets)))

    outcome = await asyncio.gather(*(one(u, k) for u, k in targets), return_exceptions=True)
    conn.send(
        (
            "connected",
            {
                "done_at": done_at,
                "gave_up": sum(1 for o in outcome if isinstance(o, BaseException)),
                "failed_attempts": len(failures),
                "failure_kinds": dict(collections.Counter(failures).most_common(5)),
                "client_cpu_s": time.process_time() - cpu0,
            },
        )
    )
    remaining = max(1.0, t0 + hold_max_s - time.monotonic())
    with contextlib.suppress(TimeoutError):
        message = await loop.run_in_executor(None, _recv, conn, remaining)
    closed_by_server = sum(1 for ws in sockets if ws.close_code is not None)
    for t in tasks:
        t.cancel()
    await close_quietly(sockets, 30)
    conn.send(("closed", {"dropped": dropped, "closed_by_server": closed_by_server}))
