"""What happens when a device connects or disconnects, and the background sweeper.

Both are compositions of the apps' services: a connect opens the connection (terminals) and
collects what the device missed (payments); the sweeper runs each app's periodic rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection as db_connection

from payments import services as payments
from payments.models import IN_FLIGHT_STATUSES
from posgateway.dispatch import DeviceContext
from posgateway.health import DATABASE, is_database_outage
from posgateway.realtime import Outbox
from sessions import services as sessions
from sessions.models import RequestStatus, SessionState
from terminals import services as terminals
from terminals.models import Connection, Device, DeviceType

logger = logging.getLogger("posgateway.gateway")


def device_connected(
    *, device: Device, channel_name: str, remote_addr: str, outbox: Outbox
) -> tuple[DeviceContext, list[dict[str, Any]]]:
    """Open the connection; return its context and the frames the device missed."""
    conn = terminals.connection_open(
        device_pk=device.pk, channel_name=channel_name, remote_addr=remote_addr, outbox=outbox
    )
    return _connected(conn, outbox)


def device_connected_by_key(
    *, key: str, channel_name: str, remote_addr: str, outbox: Outbox
) -> tuple[DeviceContext, list[dict[str, Any]]] | None:
    """``device_connected`` for the device of this API key, in one hop; None for a wrong key."""
    conn = terminals.connection_open_by_key(
        key=key, channel_name=channel_name, remote_addr=remote_addr, outbox=outbox
    )
    if conn is None:
        return None
    return _connected(conn, outbox)


def _connected(conn: Connection, outbox: Outbox) -> tuple[DeviceContext, list[dict[str, Any]]]:
    device = conn.device  # as connection_open locked it: last_seq and acked_seq are current
    ctx = DeviceContext(
        device=device,
        group_slug=device.group.slug,
        connection_pk=conn.pk,
        connection_id=conn.connection_id,
    )
    backlog: list[dict[str, Any]] = []
    if device.device_type == DeviceType.DESKTOP:
        # Every result pushed to a desktop has a seq above acked_seq until acknowledged (an ack
        # of N marks every result up to N), so acked_seq == last_seq means nothing is unacked.
        # A result committed after the connection's own commit is pushed to it live.
        if device.acked_seq < device.last_seq:
            backlog = payments.unacked_results(desktop_pk=device.pk)
        return ctx, backlog
    # Read after the connection's commit, like the frames themselves: a payment forwarded to
    # the old connection meanwhile is still found. Usually there is nothing: one query.
    in_flight, in_session, in_request = terminal_backlog_pending(terminal_pk=device.pk)
    if in_session:
        backlog += sessions.session_resume_frames(terminal_pk=device.pk)
    if in_flight:
        backlog += payments.in_flight_requests(terminal_pk=device.pk, outbox=outbox)
    if in_request:
        backlog += sessions.in_flight_requests(terminal_pk=device.pk, outbox=outbox)
    return ctx, backlog


# One query, written out (the ORM took longer to build it than the database to answer it).
_TERMINAL_BACKLOG_PENDING = (
    "SELECT"
    " EXISTS (SELECT 1 FROM payments_transaction WHERE terminal_id = %s AND status IN (%s, %s)),"
    " EXISTS (SELECT 1 FROM terminal_sessions_terminalsession"
    " WHERE terminal_id = %s AND state = %s),"
    " EXISTS (SELECT 1 FROM terminal_sessions_terminalrequest"
    " WHERE terminal_id = %s AND status = %s)"
)


def terminal_backlog_pending(*, terminal_pk: int) -> tuple[bool, bool, bool]:
    """(a payment to the terminal is in flight, a session of it is active, a display or input
    request to it is in flight), in one query."""
    params = [
        terminal_pk,
        *(str(s) for s in IN_FLIGHT_STATUSES),
        terminal_pk,
        str(SessionState.ACTIVE),
        terminal_pk,
        str(RequestStatus.IN_PROGRESS),
    ]
    with db_connection.cursor() as cursor:
        cursor.execute(_TERMINAL_BACKLOG_PENDING, params)
        in_flight, in_session, in_request = cursor.fetchone()
    return bool(in_flight), bool(in_session), bool(in_request)


def device_disconnected(*, ctx: DeviceContext, code: int | None, outbox: Outbox) -> None:
    terminals.connection_close(connection_pk=ctx.connection_pk, code=code, outbox=outbox)


def results_after(*, ctx: DeviceContext, seq: int) -> list[dict[str, Any]]:
    """A desktop's unacknowledged results numbered above ``seq``, in seq order: what a socket
    that just saw a gap in the seq of its live pushes has not been sent."""
    return payments.unacked_results(desktop_pk=ctx.device.pk, after_seq=seq)


def device_catch_up(*, ctx: DeviceContext, outbox: Outbox) -> list[dict[str, Any]]:
    """What an open socket may have missed while the channel layer was down: the frames a
    reconnect would get (a desktop's unacknowledged results; a terminal's session and
    in-flight payments, marked ``resent``)."""
    if ctx.device_type == DeviceType.DESKTOP:
        return payments.unacked_results(desktop_pk=ctx.device.pk)
    return sessions.session_resume_frames(terminal_pk=ctx.device.pk) + payments.in_flight_requests(
        terminal_pk=ctx.device.pk, outbox=outbox
    )


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


async def stop_sweeper() -> None:
    """Stop this process's sweeper (the server is shutting down); a no-op when none runs."""
    global _sweeper
    task, _sweeper = _sweeper, None
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
        except Exception as exc:
            if not is_database_outage(exc):
                logger.exception("sweep failed; retrying")
            else:  # logged once per outage, not every interval
                DATABASE.failed(exc, "sweep")
        else:
            DATABASE.ok()
        await asyncio.sleep(interval)
