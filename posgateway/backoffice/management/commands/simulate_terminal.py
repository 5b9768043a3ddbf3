"""A simulated payment terminal for POS developers and for our own tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import OrderedDict

from django.core.management.base import BaseCommand, CommandError

from posgateway.client import GatewayClient

BEHAVIOURS = ("approve", "decline", "timeout", "drop", "late", "random")
# Display and input requests are answered whatever the payment behaviour; session frames logged.
SESSION_FRAMES = ("displayRequest", "inputRequest", "sessionBegin", "sessionEnd")
REQUESTS = ("paymentRequest", "refundRequest", "cancelPayment", *SESSION_FRAMES)
# What the simulated customer enters, per input type (sessions/validation.py's shapes).
INPUT_VALUES = {
    "confirmation": True,
    "text": "simulated text",
    "number": "42",
    "email": "customer@example.com",
    "phone": "+1 555 0100",
    "signature": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB",
}


class Command(BaseCommand):
    help = (
        "Connect as a payment terminal and answer payment and refund requests as told: approve, "
        "decline, timeout (never answer), drop (lose the connection mid-request, reconnect, "
        "then approve the resent request), late (answer SUCCESS only after the gateway gave "
        "up), random. Display requests are answered SUCCESS and input requests with a value of "
        "their type; session frames are logged. "
        "Reconnects by itself; stops after --count requests (payments and refunds) or "
        "--duration seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--key", required=True, help="the terminal's API key")
        parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/")
        parser.add_argument("--behaviour", "--behavior", choices=BEHAVIOURS, default="approve")
        parser.add_argument("--delay", type=float, default=0.5, help="seconds to 'process'")
        parser.add_argument("--count", type=int, default=0, help="stop after N payments or refunds")
        parser.add_argument("--duration", type=float, default=0, help="stop after S seconds")
        parser.add_argument("--heartbeat", type=float, default=30.0, help="ping interval")
        parser.add_argument("--seed", type=int, help="random seed for --behaviour random")

    def handle(self, *args, **options):
        if options["count"] < 0 or options["duration"] < 0:
            raise CommandError("--count and --duration must not be negative")
        simulator = Simulator(
            url=options["url"],
            key=options["key"],
            behaviour=options["behaviour"],
            delay=options["delay"],
            count=options["count"],
            duration=options["duration"],
            heartbeat=options["heartbeat"],
            rng=random.Random(options["seed"]),
            write=self.stdout.write,
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(simulator.run())
        self.stdout.write(f"done: {simulator.summary()} handled")


class RecentIds:
    """The last ``size`` transactionIds added: a set that a long run cannot grow unbounded."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, tid: str) -> None:
        self._ids[tid] = None
        self._ids.move_to_end(tid)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def __contains__(self, tid: object) -> bool:
        return tid in self._ids


