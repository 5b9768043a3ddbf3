"""The payment state machine. Every change of a transaction goes through these functions.

    PENDING -> IN_PROGRESS -> SUCCESS | DECLINED | FAILED | CANCELLED | TIMEOUT

A transaction is stored and forwarded in one commit (PENDING -> IN_PROGRESS), finished by the
terminal's result or by the gateway's timeout, and every step is a TransactionEvent row. Results
reach the desktop through DesktopMessage rows numbered by seq, so a result is never lost with a
socket: it is pushed at once and again on every connect until the desktop acknowledges it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.utils import timezone

from payments.models import (
    FINAL_STATUSES,
    IN_FLIGHT_STATUSES,
    DesktopMessage,
    EventKind,
    EventSource,
    Transaction,
    TransactionEvent,
    TransactionStatus,
)
from payments.validation import format_amount, validate_payment_request, validate_payment_response
from posgateway.dashboard import events as dashboard
from posgateway.protocol import (
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    TRANSACTION_ID_REUSED,
    TRANSACTION_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
    iso,
    now_iso,
)
from posgateway.realtime import Outbox
from posgateway.sql import db as _db
from posgateway.sql import dt_param as _dt
from posgateway.sql import execute as _execute
from posgateway.sql import insert as _insert
from posgateway.sql import loaded as _loaded
from sessions.models import OperationType, RequestStatus, SessionState, TerminalRequest
from sessions.services import waiting_screen
from terminals.models import Connection, Device, DeviceType
from terminals.selectors import live_connection, resolve_terminal

logger = logging.getLogger("payments")


def _log(txn: Transaction, what: str, old: str = "", new: str = "") -> None:
    arrow = f" {old or '-'} -> {new}" if new else ""
    logger.info("transactionId=%s store=%s %s%s", txn.transaction_id, txn.group_id, what, arrow)


# --- SQL of the payment round trip -----------------------------------------------------------
# The round trip's statements are written out: the ORM took several times longer to build them
# than the database to run them (docs/performance.md). Plain SQL for SQLite and PostgreSQL
# alike; values are prepared by the model fields, as the ORM prepares them.


_INSERT_EVENTS = (
    "INSERT INTO payments_transactionevent"
    " (transaction_id, created_at, kind, source, old_status, new_status, detail) VALUES "
)
_EVENT_VALUES = "(%s, %s, %s, %s, %s, %s, %s)"
# An ack may cover thousands of results: SQLite takes at most 999 parameters per statement.
_EVENTS_PER_INSERT = 100


def _insert_events(*events: tuple[int, str, str, str, str, dict]) -> None:
    """TransactionEvent rows in one statement, each given as
    (transaction pk, kind, source, old status, new status, detail)."""
    conn = _db()
    detail_field = TransactionEvent._meta.get_field("detail")
    now = _dt(timezone.now())
    for start in range(0, len(events), _EVENTS_PER_INSERT):
        batch = events[start : start + _EVENTS_PER_INSERT]
        params: list[Any] = []
        for txn_pk, kind, source, old, new, detail in batch:
            detail_value = detail_field.get_db_prep_save(detail, conn)
            params += [txn_pk, now, kind, source, old, new, detail_value]
        _execute(_INSERT_EVENTS + ", ".join([_EVENT_VALUES] * len(batch)), params)


# --- Frames ----------------------------------------------------------------------------------


def payment_request_body(txn: Transaction) -> dict[str, Any]:
    """The normalised payment request as the terminal receives it."""
    return {
        "transactionId": txn.transaction_id,
        "amount": format_amount(txn.amount, txn.currency),
        "currency": txn.currency,
        "paymentMethod": txn.payment_method,
        "products": txn.products,
        "customerInfo": txn.customer_info,
        "metadata": txn.metadata,
    }


def payment_request_frame(
    txn: Transaction, *, resent: bool = False, in_session: bool = True
) -> dict[str, Any]:
    """``in_session`` False: the caller knows the terminal has no active session (no lookup)."""
    frame: dict[str, Any] = {
        "action": "paymentRequest",
        "desktopId": txn.desktop_connection_id,
        "paymentRequest": payment_request_body(txn),
        "timestamp": now_iso(),
    }
    if in_session:
        screen = waiting_screen(terminal_pk=txn.terminal_id, operation_type=OperationType.PAYMENT)
        if screen is not None:
            frame["waitingScreen"] = screen
    if resent:
        frame["resent"] = True
    return frame


def payment_accepted_frame(
    txn: Transaction, *, terminal_ref: str, connection: Connection | None, duplicate: bool = False
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "action": "paymentAccepted",
        "transactionId": txn.transaction_id,
        "terminalId": terminal_ref,
        "deviceId": txn.terminal.device_id or None,
        "connectionId": connection.connection_id if connection else None,
        "status": txn.status,
        "timestamp": now_iso(),
    }
    if duplicate:
        frame["duplicate"] = True
    return frame


def cancel_frame(txn: Transaction) -> dict[str, Any]:
    return {
        "action": "cancelPayment",
        "transactionId": txn.transaction_id,
        "timestamp": now_iso(),
    }


def transaction_status_frame(txn: Transaction) -> dict[str, Any]:
    return {
        "action": "transactionStatus",
        "transactionId": txn.transaction_id,
        "status": txn.status,
        "paymentResponse": txn.payment_response if txn.is_final else None,
        "late": txn.late,
        "createdAt": iso(txn.created_at),
        "updatedAt": iso(txn.updated_at),
        "completedAt": iso(txn.completed_at),
        "timestamp": now_iso(),
    }


# --- Starting a payment ----------------------------------------------------------------------


# What a new payment needs to know, in one read: whether its transactionId is already taken
# in the store, the terminal named by deviceId with its current connection, a display or input
# request in flight on it, and whether it has an active session (its waitingScreen).
# Each subquery finds at most one row: a unique constraint stands behind every one of them.
# Read in the payment's transaction, as the session was before: on SQLite nothing can begin
# between this read and the insert.
_PAYMENT_TARGET = (
    "SELECT (SELECT t.id FROM payments_transaction t"  # noqa: S608 (constants)
    " WHERE t.group_id = %s AND t.transaction_id = %s),"
    " d.id, d.device_id, c.id, c.connection_id, c.channel_name, c.closed_at,"
    " (SELECT r.request_id FROM terminal_sessions_terminalrequest r"
    f" WHERE r.terminal_id = d.id AND r.status = '{RequestStatus.IN_PROGRESS.value}'),"
    " (SELECT s.id FROM terminal_sessions_terminalsession s"
    f" WHERE s.terminal_id = d.id AND s.state = '{SessionState.ACTIVE.value}')"
    " FROM (SELECT 1 AS one) x LEFT OUTER JOIN terminals_device d ON d.group_id = %s"
    f" AND d.device_type = '{DeviceType.TERMINAL.value}' AND d.device_id = %s AND d.is_active = %s"
    " LEFT OUTER JOIN terminals_connection c ON c.id = d.current_connection_id"
)


def payment_start(
    *,
    desktop: Device,
    desktop_connection_id: str,
    terminal_id: str,
    payment_request: Any,
    outbox: Outbox,
) -> dict[str, Any]:
    """Validate, store and forward a payment; returns the frame that answers the desktop.

    Idempotent on transactionId per store: a repeat while in flight is answered with the
    current state and not forwarded again; a repeat after completion gets the stored result.
    """
    request = validate_payment_request(payment_request)
    tid = request["transactionId"]
    _check_storable(request["amount"], tid)
    group_id = desktop.group_id
    try:
        with transaction.atomic():
            existing_pk, terminal, live, busy_request, in_session = _payment_target(
                group_id, tid, terminal_id
            )
            if existing_pk is not None:
                existing = Transaction.objects.select_related("terminal").get(pk=existing_pk)
                return _payment_repeat(existing, request, terminal_id, outbox)
            if live is None:
                raise NotFound(TERMINAL_NOT_FOUND, transactionId=tid)
            if busy_request is not None:
                raise Conflict(TERMINAL_BUSY, transactionId=tid, inFlightRequestId=busy_request)
            txn = _payment_insert(desktop, desktop_connection_id, terminal, terminal_id, request)
            _insert_events(
                (txn.pk, EventKind.REQUESTED, EventSource.DESKTOP, "", "PENDING", {}),
                (
                    txn.pk,
                    EventKind.FORWARDED,
                    EventSource.GATEWAY,
                    "PENDING",
                    "IN_PROGRESS",
                    {"connectionId": live.connection_id},
                ),
            )
            outbox.frame(
                live.channel_name,
                payment_request_frame(txn, in_session=in_session),
                on_fail=functools.partial(
                    payment_forward_failed, group_id=txn.group_id, transaction_id=tid
                ),
            )
            dashboard.payment_changed(outbox, txn, EventKind.FORWARDED)
    except IntegrityError:
        # Lost a race with another request: the same transactionId, or the terminal got busy.
        existing = (
            Transaction.objects.select_related("terminal")
            .filter(group_id=group_id, transaction_id=tid)
            .first()
        )
        if existing is not None:
            return _payment_repeat(existing, request, terminal_id, outbox)
        busy = _busy(terminal, tid)
        if busy is None:
            raise  # neither race: the database refused for a reason of its own
        raise busy from None
    _log(txn, f"forwarded to terminal {terminal.device_id or terminal.pk}", "PENDING", txn.status)
    return payment_accepted_frame(txn, terminal_ref=terminal_id, connection=live)


def _payment_target(
    group_id: int, tid: str, terminal_id: str
) -> tuple[int | None, Device | None, Connection | None, str | None, bool]:
    """(pk of the store's transaction ``tid`` if it exists, the terminal, its live connection,
    the display or input request in flight on it, whether it may have an active session)."""
    row = _execute(_PAYMENT_TARGET, [group_id, tid, group_id, terminal_id, True], fetch="one")
    existing_pk, terminal_pk, device_id, conn_pk, conn_id, channel, closed_at, busy, session = row
    if existing_pk is not None:
        return existing_pk, None, None, None, False
    if terminal_pk is None:  # not a deviceId of the store: a connectionId, or unknown
        try:
            terminal, live = resolve_terminal(group_id=group_id, terminal_id=terminal_id)
        except NotFound as exc:
            exc.extra["transactionId"] = tid
            raise
        busy = (
            TerminalRequest.objects.filter(terminal=terminal, status=RequestStatus.IN_PROGRESS)
            .values_list("request_id", flat=True)
            .first()
        )
        return None, terminal, live, busy, True
    terminal = _loaded(
        Device,
        id=terminal_pk,
        group_id=group_id,
        device_type=DeviceType.TERMINAL.value,
        device_id=device_id,
        is_active=True,
    )
    live = None
    if conn_pk is not None and closed_at is None:  # its current connection, while open
        live = _loaded(
            Connection,
            id=conn_pk,
            connection_id=conn_id,
            device_id=terminal_pk,
            channel_name=channel,
            closed_at=None,
        )
    return None, terminal, live, busy, session is not None


def _payment_insert(
    desktop: Device,
    desktop_connection_id: str,
    terminal: Device,
    terminal_id: str,
    request: dict[str, Any],
) -> Transaction:
    """The new transaction, stored IN_PROGRESS: it is forwarded in the same commit."""
    now = timezone.now()
    txn = Transaction(
        group_id=desktop.group_id,
        transaction_id=request["transactionId"],
        amount=Decimal(request["amount"]),
        currency=request["currency"],
        payment_method=request["paymentMethod"],
        products=request["products"],
        customer_info=request["customerInfo"],
        metadata=request["metadata"],
        status=TransactionStatus.IN_PROGRESS,
        desktop=desktop,
        terminal=terminal,
        terminal_ref=terminal_id,
        desktop_connection_id=desktop_connection_id,
        forwarded_at=now,
        deadline_at=now + dt.timedelta(seconds=settings.PAYMENT_TIMEOUT_S),
    )
    (txn.pk,) = _insert(txn, returning="id")
    return txn


# SQLite, the embedded default, keeps 15 significant digits of a number; PostgreSQL all 16.
SQLITE_AMOUNT_DIGITS = 15


def _check_storable(amount: str, tid: str) -> None:
    """Refuse an amount the database would round: money is never changed silently."""
    digits = len(Decimal(amount).normalize().as_tuple().digits)
    if db.vendor == "sqlite" and digits > SQLITE_AMOUNT_DIGITS:
        raise BadRequest(
            f"paymentRequest.amount has more than {SQLITE_AMOUNT_DIGITS} significant digits, "
            "more than the embedded SQLite database can store (PostgreSQL stores them all)",
            transactionId=tid,
        )


def _busy(terminal: Device, tid: str) -> Conflict | None:
    in_flight = (
        Transaction.objects.filter(terminal=terminal, status__in=IN_FLIGHT_STATUSES)
        .values_list("transaction_id", flat=True)
        .first()
    )
    if in_flight is None:
        return None
    return Conflict(TERMINAL_BUSY, transactionId=tid, inFlightTransactionId=in_flight)


def _same_terminal(txn: Transaction, terminal_id: str) -> bool:
    if terminal_id in (txn.terminal_ref, txn.terminal.device_id):
        return True
    return Connection.objects.filter(connection_id=terminal_id, device_id=txn.terminal_id).exists()


def _payment_repeat(
    txn: Transaction, request: dict[str, Any], terminal_id: str, outbox: Outbox
) -> dict[str, Any]:
    same = (
        Decimal(request["amount"]) == txn.amount
        and request["currency"] == txn.currency
        and _same_terminal(txn, terminal_id)
    )
    if not same:
        raise Conflict(TRANSACTION_ID_REUSED, transactionId=txn.transaction_id)
    TransactionEvent.objects.create(
        transaction=txn,
        kind=EventKind.DUPLICATE,
        source=EventSource.DESKTOP,
        detail={"status": txn.status},
    )
    dashboard.payment_changed(outbox, txn, EventKind.DUPLICATE)
    _log(txn, f"repeated by the desktop while {txn.status}")
    if txn.is_final:
        return _stored_result_frame(txn)
    live = live_connection(device_id=txn.terminal_id)
    return payment_accepted_frame(txn, terminal_ref=terminal_id, connection=live, duplicate=True)


def _stored_result_frame(txn: Transaction) -> dict[str, Any]:
    message = DesktopMessage.objects.filter(transaction=txn).order_by("-seq").only("frame").first()
    if message is not None:
        return message.frame
    return {  # a result from before results were numbered; never expected in practice
        "action": "paymentComplete",
        "transactionId": txn.transaction_id,
        "paymentResponse": txn.payment_response,
        "late": txn.late,
        "timestamp": now_iso(),
    }


def payment_forward_failed(outbox: Outbox, *, group_id: int, transaction_id: str) -> None:
    """The channel layer refused the forward: nothing reached the terminal, so it FAILED.

    Unless the terminal reconnected meanwhile and got the request re-sent: it may be paying.
    """
    _finish_by_gateway(
        group_id=group_id,
        transaction_id=transaction_id,
        status=TransactionStatus.FAILED,
        kind=EventKind.FAILED,
        error_message="The terminal could not be reached",
        outbox=outbox,
        unless_resent=True,
    )


# --- Results ---------------------------------------------------------------------------------


def payment_result(*, terminal: Device, payment_response: Any, outbox: Outbox) -> None:
    """Record a terminal's result (late ones too) and push it to the desktop that paid."""
    response = validate_payment_response(payment_response)
    tid = response["transactionId"]
    new = response["status"]
    with transaction.atomic():
        if _record_in_progress_result(terminal, response, outbox):
            return
        # FOR NO KEY UPDATE: rows that merely reference this one (an ack's "delivered" event)
        # must not wait for it, or an ack holding the desktop row deadlocks with a late result.
        txn = (
            Transaction.objects.select_for_update(no_key=True)
            .filter(group_id=terminal.group_id, transaction_id=tid, terminal=terminal)
            .first()
        )
        if txn is None:
            raise NotFound(TRANSACTION_NOT_FOUND, transactionId=tid)
        old = txn.status
        if old in IN_FLIGHT_STATUSES:
            _record_result(txn, response, EventKind.RESULT, False, outbox)
            return
        if old == new:
            return  # the terminal repeated a result we already have
        if old in (TransactionStatus.TIMEOUT, TransactionStatus.CANCELLED) or (
            # The gateway gave the terminal up for unreachable, yet the request got there (a
            # channel-layer send can fail after it delivered): the money may have moved.
            old == TransactionStatus.FAILED
            and txn.events.filter(kind=EventKind.FAILED, source=EventSource.GATEWAY).exists()
        ):
            _record_result(txn, response, EventKind.LATE_RESULT, True, outbox)
            return
        TransactionEvent.objects.create(
            transaction=txn,
            kind=EventKind.IGNORED_RESULT,
            source=EventSource.TERMINAL,
            old_status=old,
            new_status=old,
            detail={"paymentResponse": response},
        )
        dashboard.payment_changed(outbox, txn, EventKind.IGNORED_RESULT)
        _log(txn, f"conflicting result {new} ignored, already {old}")
    # Raised after the commit, so the ignored result stays in the event log.
    raise Conflict("Transaction already completed", transactionId=tid, status=old)


