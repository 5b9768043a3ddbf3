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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.utils import timezone

from payments.events import (
    CancelForwarded,
    CancelRequested,
    PaymentAccepted,
    PaymentChanged,
    PaymentForwarded,
    PaymentsDelivered,
    ResultPushed,
    StoredResult,
)
from payments.models import (
    FINAL_STATUSES,
    IN_FLIGHT_STATUSES,
    DesktopMessage,
    EventKind,
    EventSource,
    Transaction,
    TransactionEvent,
    TransactionStatus,
    TransactionType,
)
from payments.selectors import AttentionCase, attention_items_of
from payments.validation import (
    format_amount,
    parse_amount,
    validate_payment_request,
    validate_payment_response,
    validate_refund_request,
)
from posgateway.core import forwarding
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    ONLY_SUCCESSFUL_PAYMENT_REFUNDABLE,
    REFUND_CURRENCY_MISMATCH,
    REFUND_EXCEEDS_REFUNDABLE,
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    TRANSACTION_ID_REUSED,
    TRANSACTION_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
    now_iso,
)
from posgateway.core.sql import db as _db
from posgateway.core.sql import dt_param as _dt
from posgateway.core.sql import execute as _execute
from posgateway.core.sql import insert as _insert
from posgateway.core.sql import loaded as _loaded
from posgateway.core.sql import statement
from terminals import occupancy
from terminals.models import Connection, Device
from terminals.selectors import live_connection, names_terminal, resolve_terminal
from terminals.services import desktop_next_seq, desktop_seq_acked
from webhooks.services import transaction_event_record

logger = logging.getLogger("payments")


def _note(txn: Transaction, kind: str, source: str, outbox: Outbox | None, **detail: Any) -> None:
    """A step that leaves the status as it is: its event row, and the dashboards told."""
    TransactionEvent.objects.create(
        transaction=txn,
        kind=kind,
        source=source,
        old_status=txn.status,
        new_status=txn.status,
        detail=detail,
    )
    if outbox is not None:
        outbox.publish(PaymentChanged.of(txn, kind))


def _log(txn: Transaction, what: str, old: str = "", new: str = "") -> None:
    arrow = f" {old or '-'} -> {new}" if new else ""
    logger.info("transactionId=%s store=%s %s%s", txn.transaction_id, txn.group_id, what, arrow)


# --- SQL of the payment round trip -----------------------------------------------------------
# The round trip's statements are written out: the ORM took several times longer to build them
# than the database to run them (docs/performance.md). Plain SQL for SQLite and PostgreSQL
# alike; values are prepared by the model fields, as the ORM prepares them.


