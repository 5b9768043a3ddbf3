"""A simulated payment terminal for POS developers and for our own tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time

from django.core.management.base import BaseCommand, CommandError

from posgateway.client import GatewayClient

BEHAVIOURS = ("approve", "decline", "timeout", "drop", "late", "random")


class Command(BaseCommand):
    help = (
        "Connect as a payment terminal and answer payment requests as told: approve, decline, "
        "timeout (never answer), drop (lose the connection mid-payment, reconnect, then "
        "approve the resent request), late (answer SUCCESS only after the gateway gave up), "
        "random. Reconnects by itself; stops after --count payments or --duration seconds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--key", required=True, help="the terminal's API key")
        parser.add_argument("--url", default="ws://127.0.0.1:8000/ws/")
        parser.add_argument("--behaviour", "--behavior", choices=BEHAVIOURS, default="approve")
        parser.add_argument("--delay", type=float, default=0.5, help="seconds to 'process'")
        parser.add_argument("--count", type=int, default=0, help="stop after N payments")
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
        self.stdout.write(f"done: {simulator.handled} payment request(s) handled")


class Simulator:
    def __init__(self, *, url, key, behaviour, delay, count, duration, heartbeat, rng, write):
        self.url, self.key, self.behaviour = url, key, behaviour
        self.delay, self.count, self.duration, self.heartbeat = delay, count, duration, heartbeat
        self.rng, self.write = rng, write
        self.handled = 0
        self.dropped: set[str] = set()
        self.waiting_late: set[str] = set()

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
        while not self.finished(started):
            try:
                frame = await client.wait_for(
                    None,
                    timeout=1.0,
                    where=lambda f: (
                        f.get("action") in ("paymentRequest", "cancelPayment") or "error" in f
                    ),
                )
            except TimeoutError:
                continue
            if "error" in frame:
                self.write(f"gateway error: {frame['error']}: {frame['message']}")
                continue
            tid = frame.get("transactionId") or frame["paymentRequest"]["transactionId"]
            if frame["action"] == "cancelPayment":
                await self.on_cancel(client, tid)
                continue
            request = frame["paymentRequest"]
            self.write(
                f"paymentRequest {tid}: {request['amount']} {request['currency']}"
                + (" (resent)" if frame.get("resent") else "")
            )
            if await self.on_request(client, tid, resent=bool(frame.get("resent"))):
                self.handled += 1
                if self.finished(started):
                    await asyncio.sleep(0.2)  # let the last answer leave before closing

    async def on_request(self, client: GatewayClient, tid: str, *, resent: bool) -> bool:
        """Answer one request; True when this request is done with."""
        behaviour = self.behaviour
        if behaviour == "random":
            behaviour = self.rng.choices(
                ["approve", "decline", "timeout", "drop", "late"], weights=[70, 15, 5, 5, 5]
            )[0]
        if behaviour == "drop" and tid not in self.dropped:
            self.dropped.add(tid)
            self.write(f"{tid}: dropping the connection mid-payment")
            client.abort()
            raise ConnectionError("dropped on purpose")
        await asyncio.sleep(self.delay)
        if behaviour in ("approve", "drop"):
            await self.answer(client, tid, "SUCCESS")
        elif behaviour == "decline":
            await self.answer(client, tid, "DECLINED", error="Insufficient funds")
        elif behaviour == "timeout":
            self.write(f"{tid}: not answering")
        elif behaviour == "late":
            self.waiting_late.add(tid)
            self.write(f"{tid}: answering only after the gateway gives up")
            return False
        return True

    async def on_cancel(self, client: GatewayClient, tid: str) -> None:
        if tid in self.waiting_late:
            self.waiting_late.discard(tid)
            await self.answer(client, tid, "SUCCESS")
            self.handled += 1
        else:
            self.write(f"{tid}: cancelled by the POS or the gateway")
            await self.answer(client, tid, "CANCELLED", error="Cancelled")

    async def answer(self, client: GatewayClient, tid: str, status: str, error: str = "") -> None:
        code = secrets.token_hex(3).upper() if status == "SUCCESS" else None
        await client.respond(
            tid,
            status,
            authorization_code=code,
            error_message=error or None,
            maskedPan="************1111",
        )
        self.write(f"{tid}: answered {status}" + (f" ({code})" if code else ""))