# The usual result: the payment is IN_PROGRESS, and this statement both finds and finishes it.
# On PostgreSQL the UPDATE takes the same row lock (FOR NO KEY UPDATE) as the locking read of
# payment_result, and re-checks the status once it has it: a payment a timeout finished
# meanwhile is not found here and goes the locking read's way (a late result).
_RECORD_IN_PROGRESS_RESULT = (
    "UPDATE payments_transaction SET status = %s, authorization_code = %s,"  # noqa: S608
    " error_message = %s,"
    " payment_response = %s, completed_at = %s, updated_at = %s"
    " WHERE group_id = %s AND transaction_id = %s AND terminal_id = %s"
    f" AND status = '{TransactionStatus.IN_PROGRESS.value}'"
    " RETURNING id, desktop_id, late"
)


def _record_in_progress_result(terminal: Device, response: dict[str, Any], outbox: Outbox) -> bool:
    """``_record_result`` of an IN_PROGRESS payment in one statement; False if there is none."""
    tid, new = response["transactionId"], response["status"]
    code = (response.get("authorizationCode") or "")[:64]
    error = response.get("errorMessage") or ""
    now = timezone.now()
    stamp = _dt(now)
    payment_response = Transaction._meta.get_field("payment_response")
    row = _execute(
        _RECORD_IN_PROGRESS_RESULT,
        [
            new,
            code,
            error,
            payment_response.get_db_prep_save(response, _db()),
            stamp,
            stamp,
            terminal.group_id,
            tid,
            terminal.pk,
        ],
        fetch="one",
    )
    if row is None:
        return False
    pk, desktop_pk, late = row
    txn = _loaded(
        Transaction,
        id=pk,
        group_id=terminal.group_id,
        transaction_id=tid,
        terminal_id=terminal.pk,
        desktop_id=desktop_pk,
        status=new,
        late=bool(late),
        authorization_code=code,
        error_message=error,
        payment_response=response,
        completed_at=now,
        updated_at=now,
    )
    _result_recorded(txn, TransactionStatus.IN_PROGRESS, EventKind.RESULT, False, outbox)
    return True


