"""The delivery worker: fan events out, lease what is due, send, record (docs/webhooks.md).

Each pass (every WEBHOOK_POLL_INTERVAL_S when idle, at once while there is work):

1. ``events_dispatch``: new events become one delivery per subscribed endpoint, the body
   rendered once (``posgateway.rest.webhooks.event_body``);
2. ``deliveries_claim``: per endpoint with deliveries due, lease as many as it has free slots
   (WEBHOOK_CONCURRENCY_PER_ENDPOINT per worker, WEBHOOK_MAX_IN_FLIGHT in all), so a slow
   receiver holds only its own slots and never another store's;
3. each claim is sent in a task of its own: resolve the host and check the address again
   (webhooks.destinations), connect to that address, POST the signed body, read at most 1 KiB
   of the answer, all within WEBHOOK_TIMEOUT_S; ``attempt_record`` stores how it went.

Nothing is only in memory: a worker that dies leaves its leases to expire, and another worker
sends those deliveries again (at least once; receivers dedupe on ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import os
import secrets
import socket
import time
from typing import Any

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from standardwebhooks import Webhook

from posgateway.core.health import DATABASE, is_database_outage
from posgateway.rest.webhooks import event_body
from webhooks import destinations, services
from webhooks.services import Claim, Outcome

logger = logging.getLogger("posgateway.webhooks")

PRUNE_EVERY_S = 3600.0
USER_AGENT = "posgateway-webhooks/1"


def sign(claim: Claim, timestamp: dt.datetime) -> str:
    """``webhook-signature``: ``v1,<Base64 HMAC-SHA256 of id.timestamp.body>`` per secret (two
    during the 24 h after a rotation), separated by spaces."""
    return " ".join(
        Webhook(secret).sign(claim.event_id, timestamp, claim.payload) for secret in claim.secrets
    )


async def resolve(destination: destinations.Destination) -> list[destinations.Address]:
    """The destination's addresses, checked against the SSRF rules now (Refused otherwise)."""
    address = destinations.literal(destination.host)
    if address is not None:
        return destinations.check_addresses(destination, [address])
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            destination.host, destination.port, type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        raise destinations.Refused(f"{destination.host} does not resolve") from None
    return destinations.check_addresses(destination, destinations.addresses_of(infos))