_INSERT_EVENTS = statement(
    "INSERT INTO {TransactionEvent} ({TransactionEvent.transaction}, {TransactionEvent.created_at},"
    " {TransactionEvent.kind}, {TransactionEvent.source}, {TransactionEvent.old_status},"
    " {TransactionEvent.new_status}, {TransactionEvent.detail}) VALUES ",
    TransactionEvent,
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


# --- Starting a payment ----------------------------------------------------------------------


# The session operation type under which a payment carries the waitingScreen
# (sessions.models.OperationType.PAYMENT; the sessions app checks they agree).
OPERATION_TYPE = "Payment"

# Whether the transactionId is taken in the store, asked in the terminal's resolution statement.
_EXISTING = statement(
    "(SELECT t.{Transaction.id} FROM {Transaction} t"
    " WHERE t.{Transaction.group} = %s AND t.{Transaction.transaction_id} = %s)",
    Transaction,
)


@functools.cache
def _target_subqueries() -> tuple[list[occupancy.InFlightKind], list[tuple[str, tuple]]]:
    """What else may keep the terminal busy, and whether it has a session: the kinds of work
    registered in terminals.occupancy (built once, after every app registered its own)."""
    others = occupancy.in_flight_kinds(exclude=Transaction)
    subqueries = [(kind.subquery("d.id"), ()) for kind in others]
    return others, [*subqueries, (occupancy.session_subquery("d.id"), ())]


def payment_start(
    *,
    desktop: Device,
    desktop_connection_id: str,
    terminal_id: str,
    payment_request: Any,
    outbox: Outbox,
    device_id_only: bool = False,
    terminal_api: bool = False,
) -> PaymentAccepted | StoredResult:
    """Validate, store and forward a payment; returns what the desktop is answered.

    Idempotent on transactionId per store: a repeat while in flight is answered with the
    current state and not forwarded again; a repeat after completion gets the stored result.
    ``terminal_api``: started by a Terminal API message (its end is announced to waiters).
    """
    request = validate_payment_request(payment_request)
    _check_storable(request["amount"], request["transactionId"])
    return _start(
        _Start(
            group_id=desktop.group_id,
            desktop=desktop,
            desktop_connection_id=desktop_connection_id,
            terminal_id=terminal_id,
            request=request,
            source=EventSource.DESKTOP,
            device_id_only=device_id_only,
            terminal_api=terminal_api,
        ),
        outbox,
    )


def refund_start(
    *,
    group_id: int,
    terminal_id: str,
    refund_request: Any,
    outbox: Outbox,
    desktop: Device | None = None,
    desktop_connection_id: str = "",
    user: Any = None,
    source: str = EventSource.DESKTOP,
    device_id_only: bool = False,
    terminal_api: bool = False,
) -> PaymentAccepted | StoredResult:
    """Validate, store and forward a refund of a successful payment of the store.

    A refund is a transaction of type REFUND with the payment's lifecycle (``_start``); its
    amount is checked against, and reserved from, the payment's refundable amount under a
    lock on the payment's row, so refunds racing from any number of processes never add up
    to more than the payment. Started by a desktop (``desktop``), or by a staff ``user``
    through the REST API or the dashboard (no desktop: the result is not pushed anywhere).
    """
    request = validate_refund_request(refund_request)
    return _start(
        _Start(
            group_id=group_id,
            desktop=desktop,
            desktop_connection_id=desktop_connection_id,
            terminal_id=terminal_id,
            request=request,
            source=source,
            refund=True,
            user=user,
            device_id_only=device_id_only,
            terminal_api=terminal_api,
        ),
        outbox,
    )


@dataclass(frozen=True, slots=True)
class _Start:
    """A request to start a payment or a refund, validated for its shape."""

    group_id: int
    desktop: Device | None
    desktop_connection_id: str
    terminal_id: str
    request: dict[str, Any]
    source: str
    refund: bool = False
    user: Any = None
    device_id_only: bool = False
    terminal_api: bool = False


def _start(start: _Start, outbox: Outbox) -> PaymentAccepted | StoredResult:
    """Store a payment or a refund and forward it, in one commit: the one lifecycle of both."""
    request = start.request
    tid = request["transactionId"]
    group_id = start.group_id
    terminal = None
    try:
        with transaction.atomic():
            # One statement: the transactionId in the store, the terminal with its connection,
            # other work in flight on it, and whether it may have an active session. Read in
            # the payment's transaction: on SQLite nothing can begin between it and the insert.
            others, subqueries = _target_subqueries()
            resolution = resolve_terminal(
                group_id=group_id,
                terminal_id=start.terminal_id,
                device_id_only=start.device_id_only,
                also=[(_EXISTING, (group_id, tid)), *subqueries],
            )
            existing_pk, *busy_ids, in_session = resolution.extras
            if existing_pk is not None:
                existing = Transaction.objects.select_related("terminal", "original").get(
                    pk=existing_pk
                )
                return _repeat(existing, start, outbox)
            original = None
            if start.refund:
                original, amount, reserved = _refund_reserve(group_id, request)
                request = {**request, "amount": amount, "currency": original.currency}
            if isinstance(resolution.error, NotFound):
                resolution.error.extra["transactionId"] = tid
            terminal, live = resolution.require()
            if live is None:
                raise NotFound(TERMINAL_NOT_FOUND, transactionId=tid)
            for kind, busy_id in zip(others, busy_ids, strict=True):
                if busy_id is not None:
                    raise Conflict(TERMINAL_BUSY, transactionId=tid, **{kind.key: busy_id})
            txn = _transaction_insert(start, terminal, request, original)
            requested: dict[str, Any] = {}
            if original is not None:
                requested = {"refundableBefore": format_amount(reserved, original.currency)}
                if start.user is not None:
                    requested["user"] = start.user.get_username()
            _insert_events(
                (txn.pk, EventKind.REQUESTED, start.source, "", "PENDING", requested),
                (
                    txn.pk,
                    EventKind.FORWARDED,
                    EventSource.GATEWAY,
                    "PENDING",
                    "IN_PROGRESS",
                    {"connectionId": live.connection_id},
                ),
            )
            screen = None
            if in_session is not None:
                screen = occupancy.waiting_screen(
                    terminal_pk=terminal.pk, operation_type=OPERATION_TYPE
                )
            outbox.publish(
                PaymentForwarded(txn, start.desktop_connection_id, screen, live.channel_name)
            )
            outbox.publish(PaymentChanged.of(txn, EventKind.FORWARDED))
    except IntegrityError:
        # Lost a race with another request: the same transactionId, or the terminal got busy.
        winner = (
            Transaction.objects.select_related("terminal", "original")
            .filter(group_id=group_id, transaction_id=tid)
            .first()
        )
        if winner is not None:
            return _repeat(winner, start, outbox)
        busy = _busy(terminal, tid) if terminal is not None else None
        if busy is None:
            raise  # neither race: the database refused for a reason of its own
        raise busy from None
    what = "refund" if start.refund else "payment"
    _log(
        txn,
        f"{what} forwarded to terminal {terminal.device_id or terminal.pk}",
        "PENDING",
        txn.status,
    )
    return PaymentAccepted(txn, start.terminal_id, live.connection_id)


# A payment's refunds still in flight, added up: reserved from its refundable amount.
_IN_FLIGHT_REFUNDS = statement(
    "SELECT COALESCE(SUM({Transaction.amount}), 0) FROM {Transaction}"
    " WHERE {Transaction.original} = %s AND {Transaction.status} IN ('PENDING', 'IN_PROGRESS')",
    Transaction,
)


def refundable_amount(payment: Transaction) -> Decimal:
    """What may still be refunded of a payment: its amount minus its succeeded refunds minus
    its refunds in flight (exact only under the payment's row lock, as ``_refund_reserve``
    reads it; elsewhere it is what the page shows)."""
    (in_flight,) = _execute(_IN_FLIGHT_REFUNDS, [payment.pk], fetch="one")
    return (
        payment.amount - payment.refunded_amount - Decimal(str(in_flight))
    )  # a REAL on SQLite: see _refund_succeeded


def _refund_reserve(group_id: int, request: dict[str, Any]) -> tuple[Transaction, str, Decimal]:
    """The rules of a refund (contract section 9), checked under a lock on the payment's row:
    (the payment, the refund's amount normalised, the refundable amount before it)."""
    tid = request["transactionId"]
    # FOR NO KEY UPDATE: every refund of this payment, on any process, waits here until this
    # one is stored (and counted in flight) or refused; results of its refunds wait too.
    original = (
        Transaction.objects.select_for_update(no_key=True)
        .filter(group_id=group_id, transaction_id=request["originalTransactionId"])
        .first()
    )
    if original is None or original.type != TransactionType.PAYMENT:
        raise NotFound(TRANSACTION_NOT_FOUND, transactionId=tid)
    if original.status != TransactionStatus.SUCCESS:
        raise Conflict(
            ONLY_SUCCESSFUL_PAYMENT_REFUNDABLE,
            transactionId=tid,
            originalTransactionId=original.transaction_id,
            status=original.status,
        )
    currency = request["currency"]
    if currency is not None and currency != original.currency:
        raise BadRequest(REFUND_CURRENCY_MISMATCH, transactionId=tid, currency=original.currency)
    refundable = refundable_amount(original)
    shown = format_amount(max(refundable, Decimal(0)), original.currency)
    if request["amount"] is None:
        if refundable <= 0:
            raise BadRequest(REFUND_EXCEEDS_REFUNDABLE, transactionId=tid, refundableAmount=shown)
        return original, shown, refundable
    amount = parse_amount(request["amount"], original.currency, path="refundRequest.amount")
    if Decimal(amount) > refundable:
        raise BadRequest(REFUND_EXCEEDS_REFUNDABLE, transactionId=tid, refundableAmount=shown)
    return original, amount, refundable


def _transaction_insert(
    start: _Start, terminal: Device, request: dict[str, Any], original: Transaction | None
) -> Transaction:
    """The new transaction, stored IN_PROGRESS: it is forwarded in the same commit."""
    now = timezone.now()
    txn = Transaction(
        group_id=start.group_id,
        transaction_id=request["transactionId"],
        amount=Decimal(request["amount"]),
        currency=request["currency"],
        status=TransactionStatus.IN_PROGRESS,
        desktop=start.desktop,
        terminal=terminal,
        terminal_ref=start.terminal_id,
        desktop_connection_id=start.desktop_connection_id,
        terminal_api=start.terminal_api,
        forwarded_at=now,
        deadline_at=now + dt.timedelta(seconds=settings.PAYMENT_TIMEOUT_S),
    )
    if original is None:
        txn.payment_method = request["paymentMethod"]
        txn.products = request["products"]
        txn.customer_info = request["customerInfo"]
        txn.metadata = request["metadata"]
    else:
        txn.type = TransactionType.REFUND
        txn.original = original
        txn.payment_method = original.payment_method
        txn.reason = request["reason"]
        txn.initiated_by = start.user
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


def _repeat(txn: Transaction, start: _Start, outbox: Outbox) -> PaymentAccepted | StoredResult:
    """A transactionId the store already used: the same request again is answered with the
    transaction's state (its stored result once final); anything else is a reused id."""
    request = start.request
    same_terminal = names_terminal(
        terminal=txn.terminal, terminal_id=start.terminal_id, as_named=txn.terminal_ref
    )
    if start.refund:
        amount, currency = request["amount"], request["currency"]
        same = (
            txn.is_refund
            and txn.original is not None
            and txn.original.transaction_id == request["originalTransactionId"]
            and (currency is None or currency == txn.currency)
            and (amount is None or _same_amount(amount, txn))
            and same_terminal
        )
    else:
        same = (
            not txn.is_refund
            and Decimal(request["amount"]) == txn.amount
            and request["currency"] == txn.currency
            and same_terminal
        )
    if not same:
        raise Conflict(TRANSACTION_ID_REUSED, transactionId=txn.transaction_id)
    TransactionEvent.objects.create(
        transaction=txn,
        kind=EventKind.DUPLICATE,
        source=start.source,
        detail={"status": txn.status},
    )
    outbox.publish(PaymentChanged.of(txn, EventKind.DUPLICATE))
    _log(txn, f"repeated while {txn.status}")
    if txn.is_final:
        return StoredResult(_stored_result(txn), txn)
    if start.terminal_api and not txn.terminal_api:
        # A Terminal API message names a payment started over the WebSocket: from now on its
        # end is announced to the message's waiters too (a result committed meanwhile is
        # read by their first look at the database).
        Transaction.objects.filter(pk=txn.pk).update(terminal_api=True)
        txn.terminal_api = True
    live = live_connection(device_id=txn.terminal_id)
    return PaymentAccepted(
        txn, start.terminal_id, live.connection_id if live else None, duplicate=True
    )


def _same_amount(amount: str, txn: Transaction) -> bool:
    try:
        return Decimal(parse_amount(amount, txn.currency)) == txn.amount
    except BadRequest:
        return False


def _stored_result(txn: Transaction) -> dict[str, Any]:
    """The result of a finished transaction as its desktop was last sent it."""
    message = DesktopMessage.objects.filter(transaction=txn).order_by("-seq").only("frame").first()
    if message is not None:
        return message.frame
    return result_of(txn)  # a refund started by staff: it has no desktop


def payment_forward_failed(outbox: Outbox, *, group_id: int, transaction_id: str) -> None:
    """The channel layer refused to hand the request to its terminal (Redis down): the payment
    stays in flight and the hand-off is tried again until it gets through or the deadline
    passes (posgateway.core.forwarding). The desktop was answered ``paymentAccepted`` as usual:
    an outage of the layer is the gateway's to ride out, not the cashier's."""
    txn = (
        Transaction.objects.filter(
            group_id=group_id, transaction_id=transaction_id, status__in=IN_FLIGHT_STATUSES
        )
        .only("pk", "group_id", "transaction_id", "status", "type", "late", "original_id")
        .first()
    )
    if txn is None or not forwarding.schedule(Transaction, pk=txn.pk, in_flight=IN_FLIGHT_STATUSES):
        return  # finished meanwhile, or a retry already waits
    _note(txn, EventKind.FORWARD_REFUSED, EventSource.GATEWAY, outbox)
    _log(txn, "hand-off to the terminal refused by the channel layer; it will be tried again")


def forwards_due(*, limit: int = 100) -> list[tuple[forwarding.Claim, PaymentForwarded]]:
    """Payments whose refused hand-off is due another try, each claimed for this process, with
    the request to hand off: marked ``resent``, to the terminal's connection of now. A terminal
    that is not connected is sent it when it connects (``in_flight_requests``)."""
    due: list[tuple[forwarding.Claim, PaymentForwarded]] = []
    for claim in forwarding.claim_due(Transaction, in_flight=IN_FLIGHT_STATUSES, limit=limit):
        txn = Transaction.objects.select_related("original").get(pk=claim[0])
        live = live_connection(device_id=txn.terminal_id)
        if live is None:
            forwarding.confirm(Transaction, [claim])
            continue
        _note(txn, EventKind.RESENT, EventSource.GATEWAY, None, attempt=claim[1])
        _log(txn, f"hand-off to the terminal tried again (try {claim[1]})")
        due.append((claim, _resent(txn, live.channel_name)))
    return due


def forwards_confirmed(*, claims: list[forwarding.Claim]) -> None:
    """These tries were handed to the channel layer: their payments stop waiting for one."""
    forwarding.confirm(Transaction, claims)


# --- Results ---------------------------------------------------------------------------------


def payment_result(
    *,
    terminal: Device,
    payment_response: Any,
    outbox: Outbox,
    kind: str = TransactionType.PAYMENT,
) -> None:
    """Record a terminal's result (late ones too) and push it to the desktop that paid.

    ``kind`` REFUND for a ``refundResponse``: it names a refund, never a payment.
    """
    root = "refundResponse" if kind == TransactionType.REFUND else "paymentResponse"
    response = validate_payment_response(payment_response, root)
    tid = response["transactionId"]
    new = response["status"]
    with transaction.atomic():
        if _record_result(
            terminal,
            response,
            where=_WHERE_IN_PROGRESS,
            params=[terminal.group_id, tid, terminal.pk, str(kind)],
            old=TransactionStatus.IN_PROGRESS,
            kind=EventKind.RESULT,
            late=False,
            outbox=outbox,
        ):
            return
        # FOR NO KEY UPDATE: rows that merely reference this one (an ack's "delivered" event)
        # must not wait for it, or an ack holding the desktop row deadlocks with a late result.
        txn = (
            Transaction.objects.select_for_update(no_key=True)
            .filter(group_id=terminal.group_id, transaction_id=tid, terminal=terminal, type=kind)
            .first()
        )
        if txn is None:
            raise NotFound(TRANSACTION_NOT_FOUND, transactionId=tid)
        old = txn.status
        by_pk: _Found = {"where": _WHERE_PK, "params": [txn.pk], "old": old, "outbox": outbox}
        if old in IN_FLIGHT_STATUSES:
            _record_result(terminal, response, kind=EventKind.RESULT, late=False, **by_pk)
            return
        if old == new:
            return  # the terminal repeated a result we already have
        if old in (TransactionStatus.TIMEOUT, TransactionStatus.CANCELLED) or (
            # The gateway gave the terminal up for unreachable, yet the request got there (a
            # channel-layer send can fail after it delivered): the money may have moved.
            old == TransactionStatus.FAILED
            and txn.events.filter(kind=EventKind.FAILED, source=EventSource.GATEWAY).exists()
        ):
            _record_result(terminal, response, kind=EventKind.LATE_RESULT, late=True, **by_pk)
            return
        _note(txn, EventKind.IGNORED_RESULT, EventSource.TERMINAL, outbox, paymentResponse=response)
        _log(txn, f"conflicting result {new} ignored, already {old}")
    # Raised after the commit, so the ignored result stays in the event log.
    raise Conflict("Transaction already completed", transactionId=tid, status=old)


# Recording a terminal's result, the one implementation of that state change. The usual case
# (the payment is IN_PROGRESS) is one statement that both finds and finishes it: on PostgreSQL
# the UPDATE takes the same row lock (FOR NO KEY UPDATE) as the locking read of payment_result,
# and re-checks the status once it has it: a payment a timeout finished meanwhile is not found
# and goes the locking read's way (a late result), which records it by primary key.
_RECORD_RESULT = statement(
    "UPDATE {Transaction} SET {Transaction.status} = %s,"
    " {Transaction.late} = ({Transaction.late} OR %s), {Transaction.authorization_code} = %s,"
    " {Transaction.error_message} = %s, {Transaction.payment_response} = %s,"
    " {Transaction.completed_at} = %s, {Transaction.updated_at} = %s WHERE ",
    Transaction,
)
_WHERE_IN_PROGRESS = statement(
    "{Transaction.group} = %s AND {Transaction.transaction_id} = %s"
    " AND {Transaction.terminal} = %s AND {Transaction.type} = %s"
    f" AND {{Transaction.status}} = '{TransactionStatus.IN_PROGRESS.value}'",
    Transaction,
)
_WHERE_PK = statement("{Transaction.id} = %s", Transaction)
_RETURNING = statement(
    " RETURNING {Transaction.id}, {Transaction.desktop}, {Transaction.late}, {Transaction.type},"
    " {Transaction.terminal_api}",
    Transaction,
)


class _Found(TypedDict):
    """``_record_result``'s arguments for a payment already read: its row, its status."""

    where: str
    params: list[Any]
    old: str
    outbox: Outbox


def _record_result(
    terminal: Device,
    response: dict[str, Any],
    *,
    where: str,
    params: list[Any],
    old: str,
    kind: str,
    late: bool,
    outbox: Outbox,
) -> bool:
    """Store the terminal's result on the payment ``where`` finds; False if it finds none."""
    tid, new = response["transactionId"], response["status"]
    code = (response.get("authorizationCode") or "")[:64]
    error = response.get("errorMessage") or ""
    now = timezone.now()
    stamp = _dt(now)
    payment_response = Transaction._meta.get_field("payment_response")
    row = _execute(
        _RECORD_RESULT + where + _RETURNING,
        [
            new,
            late,
            code,
            error,
            payment_response.get_db_prep_save(response, _db()),
            stamp,
            stamp,
            *params,
        ],
        fetch="one",
    )
    if row is None:
        return False
    pk, desktop_pk, stored_late, kind_of, terminal_api = row
    if kind_of == TransactionType.REFUND:
        refund = Transaction.objects.select_related("original").get(pk=pk)
        _result_recorded(refund, old, kind, late, outbox)
        if refund.status == TransactionStatus.SUCCESS:
            _refund_succeeded(refund, outbox)
        return True
    txn = _loaded(
        Transaction,
        id=pk,
        group_id=terminal.group_id,
        transaction_id=tid,
        type=TransactionType.PAYMENT.value,
        original_id=None,
        terminal_id=terminal.pk,
        desktop_id=desktop_pk,
        status=new,
        late=bool(stored_late),
        terminal_api=bool(terminal_api),
        authorization_code=code,
        error_message=error,
        payment_response=response,
        completed_at=now,
        updated_at=now,
    )
    _result_recorded(txn, old, kind, late, outbox)
    return True


def _result_recorded(txn: Transaction, old: str, kind: str, late: bool, outbox: Outbox) -> None:
    """After a terminal's result is stored: its event, the dashboards, the log, the desktop."""
    detail = {"late": late} if late else {}
    _insert_events((txn.pk, kind, EventSource.TERMINAL, old, txn.status, detail))
    # The store's webhooks: one INSERT, in this transaction (webhooks.services).
    transaction_event_record(
        group_id=txn.group_id, pk=txn.pk, kind=txn.type, status=txn.status, late=late
    )
    outbox.publish(PaymentChanged.of(txn, kind))
    _log(txn, "late result" if late else "result", old, txn.status)
    _push_result(txn, outbox)


# The result's message, returning the desktop's live connection of now. Read in this statement,
# after desktop_next_seq locked the desktop's row: on PostgreSQL a statement sees what committed
# before it began, so a desktop that reconnected while we waited for its row is reached on its
# new connection.
_MESSAGE_RETURNING = statement(
    "id, (SELECT c.{Connection.channel_name} FROM {Connection} c"
    " WHERE c.{Connection.device} = %s AND c.{Connection.closed_at} IS NULL"
    " ORDER BY c.{Connection.connected_at} DESC LIMIT 1)",
    Connection,
)


def result_of(txn: Transaction, seq: int | None = None) -> dict[str, Any]:
    """A finished transaction's result as its desktop is sent it (``paymentComplete`` /
    ``refundComplete`` without the action): seq, transactionId, the terminal's answer (a
    refund's with its originalTransactionId, amount and currency), late, timestamp."""
    result: dict[str, Any] = {"seq": seq} if seq is not None else {}
    result["transactionId"] = txn.transaction_id
    if txn.is_refund:
        assert txn.original is not None
        result["refundResponse"] = {
            **(txn.payment_response or {}),
            "originalTransactionId": txn.original.transaction_id,
            "amount": format_amount(txn.amount, txn.currency),
            "currency": txn.currency,
        }
    else:
        result["paymentResponse"] = txn.payment_response
    result["late"] = txn.late
    result["timestamp"] = now_iso()
    return result


def _push_result(txn: Transaction, outbox: Outbox) -> DesktopMessage | None:
    """Number the result for its desktop device, keep it until acked, push it now. A refund
    started by staff (REST API, dashboard) has no desktop: they read its result there."""
    if txn.desktop_id is None:
        return None
    seq = desktop_next_seq(desktop_pk=txn.desktop_id)
    result = result_of(txn, seq)
    message = DesktopMessage(device_id=txn.desktop_id, seq=seq, transaction=txn, frame=result)
    message.pk, channel = _insert(message, returning=_MESSAGE_RETURNING, params=(txn.desktop_id,))
    if channel is not None:
        outbox.publish(ResultPushed(result, channel))
    return message


# A refund succeeded: its payment's refunded amount grows by it, in one statement that also
# says whether the refunds now add up to more than the payment.
_ADD_REFUNDED = statement(
    "UPDATE {Transaction} SET {Transaction.refunded_amount} = {Transaction.refunded_amount} + %s,"
    " {Transaction.updated_at} = %s WHERE {Transaction.id} = %s"
    " RETURNING {Transaction.refunded_amount}, {Transaction.amount}, {Transaction.over_refunded}",
    Transaction,
)


def _column_decimal(value: Any) -> Decimal:
    """An amount column's value as the database returned it, with the column's 4 decimals."""
    return Decimal(str(value)).quantize(Decimal("0.0001"))


def _refund_succeeded(refund: Transaction, outbox: Outbox) -> None:
    """Count a succeeded refund (late ones too: the money has moved) on its payment; flag the
    payment for a person when its refunds now exceed it."""
    payment = refund.original
    assert payment is not None
    refunded, amount, flagged = _execute(
        _ADD_REFUNDED, [refund.amount, _dt(timezone.now()), payment.pk], fetch="one"
    )
    # SQLite does the sum in floating point (4.99 comes back 4.99000000000000021...): back to
    # the column's four decimals, as the ORM reads them.
    refunded, amount = _column_decimal(refunded), _column_decimal(amount)
    payment.refunded_amount = refunded
    money = functools.partial(format_amount, currency=payment.currency)
    _note(
        payment,
        EventKind.REFUNDED,
        EventSource.TERMINAL,
        outbox,
        refundTransactionId=refund.transaction_id,
        amount=money(refund.amount),
        refundedAmount=money(refunded),
        late=refund.late,
    )
    _log(
        payment,
        f"refund {refund.transaction_id} of {money(refund.amount)} succeeded,"
        f" refunded {money(refunded)} of {money(amount)}",
    )
    if refunded > amount and not flagged:
        Transaction.objects.filter(pk=payment.pk).update(over_refunded=True)
        payment.over_refunded = True
        _note(
            payment,
            EventKind.OVER_REFUNDED,
            EventSource.GATEWAY,
            outbox,
            refundTransactionId=refund.transaction_id,
            refundedAmount=money(refunded),
            amount=money(amount),
        )
        logger.warning(
            "transactionId=%s store=%s refunds exceed the payment: refunded %s of %s after "
            "the late success of refund %s; money has moved, check with the acquirer",
            payment.transaction_id,
            payment.group_id,
            money(refunded),
            money(amount),
            refund.transaction_id,
        )


def _finish_by_gateway(
    *,
    group_id: int,
    transaction_id: str,
    status: str,
    kind: str,
    error_message: str,
    outbox: Outbox,
    only_before: dt.datetime | None = None,
) -> Transaction | None:
    """The gateway ends an in-flight payment (its timeout). Exactly once."""
    with transaction.atomic():
        txn = (
            Transaction.objects.select_for_update(of=("self",), no_key=True)
            .select_related("terminal", "original")
            .filter(group_id=group_id, transaction_id=transaction_id, status__in=IN_FLIGHT_STATUSES)
            .first()
        )
        if txn is None or (only_before and txn.deadline_at and txn.deadline_at > only_before):
            return None  # finished meanwhile, by another process or by the terminal
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
        outbox.publish(PaymentChanged.of(txn, kind))
        transaction_event_record(
            group_id=txn.group_id, pk=txn.pk, kind=txn.type, status=status, late=False
        )
        _log(txn, error_message, old, status)
        if status == TransactionStatus.TIMEOUT:
            live = live_connection(device_id=txn.terminal_id)
            if live is not None:
                outbox.publish(CancelForwarded(txn.transaction_id, live.channel_name))
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
        Transaction.objects.select_related("terminal", "original")
        .filter(group_id=group_id, transaction_id=transaction_id)
        .first()
    )
    if txn is None:
        raise NotFound(TRANSACTION_NOT_FOUND, transactionId=transaction_id)
    return txn