def _record_result(
    txn: Transaction, response: dict[str, Any], kind: str, late: bool, outbox: Outbox
) -> None:
    old, new = txn.status, response["status"]
    txn.status = new
    txn.late = txn.late or late
    txn.authorization_code = (response.get("authorizationCode") or "")[:64]
    txn.error_message = response.get("errorMessage") or ""
    txn.payment_response = response
    txn.completed_at = timezone.now()
    txn.save(
        update_fields=[
            "status",
            "late",
            "authorization_code",
            "error_message",
            "payment_response",
            "completed_at",
            "updated_at",
        ]
    )
    _result_recorded(txn, old, kind, late, outbox)


def _result_recorded(txn: Transaction, old: str, kind: str, late: bool, outbox: Outbox) -> None:
    """After a terminal's result is stored: its event, the dashboards, the log, the desktop."""
    detail = {"late": late} if late else {}
    _insert_events((txn.pk, kind, EventSource.TERMINAL, old, txn.status, detail))
    dashboard.payment_changed(outbox, txn, kind)
    _log(txn, "late result" if late else "result", old, txn.status)
    _push_result(txn, outbox)


# The desktop's next seq: the UPDATE locks its device row (as connects and acks do) and
# returns the new value in the same statement.
_NEXT_SEQ = "UPDATE terminals_device SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq"
# The result's message, returning the desktop's live connection of now. Read in this statement,
# after the lock: on PostgreSQL a statement sees what committed before it began, so a desktop
# that reconnected while we waited for its row is reached on its new connection.
_MESSAGE_RETURNING = (
    "id, (SELECT c.channel_name FROM terminals_connection c WHERE c.device_id = %s"
    " AND c.closed_at IS NULL ORDER BY c.connected_at DESC LIMIT 1)"
)


