"""GET /healthz, and what this process knows about the parts it depends on.

The database and the channel layer (Redis in production) can each go away. Every part of the
gateway that meets such a failure reports it to :data:`DATABASE` or :data:`CHANNEL_LAYER`:
the first failure logs one warning naming the part, the ones after it are counted quietly,
and the first success once RECOVERY_QUIET_S passed without a failure logs that it is back. An
outage therefore reads as two lines per process, not a traceback per frame, even when some
uses keep succeeding meanwhile (a lock on one table, say).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.http import JsonResponse

logger = logging.getLogger("posgateway.health")

# How often a process whose sockets wait for the channel layer asks it whether it is back.
LAYER_PROBE_INTERVAL_S = 1.0
# How long the health check waits for a lock on the payment tables before saying "locked".
DATABASE_PROBE_LOCK_WAIT_S = 2.0
# A part that failed is back at its first success this long after its last failure.
RECOVERY_QUIET_S = 5.0


class Dependency:
    """One part the gateway depends on, as this process last met it: up, or down since when."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.down_since: float | None = None
        self.last_failure = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, what: str = "") -> None:
        """A use of this part failed: the first failure of an outage logs one warning."""
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            self.last_failure = now
            if self.down_since is not None:
                return
            self.down_since = now
        where = f" ({what})" if what else ""
        logger.warning("%s unavailable%s: %s", self.label, where, describe(exc))

    def ok(self) -> None:
        """A use of this part succeeded: if it was down and has not failed since
        RECOVERY_QUIET_S, say it is back."""
        if self.down_since is None:
            return
        now = time.monotonic()
        with self._lock:
            if self.down_since is None or now - self.last_failure < RECOVERY_QUIET_S:
                return
            lasted, failures = self.last_failure - self.down_since, self.failures
            self.down_since, self.failures = None, 0
        logger.info(
            "%s is back after %.1f s of failures (%d failed uses)", self.label, lasted, failures
        )

    def reset(self) -> None:
        """Count the part as up, without a word (tests start from here)."""
        with self._lock:
            self.down_since, self.failures, self.last_failure = None, 0, 0.0


def describe(exc: BaseException) -> str:
    """An exception in one line: its class and its first line of text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_database_outage(exc: BaseException) -> bool:
    """The database is unreachable, restarting or locked (not: it refused one query)."""
    return isinstance(exc, OperationalError | InterfaceError)


DATABASE = Dependency("database")
CHANNEL_LAYER = Dependency("channel layer")


# --- Probes -----------------------------------------------------------------------------------


def _database_ok() -> None:
    """Can this process write payments now? Answers within DATABASE_PROBE_LOCK_WAIT_S.

    Takes, and gives back at once, the locks a payment needs: on SQLite the write lock, on
    PostgreSQL ROW EXCLUSIVE on the payment tables (which only a table lock conflicts with).
    """
    from payments.models import DesktopMessage, Transaction, TransactionEvent

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
    from posgateway import gateway

    gateway.ensure_sweeper()
    body = {"status": "ok", "database": "ok", "channelLayer": "ok"}
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
    if body["database"] != "ok" or body["channelLayer"] != "ok":
        body["status"] = "error"
        return JsonResponse(body, status=503)
    return JsonResponse(body)