def payment_cancel(
    *, group_id: int, transaction_id: Any, outbox: Outbox
) -> CancelRequested | StoredResult:
    """Ask the terminal to cancel; its answer (or the timeout) decides the outcome."""
    txn = _get(group_id, transaction_id)
    if txn.is_final:
        return StoredResult(_stored_result(txn), txn)
    _note(txn, EventKind.CANCEL_REQUESTED, EventSource.DESKTOP, outbox)
    live = live_connection(device_id=txn.terminal_id)
    if live is not None:
        outbox.publish(CancelForwarded(txn.transaction_id, live.channel_name))
    _log(txn, "cancel requested" + ("" if live else " (terminal not connected)"))
    return CancelRequested(txn, forwarded=live is not None)


def payment_status(*, group_id: int, transaction_id: Any) -> Transaction:
    """The store's transaction of this transactionId, for the desktop asking about it."""
    return _get(group_id, transaction_id)


# Whether a result up to seq is still unacknowledged (the desktop's ack then moves acked_seq).
MAX_SEQ = 2**63 - 1  # a BigIntegerField's largest value

_UNACKED_UP_TO = statement(
    "EXISTS (SELECT 1 FROM {DesktopMessage} m WHERE m.{DesktopMessage.device} = %s"
    " AND m.{DesktopMessage.seq} <= %s AND m.{DesktopMessage.acked_at} IS NULL)",
    DesktopMessage,
)
_ACK_MESSAGES = statement(
    "UPDATE {DesktopMessage} SET {DesktopMessage.acked_at} = %s"
    " WHERE {DesktopMessage.device} = %s AND {DesktopMessage.seq} <= %s"
    " AND {DesktopMessage.acked_at} IS NULL RETURNING {DesktopMessage.transaction},"
    " {DesktopMessage.seq}, (SELECT t.{Transaction.transaction_id} FROM {Transaction} t"
    " WHERE t.{Transaction.id} = {DesktopMessage}.{DesktopMessage.transaction})",
    DesktopMessage,
    Transaction,
)