def _push_result(txn: Transaction, outbox: Outbox) -> DesktopMessage:
    """Number the result for its desktop device, keep it until acked, push it now."""
    (seq,) = _execute(_NEXT_SEQ, [txn.desktop_id], fetch="one")
    frame = {
        "action": "paymentComplete",
        "seq": seq,
        "transactionId": txn.transaction_id,
        "paymentResponse": txn.payment_response,
        "late": txn.late,
        "timestamp": now_iso(),
    }
    message = DesktopMessage(device_id=txn.desktop_id, seq=seq, transaction=txn, frame=frame)
    message.pk, channel = _insert(message, returning=_MESSAGE_RETURNING, params=(txn.desktop_id,))
    if channel is not None:
        outbox.frame(channel, frame)
    return message


def _finish_by_gateway(
    *,
    group_id: int,
    transaction_id: str,
    status: str,
    kind: str,
    error_message: str,
    outbox: Outbox,
    only_before: dt.datetime | None = None,
    unless_resent: bool = False,
) -> Transaction | None:
    """The gateway ends an in-flight payment (timeout, unreachable terminal). Exactly once."""
    with transaction.atomic():
        txn = (
            Transaction.objects.select_for_update(of=("self",), no_key=True)
            .select_related("terminal")
            .filter(group_id=group_id, transaction_id=transaction_id, status__in=IN_FLIGHT_STATUSES)
            .first()
        )
        if txn is None or (only_before and txn.deadline_at and txn.deadline_at > only_before):
            return None  # finished meanwhile, by another process or by the terminal
        if unless_resent and txn.events.filter(kind=EventKind.RESENT).exists():
            return None
        old = txn.status
        txn.status = status
        txn.error_message = error_message
        txn.payment_response = {
            "transactionId": txn.transaction_id,
            "status": status,
            "authorizationCode": None,
            "errorMessage": error_message,
        }
        txn.completed_at = timezone.now()
        txn.save(
            update_fields=[
                "status",
                "error_message",
                "payment_response",
                "completed_at",
                "updated_at",
            ]
        )
        TransactionEvent.objects.create(
            transaction=txn,
            kind=kind,
            source=EventSource.GATEWAY,
            old_status=old,
            new_status=status,
        )
        dashboard.payment_changed(outbox, txn, kind)
        _log(txn, error_message, old, status)
        if status == TransactionStatus.TIMEOUT:
            live = live_connection(device_id=txn.terminal_id)
            if live is not None:
                outbox.frame(live.channel_name, cancel_frame(txn))
        _push_result(txn, outbox)
    return txn