class Worker:
    """One delivery worker; any number of them, in any processes, share the work."""

    def __init__(self, *, owner: str = "") -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.in_flight: dict[int, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # One client per destination host: its pooled connections were verified for that name.
        self.clients: dict[tuple[str, str, int], httpx.AsyncClient] = {}
        self.last_prune = 0.0

    # --- the loop ---

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; then let the attempts in flight finish (bounded by the
        timeout) and close."""
        try:
            while not stop.is_set():
                busy = False
                try:
                    busy = await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_database_outage(exc):
                        DATABASE.failed(exc, "webhook delivery")
                    else:
                        logger.exception("webhook delivery pass failed; retrying")
                else:
                    DATABASE.ok()
                delay = 0.05 if busy else settings.WEBHOOK_POLL_INTERVAL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.drain()
            await self.close()

    async def tick(self) -> bool:
        """One pass; True when it found work (the next comes at once)."""
        dispatched = await database_sync_to_async(services.events_dispatch)(render=event_body)
        claimed = 0
        free_total = settings.WEBHOOK_MAX_IN_FLIGHT - len(self.tasks)
        if free_total > 0:
            for endpoint_pk in await database_sync_to_async(services.due_endpoints)():
                free = min(
                    settings.WEBHOOK_CONCURRENCY_PER_ENDPOINT - self.in_flight.get(endpoint_pk, 0),
                    free_total,
                )
                if free <= 0:
                    continue
                claims = await database_sync_to_async(services.deliveries_claim)(
                    endpoint_pk=endpoint_pk, owner=self.owner, limit=free
                )
                for claim in claims:
                    self._start(claim)
                claimed += len(claims)
                free_total -= len(claims)
                if free_total <= 0:
                    break
        if time.monotonic() - self.last_prune > PRUNE_EVERY_S:
            self.last_prune = time.monotonic()
            pruned = await database_sync_to_async(services.events_prune)()
            if pruned:
                logger.info("pruned %d webhook events older than the retention", pruned)
        return bool(dispatched or claimed)

    def _start(self, claim: Claim) -> None:
        self.in_flight[claim.endpoint_pk] = self.in_flight.get(claim.endpoint_pk, 0) + 1
        task = asyncio.get_running_loop().create_task(
            self._deliver(claim), name=f"webhook-{claim.delivery_pk}"
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, claim: Claim) -> None:
        try:
            outcome = await self.send(claim)
            status = await database_sync_to_async(services.attempt_record)(
                claim=claim, owner=self.owner, outcome=outcome
            )
            logger.info(
                "webhook %s to endpoint %s attempt %d: %s%s",
                claim.event_id,
                claim.endpoint_pk,
                claim.attempt,
                status,
                f" ({outcome.error})" if outcome.error else "",
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease expires and another pass sends it again.
            logger.exception("webhook %s: attempt %d not recorded", claim.event_id, claim.attempt)
        finally:
            left = self.in_flight.get(claim.endpoint_pk, 1) - 1
            if left:
                self.in_flight[claim.endpoint_pk] = left
            else:
                self.in_flight.pop(claim.endpoint_pk, None)

    async def drain(self) -> None:
        """Wait for the attempts in flight (each bounded by WEBHOOK_TIMEOUT_S)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=settings.WEBHOOK_TIMEOUT_S + 5)

    async def close(self) -> None:
        clients, self.clients = self.clients, {}
        for client in clients.values():
            await client.aclose()

    # --- one attempt ---

    def _client(self, destination: destinations.Destination) -> httpx.AsyncClient:
        key = (destination.scheme, destination.host, destination.port)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = httpx.AsyncClient(
                # Never through a proxy from the environment: we connect to the checked address.
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(settings.WEBHOOK_TIMEOUT_S),
                limits=httpx.Limits(
                    max_connections=settings.WEBHOOK_CONCURRENCY_PER_ENDPOINT * 2,
                    max_keepalive_connections=settings.WEBHOOK_CONCURRENCY_PER_ENDPOINT,
                ),
            )
        return client

    async def send(self, claim: Claim) -> Outcome:
        """POST the signed event to the endpoint; never raises for what the receiver or the
        network did (that is the outcome)."""
        attempted_at = timezone.now()
        started = time.monotonic()

        def outcome(**kwargs: Any) -> Outcome:
            duration = int((time.monotonic() - started) * 1000)
            return Outcome(attempted_at=attempted_at, duration_ms=duration, **kwargs)

        try:
            destination = destinations.parse(claim.url)
            address = (await resolve(destination))[0]
        except destinations.Refused as exc:
            return outcome(ok=False, error=f"Refused: {exc}")
        timestamp = dt.datetime.now(dt.UTC)
        headers = {
            "host": destination.host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": claim.event_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": sign(claim, timestamp),
        }
        extensions = {}
        if destination.scheme == "https" and destinations.literal(destination.host) is None:
            extensions["sni_hostname"] = destination.host  # TLS checks the name, not the address
        timeout = settings.WEBHOOK_TIMEOUT_S
        try:
            async with asyncio.timeout(timeout):
                client = self._client(destination)
                async with client.stream(
                    "POST",
                    destination.url_for(address),
                    content=claim.payload.encode(),
                    headers=headers,
                    extensions=extensions,
                ) as response:
                    head = bytearray()
                    async for chunk in response.aiter_raw():
                        head += chunk
                        if len(head) >= services.MAX_RESPONSE_BYTES:
                            break
                    code = response.status_code
                    location = response.headers.get("location", "")
        except TimeoutError:
            return outcome(ok=False, error=f"No answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return outcome(ok=False, error=_describe(exc))
        except OSError as exc:
            return outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        body = bytes(head[: services.MAX_RESPONSE_BYTES]).decode("utf-8", "replace")
        if 200 <= code < 300:
            return outcome(ok=True, http_status=code, response_body=body)
        if 300 <= code < 400:
            error = f"HTTP {code}: redirect to {location or '(no Location)'} not followed"
        else:
            error = f"HTTP {code}"
        return outcome(ok=False, http_status=code, error=error, response_body=body)


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or {
        httpx.RemoteProtocolError: "the connection closed without an answer",
        httpx.ConnectError: "connection refused",
    }.get(type(exc), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- In every server process -------------------------------------------------------------------

_task: asyncio.Task[None] | None = None
_stop: asyncio.Event | None = None


def start() -> None:
    """Start this process's delivery worker on the running loop, once (WEBHOOK_IN_PROCESS)."""
    global _task, _stop
    if not settings.WEBHOOK_IN_PROCESS:
        return
    if _task is not None and not _task.done():
        return
    _stop = asyncio.Event()
    # A fresh context, as the background loop's (posgateway.gateway.background).
    _task = asyncio.get_running_loop().create_task(
        Worker().run(_stop), name="posgw-webhooks", context=contextvars.Context()
    )


async def stop() -> None:
    """Stop it: the attempts in flight finish first (bounded by the timeout)."""
    global _task, _stop
    task, _task = _task, None
    if task is None or task.done():
        return
    if _stop is not None:
        _stop.set()
    try:
        await asyncio.wait_for(task, settings.WEBHOOK_TIMEOUT_S + 10)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