def results_ack(*, desktop: Device, seq: Any, outbox: Outbox | None = None) -> None:
    """The desktop has every result up to seq: stop re-sending them."""
    # Seqs are 64-bit integers in the database: a bigger one was never sent (and would not
    # fit in the query's parameter).
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise BadRequest("seq must be a non-negative integer")
    with transaction.atomic():
        if not desktop_seq_acked(
            desktop_pk=desktop.pk, seq=seq, unacked=(_UNACKED_UP_TO, [desktop.pk, seq])
        ):
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
            delivered = tuple(sorted({tid for *_, tid in acked}))
            outbox.publish(PaymentsDelivered(desktop.group_id, delivered))


# --- Reconnection ----------------------------------------------------------------------------


def unacked_results(*, desktop_pk: int, after_seq: int = 0) -> list[ResultPushed]:
    """Every result of this desktop device not yet acknowledged (numbered above ``after_seq``),
    in seq order."""
    since = timezone.now() - dt.timedelta(seconds=settings.REDELIVERY_WINDOW_S)
    results = (
        DesktopMessage.objects.filter(
            device_id=desktop_pk, acked_at__isnull=True, created_at__gte=since, seq__gt=after_seq
        )
        .order_by("seq")
        .values_list("frame", flat=True)
    )
    return [ResultPushed(result) for result in results]