def sweep_payment_timeouts(*, outbox: Outbox, limit: int = 200) -> int:
    """Time out every in-flight payment past its deadline, whichever process started it."""
    now = timezone.now()
    due = list(
        Transaction.objects.filter(status__in=IN_FLIGHT_STATUSES, deadline_at__lt=now)
        .order_by("deadline_at")
        .values_list("group_id", "transaction_id")[:limit]
    )
    done = 0
    for group_id, tid in due:
        if _finish_by_gateway(
            group_id=group_id,
            transaction_id=tid,
            status=TransactionStatus.TIMEOUT,
            kind=EventKind.TIMEOUT,
            error_message=f"No result from the terminal within {settings.PAYMENT_TIMEOUT_S:g} s",
            outbox=outbox,
            only_before=now,
        ):
            done += 1
    return done


# --- Desktop requests about a payment --------------------------------------------------------


def _get(group_id: int, transaction_id: Any) -> Transaction:
    if not isinstance(transaction_id, str) or not transaction_id:
        raise BadRequest("transactionId is required")
    txn = (
        Transaction.objects.select_related("terminal")
        .filter(group_id=group_id, transaction_id=transaction_id)
        .first()
    )
    if txn is None:
        raise NotFound(TRANSACTION_NOT_FOUND, transactionId=transaction_id)
    return txn


