"""What happens when a device connects or disconnects, and the background sweeper.

Both are compositions of the apps' services: a connect opens the connection (terminals) and
collects what the device missed (payments); the sweeper runs each app's periodic rules.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from payments import services as payments
from posgateway.dispatch import DeviceContext
from posgateway.realtime import Outbox
from sessions import services as sessions
from terminals import services as terminals
from terminals.models import Device, DeviceType

logger = logging.getLogger("posgateway.gateway")


def device_connected(
    *, device: Device, channel_name: str, remote_addr: str, outbox: Outbox
) -> tuple[DeviceContext, list[dict[str, Any]]]:
    """Open the connection; return its context and the frames the device missed."""
    conn = terminals.connection_open(
        device_pk=device.pk, channel_name=channel_name, remote_addr=remote_addr, outbox=outbox
    )
    ctx = DeviceContext(
        device=device,
        group_slug=device.group.slug,
        connection_pk=conn.pk,
        connection_id=conn.connection_id,
    )
    if device.device_type == DeviceType.DESKTOP:
        backlog = payments.unacked_results(desktop_pk=device.pk)
    else:
        backlog = sessions.session_resume_frames(terminal_pk=device.pk)
        backlog += payments.in_flight_requests(terminal_pk=device.pk, outbox=outbox)
    return ctx, backlog


def device_disconnected(*, ctx: DeviceContext, code: int | None, outbox: Outbox) -> None:
    terminals.connection_close(connection_pk=ctx.connection_pk, code=code, outbox=outbox)


def sweep(*, outbox: Outbox) -> None:
    """The periodic rules, safe to run in every process at once."""
    payments.sweep_payment_timeouts(outbox=outbox)
    sessions.sweep_request_timeouts(outbox=outbox)
    sessions.sweep_sessions(outbox=outbox)
    terminals.sweep_connections(outbox=outbox)


async def run_failures(failures: list, outbox: Outbox) -> None:
    """Run the on_fail callbacks of refused channel-layer sends, then flush what they queued."""
    if not failures:
        return

    def _run() -> None:
        for on_fail in failures:
            on_fail(outbox)

    await database_sync_to_async(_run)()
    await outbox.flush()


# --- The sweeper: one asyncio task per process ------------------------------------------------

_sweeper: asyncio.Task | None = None


def ensure_sweeper() -> None:
    """Start this process's sweeper on the running loop, once (daphne has no lifespan)."""
    global _sweeper
    if not getattr(settings, "SWEEPER_ENABLED", True):
        return
    if _sweeper is not None and not _sweeper.done():
        return
    # In a fresh context: the caller's (e.g. /healthz's) thread executors end with its request,
    # and a sweeper that inherited them could never reach the database again.
    _sweeper = asyncio.get_running_loop().create_task(
        _sweep_forever(), name="posgw-sweeper", context=contextvars.Context()
    )


async def _sweep_forever() -> None:
    from terminals.consumers import sweep_local_connections

    interval = settings.SWEEP_INTERVAL_S
    # Processes started together should not sweep in lockstep.
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        try:
            await sweep_local_connections()
            outbox = Outbox()
            await database_sync_to_async(sweep)(outbox=outbox)
            await run_failures(await outbox.flush(), Outbox())
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("sweep failed; retrying")
        await asyncio.sleep(interval)