@transaction.atomic
def in_flight_requests(
    *, terminal_pk: int, outbox: Outbox | None = None
) -> list[PaymentForwarded | CancelForwarded]:
    """Payments still in flight to a terminal that just reconnected, marked ``resent``."""
    # Locked: a payment timing out meanwhile is either not re-sent, or re-sent first.
    txns = list(
        Transaction.objects.select_for_update(of=("self",), no_key=True)
        .select_related("original")
        .filter(terminal_id=terminal_pk, status__in=IN_FLIGHT_STATUSES)
    )
    resent: list[PaymentForwarded | CancelForwarded] = []
    for txn in txns:
        _note(txn, EventKind.RESENT, EventSource.GATEWAY, outbox)
        _log(txn, "resent to the reconnected terminal")
        resent.append(_resent(txn))
        # A cancel the terminal never got (it was away) follows its request, or the terminal
        # would go on to charge a payment the POS cancelled.
        if txn.events.filter(kind=EventKind.CANCEL_REQUESTED).exists():
            _log(txn, "cancel resent to the reconnected terminal")
            resent.append(CancelForwarded(txn.transaction_id))
    return resent


def _resent(txn: Transaction, channel_name: str | None = None) -> PaymentForwarded:
    """The request of an in-flight payment sent again, marked ``resent``."""
    screen = occupancy.waiting_screen(terminal_pk=txn.terminal_id, operation_type=OPERATION_TYPE)
    # The desktop that paid may have reconnected too: name its connection of now.
    desktop_live = None if txn.desktop_id is None else live_connection(device_id=txn.desktop_id)
    desktop_id = desktop_live.connection_id if desktop_live else txn.desktop_connection_id
    return PaymentForwarded(txn, desktop_id, screen, channel_name, resent=True)