def payment_cancel(*, group_id: int, transaction_id: Any, outbox: Outbox) -> dict[str, Any]:
    """Ask the terminal to cancel; its answer (or the timeout) decides the outcome."""
    txn = _get(group_id, transaction_id)
    if txn.is_final:
        return _stored_result_frame(txn)
    TransactionEvent.objects.create(
        transaction=txn,
        kind=EventKind.CANCEL_REQUESTED,
        source=EventSource.DESKTOP,
        old_status=txn.status,
        new_status=txn.status,
    )
    dashboard.payment_changed(outbox, txn, EventKind.CANCEL_REQUESTED)
    live = live_connection(device_id=txn.terminal_id)
    if live is not None:
        outbox.frame(live.channel_name, cancel_frame(txn))
    _log(txn, "cancel requested" + ("" if live else " (terminal not connected)"))
    return {
        "action": "cancelRequested",
        "transactionId": txn.transaction_id,
        "status": txn.status,
        "forwarded": live is not None,
        "timestamp": now_iso(),
    }


def payment_status(*, group_id: int, transaction_id: Any) -> dict[str, Any]:
    return transaction_status_frame(_get(group_id, transaction_id))


# The desktop's device row, locked by the UPDATE that records the ack if seq has been sent.
# acked_seq rises only when the ack acknowledges a message, and never past an unacked one:
# connects trust it to skip the backlog (acked_seq == last_seq).
_ACK_DEVICE = (
    "UPDATE terminals_device SET acked_seq = CASE WHEN acked_seq < %s AND EXISTS"
    " (SELECT 1 FROM payments_desktopmessage m WHERE m.device_id = terminals_device.id"
    " AND m.seq <= %s AND m.acked_at IS NULL) THEN %s ELSE acked_seq END"
    " WHERE id = %s AND last_seq >= %s RETURNING id"
)
_ACK_MESSAGES = (
    "UPDATE payments_desktopmessage SET acked_at = %s"
    " WHERE device_id = %s AND seq <= %s AND acked_at IS NULL"
    " RETURNING transaction_id, seq, (SELECT t.transaction_id FROM payments_transaction t"
    " WHERE t.id = payments_desktopmessage.transaction_id)"
)