class Simulator:
    def __init__(self, *, url, key, behaviour, delay, count, duration, heartbeat, rng, write):
        self.url, self.key, self.behaviour = url, key, behaviour
        self.delay, self.count, self.duration, self.heartbeat = delay, count, duration, heartbeat
        self.rng, self.write = rng, write
        self.handled = 0  # payments and refunds
        self.refunds_handled = 0
        self.dropped: set[str] = set()
        self.waiting_late: set[str] = set()
        # Payments and refunds it chose not to answer, and those it already answered: a
        # cancelPayment for those (the gateway's at timeout, or a POS cancel that came too late)
        # is ignored, or they would end CANCELLED instead of TIMEOUT, or conflict with a result.
        self.not_answering = RecentIds()
        self.answered = RecentIds()
        # Which requests are refunds: their answers (a cancel's too) are refundResponse.
        self.refunds = RecentIds()
        # Requests being "processed" (--delay), each in a task of its own, so a cancelPayment
        # read meanwhile ends it CANCELLED; and every task handling a frame.
        self.processing: dict[str, asyncio.Task] = {}
        self.tasks: set[asyncio.Task] = set()

    def summary(self) -> str:
        payments = f"{self.handled - self.refunds_handled} payment request(s)"
        return (
            f"{payments} and {self.refunds_handled} refund request(s)"
            if self.refunds_handled
            else payments
        )

    def name(self, tid: str) -> str:
        """How the log names a transaction: a refund as such."""
        return f"refund {tid}" if tid in self.refunds else tid

    def finished(self, started: float) -> bool:
        if self.count and self.handled >= self.count:
            return True
        return bool(self.duration and time.monotonic() - started >= self.duration)

    async def run(self) -> None:
        started = time.monotonic()
        backoff = 0.5
        while not self.finished(started):
            client = GatewayClient(self.url, self.key, heartbeat_interval=self.heartbeat)
            try:
                hello = await client.connect()
            except Exception as exc:
                if "4401" in str(exc) or "Unauthorized" in str(exc):
                    raise CommandError("the gateway refused the key (Unauthorized)") from exc
                self.write(f"connect failed ({exc}); retrying in {backoff:.1f} s")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            self.write(
                f"connected as {hello.get('deviceId') or hello['connectionId']} "
                f"({hello['group']}), behaviour {self.behaviour}"
            )
            try:
                await self.serve(client, started)
            except ConnectionError as exc:
                self.write(f"connection lost ({exc}); reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await client.close()

    async def serve(self, client: GatewayClient, started: float) -> None:
        """Read frames and handle each in a task of its own: a cancelPayment that comes while
        a request is being processed is read at once, not after the request is answered."""
        try:
            while not self.finished(started):
                try:
                    frame = await client.wait_for(
                        None,
                        timeout=0.2,
                        where=lambda f: f.get("action") in REQUESTS or "error" in f,
                    )
                except TimeoutError:
                    continue
                if "error" in frame:
                    self.write(f"gateway error: {frame['error']}: {frame['message']}")
                elif frame["action"] == "cancelPayment":
                    await self.on_cancel(client, frame["transactionId"])
                else:
                    self.spawn(self.on_frame(client, frame, started))
            if self.tasks:  # the last answers leave before the connection closes
                await asyncio.wait(set(self.tasks), timeout=5)
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.processing.clear()

    def spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and isinstance(task.exception(), Exception):
            exc = task.exception()
            if not isinstance(exc, ConnectionError):  # a drop: serve() reconnects
                self.write(f"failed: {exc!r}")

    async def on_frame(self, client: GatewayClient, frame: dict, started: float) -> None:
        if frame["action"] in SESSION_FRAMES:
            await self.on_session_frame(client, frame)
            return
        resent = " (resent)" if frame.get("resent") else ""
        request = frame.get("paymentRequest") or frame["refundRequest"]
        tid = request["transactionId"]
        if frame["action"] == "refundRequest":
            self.refunds.add(tid)
            self.write(
                f"refundRequest {tid}: {request['amount']} {request['currency']} of payment "
                f"{request['originalTransactionId']}{resent}"
            )
        else:
            self.write(f"paymentRequest {tid}: {request['amount']} {request['currency']}{resent}")
        if tid in self.processing:
            return  # the same request again while it is being processed
        self.processing[tid] = asyncio.current_task()  # type: ignore[assignment]
        try:
            done = await self.on_request(client, tid, resent=bool(frame.get("resent")))
        finally:
            self.processing.pop(tid, None)
        if done:
            self.count_handled(tid)
            if self.finished(started):
                await asyncio.sleep(0.2)  # let the last answer leave before closing

    def count_handled(self, tid: str) -> None:
        self.handled += 1
        self.refunds_handled += tid in self.refunds

    async def on_request(self, client: GatewayClient, tid: str, *, resent: bool) -> bool:
        """Answer one request; True when this request is done with."""
        behaviour = self.behaviour
        if behaviour == "random":
            behaviour = self.rng.choices(
                ["approve", "decline", "timeout", "drop", "late"], weights=[70, 15, 5, 5, 5]
            )[0]
        if behaviour == "drop" and tid not in self.dropped:
            self.dropped.add(tid)
            what = "refund" if tid in self.refunds else "payment"
            self.write(f"{self.name(tid)}: dropping the connection mid-{what}")
            client.abort()
            raise ConnectionError("dropped on purpose")
        await asyncio.sleep(self.delay)
        if behaviour in ("approve", "drop"):
            await self.answer(client, tid, "SUCCESS")
        elif behaviour == "decline":
            error = "Refund declined" if tid in self.refunds else "Insufficient funds"
            await self.answer(client, tid, "DECLINED", error=error)
        elif behaviour == "timeout":
            self.not_answering.add(tid)
            self.write(f"{self.name(tid)}: not answering")
        elif behaviour == "late":
            self.waiting_late.add(tid)
            self.write(f"{self.name(tid)}: answering only after the gateway gives up")
            return False
        return True

    async def on_cancel(self, client: GatewayClient, tid: str) -> None:
        if tid in self.processing:  # still in --delay: the customer has not paid yet
            self.processing.pop(tid).cancel()
            self.write(f"{self.name(tid)}: cancelled by the POS or the gateway while processing")
            await self.answer(client, tid, "CANCELLED", error="Cancelled")
            self.count_handled(tid)
        elif tid in self.waiting_late:
            self.waiting_late.discard(tid)
            await self.answer(client, tid, "SUCCESS")
            self.count_handled(tid)
        elif tid in self.not_answering:
            self.write(f"{self.name(tid)}: cancel ignored (not answering)")
        elif tid in self.answered:
            self.write(f"{self.name(tid)}: cancel ignored (already answered)")
        else:
            self.write(f"{self.name(tid)}: cancelled by the POS or the gateway")
            await self.answer(client, tid, "CANCELLED", error="Cancelled")

    async def answer(self, client: GatewayClient, tid: str, status: str, error: str = "") -> None:
        code = secrets.token_hex(3).upper() if status == "SUCCESS" else None
        if tid in self.refunds:
            await client.respond_refund(
                tid, status, authorization_code=code, error_message=error or None
            )
        else:
            await client.respond(
                tid,
                status,
                authorization_code=code,
                error_message=error or None,
                maskedPan="************1111",
            )
        self.answered.add(tid)
        self.write(f"{self.name(tid)}: answered {status}" + (f" ({code})" if code else ""))

    async def on_session_frame(self, client: GatewayClient, frame: dict) -> None:
        """Log a session frame; answer a display request with SUCCESS and an input request
        with a value of its type (a menu's first option) after --delay."""
        action = frame["action"]
        resent = " (resent)" if frame.get("resent") else ""
        screen = frame.get("waitingScreen")
        after = f", then waiting screen {screen['sessionId']}" if screen else ""
        if action == "sessionBegin":
            session = frame["session"]
            types = ", ".join(op["type"] for op in session.get("operations", []))
            resumed = " (resumed)" if frame.get("resumed") else ""
            self.write(f"sessionBegin {session['id']}{resumed}: waiting screen after {types}")
        elif action == "sessionEnd":
            self.write(f"sessionEnd {frame['session']['id']} ({frame.get('reason', 'ended')})")
        elif action == "displayRequest":
            rid, body = frame["requestId"], frame["displayRequest"]
            shown = " | ".join(body.get("lines", [])) or f"cart {body['cart']['total']}"
            self.write(f"displayRequest {rid}: {shown}{resent}{after}")
            await asyncio.sleep(self.delay)
            await client.answer_display(rid, "SUCCESS")
            self.write(f"{rid}: answered SUCCESS")
        else:
            rid, body = frame["requestId"], frame["inputRequest"]
            self.write(f"inputRequest {rid}: {body['type']} {body['prompt']!r}{resent}{after}")
            if body["type"] == "menu":
                value = body["options"][0]["value"]
            else:
                value = INPUT_VALUES.get(body["type"], "simulated")
            await asyncio.sleep(self.delay)
            await client.answer_input(rid, "SUCCESS", value)
            self.write(f"{rid}: answered SUCCESS ({body['type']})")
