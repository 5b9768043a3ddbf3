"""What happens when a device connects or disconnects, and what a socket may have missed.

Compositions of the apps' services: a connect opens the connection (terminals) and collects
what the device missed (payments, sessions), as events the consumer sends as frames.
"""

from __future__ import annotations

from typing import Any

from payments import services as payments
from payments.models import Transaction
from posgateway.core.events import Outbox
from posgateway.core.forwarding import Claim
from posgateway.gateway.actions import DeviceContext
from sessions import services as sessions
from sessions.models import TerminalRequest
from terminals import occupancy
from terminals import services as terminals
from terminals.models import Connection, Device, DeviceType


def device_connected(
    *, device: Device, channel_name: str, remote_addr: str, outbox: Outbox
) -> tuple[DeviceContext, list[Any]]:
    """Open the connection; return its context and the events the device missed."""
    conn = terminals.connection_open(
        device_pk=device.pk, channel_name=channel_name, remote_addr=remote_addr, outbox=outbox
    )
    return _connected(conn, outbox)


def device_connected_by_key(
    *, key: str, channel_name: str, remote_addr: str, outbox: Outbox
) -> tuple[DeviceContext, list[Any]] | None:
    """``device_connected`` for the device of this API key, in one hop; None for a wrong key."""
    conn = terminals.connection_open_by_key(
        key=key, channel_name=channel_name, remote_addr=remote_addr, outbox=outbox
    )
    if conn is None:
        return None
    return _connected(conn, outbox)


def _connected(conn: Connection, outbox: Outbox) -> tuple[DeviceContext, list[Any]]:
    device = conn.device  # as connection_open locked it: last_seq and acked_seq are current
    ctx = DeviceContext(
        device=device,
        group_slug=device.group.slug,
        connection_pk=conn.pk,
        connection_id=conn.connection_id,
    )
    backlog: list[Any] = []
    if device.device_type == DeviceType.DESKTOP:
        # Every result pushed to a desktop has a seq above acked_seq until acknowledged (an ack
        # of N marks every result up to N), so acked_seq == last_seq means nothing is unacked.
        # A result committed after the connection's own commit is pushed to it live.
        if device.acked_seq < device.last_seq:
            backlog = payments.unacked_results(desktop_pk=device.pk)
        return ctx, backlog
    # Read after the connection's commit, like the frames themselves: a payment forwarded to
    # the old connection meanwhile is still found. Usually there is nothing: one query.
    in_flight, in_session = occupancy.terminal_pending(terminal_pk=device.pk)
    if in_session:
        backlog += sessions.session_resumed(terminal_pk=device.pk)
    if Transaction in in_flight:
        backlog += payments.in_flight_requests(terminal_pk=device.pk, outbox=outbox)
    if TerminalRequest in in_flight:
        backlog += sessions.in_flight_requests(terminal_pk=device.pk, outbox=outbox)
    return ctx, backlog


def device_disconnected(*, ctx: DeviceContext, code: int | None, outbox: Outbox) -> None:
    terminals.connection_close(connection_pk=ctx.connection_pk, code=code, outbox=outbox)


def results_after(*, ctx: DeviceContext, seq: int) -> list[Any]:
    """A desktop's unacknowledged results numbered above ``seq``, in seq order: what a socket
    that just saw a gap in the seq of its live pushes has not been sent."""
    return payments.unacked_results(desktop_pk=ctx.device.pk, after_seq=seq)


def device_catch_up(*, ctx: DeviceContext, outbox: Outbox) -> list[Any]:
    """What an open socket may have missed while the channel layer was down: what a reconnect
    would get (a desktop's unacknowledged results; a terminal's session and in-flight payments,
    marked ``resent``)."""
    if ctx.device_type == DeviceType.DESKTOP:
        return payments.unacked_results(desktop_pk=ctx.device.pk)
    return [
        *sessions.session_resumed(terminal_pk=ctx.device.pk),
        *payments.in_flight_requests(terminal_pk=ctx.device.pk, outbox=outbox),
    ]


# A request whose refused hand-off is due another try: (its kind, its claim, the event to send).
Retry = tuple[str, Claim, Any]
_FORWARDS: dict[str, Any] = {"payment": payments, "request": sessions}


def sweep(*, outbox: Outbox) -> list[Retry]:
    """The periodic rules of every app, safe to run in every process at once; returns the
    requests whose refused hand-off to a terminal this process now tries again."""
    payments.sweep_payment_timeouts(outbox=outbox)
    sessions.sweep_request_timeouts(outbox=outbox)
    sessions.sweep_sessions(outbox=outbox)
    sessions.sweep_terminal_api_messages()
    terminals.sweep_connections(outbox=outbox)
    return forwards_due()


def forwards_due() -> list[Retry]:
    """Payments, refunds, display and input requests whose refused hand-off is due, claimed."""
    return [
        (kind, claim, event)
        for kind, app in _FORWARDS.items()
        for claim, event in app.forwards_due()
    ]


def forwards_confirmed(*, claims: list[tuple[str, Claim]]) -> None:
    """These retried hand-offs were taken by the channel layer."""
    for kind, app in _FORWARDS.items():
        mine = [claim for of, claim in claims if of == kind]
        if mine:
            app.forwards_confirmed(claims=mine)