def results_ack(*, desktop: Device, seq: Any, outbox: Outbox | None = None) -> None:
    """The desktop has every result up to seq: stop re-sending them."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise BadRequest("seq must be a non-negative integer")
    with transaction.atomic():
        if _execute(_ACK_DEVICE, [seq, seq, seq, desktop.pk, seq], fetch="one") is None:
            device = Device.objects.only("pk", "last_seq").get(pk=desktop.pk)
            raise BadRequest(f"seq {seq} has not been sent yet (last is {device.last_seq})")
        now = timezone.now()
        acked = sorted(
            _execute(_ACK_MESSAGES, [_dt(now), desktop.pk, seq], fetch="all"),
            key=lambda row: row[1],
        )
        if not acked:
            return
        _insert_events(
            *(
                (txn_pk, EventKind.DELIVERED, EventSource.DESKTOP, "", "", {"seq": s})
                for txn_pk, s, _ in acked
            )
        )
        if outbox is not None:
            dashboard.payments_delivered(outbox, desktop.group_id, (tid for *_, tid in acked))


# --- Reconnection ----------------------------------------------------------------------------


def unacked_results(*, desktop_pk: int, after_seq: int = 0) -> list[dict[str, Any]]:
    """Every result of this desktop device not yet acknowledged (numbered above ``after_seq``),
    in seq order."""
    since = timezone.now() - dt.timedelta(seconds=settings.REDELIVERY_WINDOW_S)
    return list(
        DesktopMessage.objects.filter(
            device_id=desktop_pk, acked_at__isnull=True, created_at__gte=since, seq__gt=after_seq
        )
        .order_by("seq")
        .values_list("frame", flat=True)
    )


@transaction.atomic
def in_flight_requests(*, terminal_pk: int, outbox: Outbox | None = None) -> list[dict[str, Any]]:
    """Payments still in flight to a terminal that just reconnected, marked ``resent``."""
    # Locked: a payment failing or timing out meanwhile is either not re-sent, or re-sent
    # first (and then not failed for a lost forward: see payment_forward_failed).
    txns = list(
        Transaction.objects.select_for_update(no_key=True).filter(
            terminal_id=terminal_pk, status__in=IN_FLIGHT_STATUSES
        )
    )
    frames = []
    for txn in txns:
        TransactionEvent.objects.create(
            transaction=txn,
            kind=EventKind.RESENT,
            source=EventSource.GATEWAY,
            old_status=txn.status,
            new_status=txn.status,
        )
        if outbox is not None:
            dashboard.payment_changed(outbox, txn, EventKind.RESENT)
        _log(txn, "resent to the reconnected terminal")
        frame = payment_request_frame(txn, resent=True)
        # The desktop that paid may have reconnected too: name its connection of now.
        desktop_live = live_connection(device_id=txn.desktop_id)
        if desktop_live is not None:
            frame["desktopId"] = desktop_live.connection_id
        frames.append(frame)
        # A cancel the terminal never got (it was away) follows its request, or the terminal
        # would go on to charge a payment the POS cancelled.
        if txn.events.filter(kind=EventKind.CANCEL_REQUESTED).exists():
            _log(txn, "cancel resent to the reconnected terminal")
            frames.append(cancel_frame(txn))
    return frames


__all__ = [
    "FINAL_STATUSES",
    "in_flight_requests",
    "payment_cancel",
    "payment_forward_failed",
    "payment_result",
    "payment_start",
    "payment_status",
    "results_ack",
    "sweep_payment_timeouts",
    "unacked_results",
]
