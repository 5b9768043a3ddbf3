"""The gateway's background loop: one per process, started once, stopped on shutdown.

Every SWEEP_INTERVAL_S it runs the heartbeat of this process's sockets
(posgateway.gateway.heartbeat) and then every app's periodic rules (timeouts, expired
sessions, orphaned connections: posgateway.gateway.connections.sweep), which are safe to run
in every process at once, and hands off again the requests whose hand-off to a terminal the
channel layer refused (posgateway.core.forwarding). It is started by the server: under
uvicorn by the ASGI lifespan events, under daphne (which sends none) as soon as its reactor
runs (posgateway.asgi).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random

from channels.db import database_sync_to_async
from django.conf import settings

from posgateway.core.events import Outbox
from posgateway.core.forwarding import Claim
from posgateway.core.health import DATABASE, is_database_outage
from posgateway.gateway import connections, heartbeat
from posgateway.gateway.delivery import deliver, messages, run_failures, send

logger = logging.getLogger("posgateway.gateway")

_task: asyncio.Task | None = None


def start() -> None:
    """Start this process's background loop on the running event loop, once."""
    global _task
    if not getattr(settings, "SWEEPER_ENABLED", True):
        return
    if _task is not None and not _task.done():
        return
    # In a fresh context: the caller's thread executors may end with its request, and a loop
    # that inherited them could never reach the database again.
    _task = asyncio.get_running_loop().create_task(
        _run(), name="posgw-sweeper", context=contextvars.Context()
    )


async def stop() -> None:
    """Stop this process's background loop (the server is shutting down); a no-op if none."""
    global _task
    task, _task = _task, None
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def retry_forwards(due: list[connections.Retry]) -> None:
    """Hand off again the requests the sweep claimed, then confirm those the channel layer
    took; one refused again stays due (its claim set its next try). The terminal's socket
    drops a copy it already has, so a retry that crosses another send is harmless."""
    confirmed: list[tuple[str, Claim]] = []
    for kind, claim, event in due:
        if not await send(messages([event])):
            confirmed.append((kind, claim))
    if confirmed:
        await database_sync_to_async(connections.forwards_confirmed)(claims=confirmed)


async def _run() -> None:
    interval = settings.SWEEP_INTERVAL_S
    # Processes started together should not sweep in lockstep.
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        try:
            await heartbeat.sweep_local_connections()
            outbox = Outbox()
            retries = await database_sync_to_async(connections.sweep)(outbox=outbox)
            await run_failures(await deliver(outbox))
            await retry_forwards(retries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_database_outage(exc):
                logger.exception("sweep failed; retrying")
            else:  # logged once per outage, not every interval
                DATABASE.failed(exc, "sweep")
        else:
            DATABASE.ok()
        await asyncio.sleep(interval)