__all__ = [
    "FINAL_STATUSES",
    "forwards_confirmed",
    "forwards_due",
    "in_flight_requests",
    "payment_cancel",
    "payment_forward_failed",
    "payment_result",
    "payment_start",
    "payment_status",
    "refund_start",
    "refundable_amount",
    "result_of",
    "results_ack",
    "sweep_payment_timeouts",
    "unacked_results",
]


# --- Needs attention -------------------------------------------------------------------------

MAX_RESOLVE_NOTE = 500


def attention_resolve(
    *, txn: Transaction, case: str, note: str, user: Any, outbox: Outbox
) -> TransactionEvent:
    """A manager marks one needs-attention item of a payment or refund resolved, with a note:
    a ``resolved`` event on its log (the case, the note, who; the event's time is when). The
    caller checked that ``user`` manages the store. Raises ``BadRequest`` for a missing or
    unprintable note, ``Conflict`` for an item that is not open (never was, or already
    resolved: by whom and when)."""
    note = note.strip() if isinstance(note, str) else ""
    if not note:
        raise BadRequest("Write a note: what was checked, and what was done.")
    one_line = note.replace("\r\n", " ").replace("\n", " ")
    if len(note) > MAX_RESOLVE_NOTE or not one_line.isprintable():
        raise BadRequest(
            f"The note must be printable text of at most {MAX_RESOLVE_NOTE} characters."
        )
    if case not in {c.value for c in AttentionCase}:
        raise BadRequest(f"Unknown case {case!r}.")
    with transaction.atomic():
        # Locked: two managers resolving the same item at once get one event, one refusal.
        locked = Transaction.objects.select_for_update(no_key=True).get(pk=txn.pk)
        if case not in {item.case.value for item in attention_items_of(txn=locked)}:
            earlier = (
                locked.events.filter(kind=EventKind.RESOLVED, detail__case=case)
                .order_by("-pk")
                .first()
            )
            if earlier is not None:
                who = earlier.detail.get("user") or "someone"
                at = f"{earlier.created_at:%Y-%m-%d %H:%M} UTC"
                raise Conflict(f"Already resolved by {who} at {at}.")
            raise Conflict("Nothing of this kind needs attention on this transaction.")
        event = TransactionEvent.objects.create(
            transaction=locked,
            kind=EventKind.RESOLVED,
            source=EventSource.DASHBOARD,
            old_status=locked.status,
            new_status=locked.status,
            detail={"case": case, "note": note, "user": user.get_username(), "userId": user.pk},
        )
        outbox.publish(PaymentChanged.of(locked, EventKind.RESOLVED))
        _log(locked, f"{case} resolved by {user.get_username()}")
    return event
