"""The heartbeat of this process's device sockets: unasked pongs, stale sockets, lastActivity.

Only this process's own sockets are in :data:`LIVE`: anything another process needs is in the
database or goes through the channel layer. The background loop (posgateway.gateway.background)
calls :func:`sweep_local_connections` every SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from posgateway.core.events import Outbox
from posgateway.core.health import DATABASE, is_database_outage
from posgateway.core.protocol import CONNECTION_NOT_FOUND, NotFound
from posgateway.core.ratelimit import AddressLimiter
from posgateway.gateway import connections, frames
from posgateway.gateway.delivery import deliver
from terminals.services import CLOSE_STALE, connections_touch

if TYPE_CHECKING:
    from posgateway.gateway.actions import DeviceContext
    from posgateway.gateway.consumers import GatewayConsumer

logger = logging.getLogger("terminals.consumers")

# Sockets of this process that are connected and authenticated.
LIVE: weakref.WeakSet[GatewayConsumer] = weakref.WeakSet()
# Handshakes per client address, for this process.
HANDSHAKES = AddressLimiter()


def _ctx(consumer: GatewayConsumer) -> DeviceContext:
    """The context of a socket in LIVE: set by its connect before it joined, never unset."""
    assert consumer.ctx is not None
    return consumer.ctx


def activity_write_interval() -> float:
    """lastActivity is written at most this often per connection (it is read for staleness)."""
    return min(5.0, (settings.HEARTBEAT_INTERVAL_S + settings.HEARTBEAT_TIMEOUT_S) / 4)


def log_failure(exc: BaseException, what: str) -> None:
    """A database outage is reported once (posgateway.core.health); anything else is a bug."""
    if is_database_outage(exc):
        DATABASE.failed(exc, what)
    else:
        logger.error("%s", what, exc_info=exc)


_activity_written_at = float("-inf")


async def write_local_activity() -> None:
    """lastActivity of every socket of this process that sent frames since the last write, in
    one thread hop and a statement per 500, at most every activity_write_interval().

    A connection the gateway meanwhile counts as closed (a sweep found it silent or its process
    presumed dead, and the close message was lost) ends here: the client is told
    ``Connection not found`` and reconnects, which puts its device's status right again.
    """
    global _activity_written_at
    now = time.monotonic()
    if now - _activity_written_at < activity_write_interval():
        return
    _activity_written_at = now
    active = [c for c in list(LIVE) if c.activity_pending and c.ctx is not None]
    if not active:
        return
    for consumer in active:
        consumer.activity_pending = False
    try:
        gone = await database_sync_to_async(connections_touch)(
            connection_pks=[_ctx(c).connection_pk for c in active], at=timezone.now()
        )
    except Exception as exc:
        if not is_database_outage(exc):
            raise
        # Only lastActivity is late (it is written again next time); frames are still handled.
        DATABASE.failed(exc, "recording activity")
        for consumer in active:
            consumer.activity_pending = True
        return
    for consumer in active:
        if _ctx(consumer).connection_pk in gone:
            LIVE.discard(consumer)
            try:
                await consumer.send_frame(NotFound(CONNECTION_NOT_FOUND).to_frame())
                await consumer.close(code=CLOSE_STALE)
            except Exception as exc:
                log_failure(exc, "closing a connection the gateway had closed failed")


async def sweep_local_connections() -> None:
    """Heartbeat rules for this process's sockets: unasked pong when quiet, close when stale;
    then their lastActivity, written in bulk."""
    try:
        await write_local_activity()
    except Exception as exc:
        log_failure(exc, "writing lastActivity failed")
    HANDSHAKES.prune()
    now = time.monotonic()
    interval = settings.HEARTBEAT_INTERVAL_S
    stale_after = interval + settings.HEARTBEAT_TIMEOUT_S
    for consumer in list(LIVE):
        quiet = now - consumer.last_seen
        try:
            if quiet > stale_after:
                LIVE.discard(consumer)
                logger.info(
                    "connection %s is stale after %.0f s", _ctx(consumer).connection_id, quiet
                )
                await consumer.close(code=CLOSE_STALE)
                # The socket may never answer the close; record it now.
                outbox = Outbox()
                await database_sync_to_async(connections.device_disconnected)(
                    ctx=_ctx(consumer), code=CLOSE_STALE, outbox=outbox
                )
                await deliver(outbox)
            elif quiet > interval and not consumer.unasked_pong_sent:
                consumer.unasked_pong_sent = True
                await consumer.send_frame(frames.pong())
        except Exception as exc:
            log_failure(exc, "heartbeat sweep of a connection failed")
