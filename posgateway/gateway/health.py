"""GET /healthz, and the probe that tells waiting sockets when the channel layer is back.

While only the channel layer fails, /healthz says 503 with ``"status": "degraded"`` and how
many requests wait for their hand-off to a terminal (``forwardsWaiting``): payments are still
taken and reach their terminals once the layer is back.

Whether the database and the channel layer are up, as this process last met them, is kept in
posgateway.core.health.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.http import JsonResponse

from payments.models import DesktopMessage, Transaction, TransactionEvent
from posgateway.core import forwarding
from posgateway.core.health import CHANNEL_LAYER, DATABASE, describe
from sessions.models import TerminalRequest

logger = logging.getLogger("posgateway.health")

# How often a process whose sockets wait for the channel layer asks it whether it is back.
LAYER_PROBE_INTERVAL_S = 1.0
# How long the health check waits for a lock on the payment tables before saying "locked".
DATABASE_PROBE_LOCK_WAIT_S = 2.0


# --- Probes -----------------------------------------------------------------------------------


def _database_ok() -> None:
    """Can this process write payments now? Answers within DATABASE_PROBE_LOCK_WAIT_S.

    Takes, and gives back at once, the locks a payment needs: on SQLite the write lock, on
    PostgreSQL ROW EXCLUSIVE on the payment tables (which only a table lock conflicts with).
    """
    wait_ms = int(DATABASE_PROBE_LOCK_WAIT_S * 1000)
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                with transaction.atomic():  # BEGIN IMMEDIATE: the write lock
                    cursor.execute("SELECT 1")
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(settings.DB_LOCK_TIMEOUT_S * 1000)}")
        return
    tables = ", ".join(
        connection.ops.quote_name(model._meta.db_table)
        for model in (Transaction, TransactionEvent, DesktopMessage)
    )
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET LOCAL lock_timeout = {wait_ms}")
            cursor.execute(f"LOCK TABLE {tables} IN ROW EXCLUSIVE MODE")
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _channel_layer_ok() -> None:
    layer = get_channel_layer()
    assert layer is not None  # settings.CHANNEL_LAYERS always has a default
    # The default prefix, like the sockets' own channels: channels-redis reads every channel
    # of a process from one Redis key named by it, and whichever reader holds its receive
    # lock pops only that key. A channel of another prefix ("healthz.") waited behind any
    # open socket's read and timed out: /healthz said 503 whenever a device was connected.
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "healthz"})
    message = await layer.receive(channel)
    if message.get("type") != "healthz":
        raise RuntimeError("channel layer returned something else")


_layer_probe: asyncio.Task | None = None


async def channel_layer_back() -> None:
    """Return once the channel layer answers again.

    One probe per process, however many sockets wait: a send and receive every
    LAYER_PROBE_INTERVAL_S. It ends at the first success (the sockets then read on).
    """
    global _layer_probe
    if _layer_probe is None or _layer_probe.done():
        # In a fresh context, like the sweeper: the first waiter's executors end with it.
        _layer_probe = asyncio.get_running_loop().create_task(
            _probe_layer_until_back(), name="posgw-layer-probe", context=contextvars.Context()
        )
    await asyncio.shield(_layer_probe)


async def _probe_layer_until_back() -> None:
    while True:
        await asyncio.sleep(LAYER_PROBE_INTERVAL_S)
        try:
            await asyncio.wait_for(_channel_layer_ok(), timeout=5)
        except Exception as exc:
            CHANNEL_LAYER.failed(exc, "probe")
            continue
        CHANNEL_LAYER.ok()
        return


# --- The endpoint -----------------------------------------------------------------------------


async def healthz(request):
    body: dict[str, str | int] = {"status": "ok", "database": "ok", "channelLayer": "ok"}
    try:
        await asyncio.wait_for(database_sync_to_async(_database_ok)(), timeout=5)
    except Exception as exc:
        if isinstance(exc, DatabaseError | TimeoutError):
            DATABASE.failed(exc, "health check")
        else:
            logger.warning("health check: database failed: %s", describe(exc))
        body["database"] = "error"
    else:
        DATABASE.ok()
    try:
        await asyncio.wait_for(_channel_layer_ok(), timeout=5)
    except Exception as exc:
        CHANNEL_LAYER.failed(exc, "health check")
        body["channelLayer"] = "error"
    else:
        CHANNEL_LAYER.ok()
    if body["database"] == "ok" and body["channelLayer"] != "ok":
        # Degraded, not down: payments are still taken, and their hand-off to the terminals
        # is retried until the layer is back (posgateway.core.forwarding).
        body["status"] = "degraded"
        with contextlib.suppress(Exception):
            body["forwardsWaiting"] = await asyncio.wait_for(
                database_sync_to_async(_forwards_waiting)(), timeout=5
            )
        return JsonResponse(body, status=503)
    if body["database"] != "ok" or body["channelLayer"] != "ok":
        body["status"] = "error"
        return JsonResponse(body, status=503)
    return JsonResponse(body)


def _forwards_waiting() -> int:
    """Requests (payments, refunds, display, input) whose hand-off waits for a retry."""
    return forwarding.waiting(Transaction) + forwarding.waiting(TerminalRequest)
