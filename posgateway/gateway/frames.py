"""Every frame the gateway sends, each built by one function here.

The domain publishes events and answers with outcomes (``<app>/events.py``); this module turns
them into the JSON frames of the WebSocket protocol (contract sections 3-5, docs/protocol.md)
and the staff dashboards' socket messages. ``SENT_ACTIONS`` lists every action the gateway
sends; a test checks docs/protocol.md against it. Errors are built by the one mapper,
``posgateway.core.protocol.error_frame``.
"""

from __future__ import annotations

import hashlib
from functools import singledispatch
from typing import Any

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
from payments.models import Transaction
from payments.validation import format_amount
from posgateway.core.protocol import iso, now_iso
from sessions.events import (
    RequestAccepted,
    RequestChanged,
    RequestCompleted,
    RequestForwarded,
    SessionBegun,
    SessionChanged,
    SessionEnded,
)
from terminals.events import DeviceChanged, TerminalStatus, TerminalStatusChanged

Frame = dict[str, Any]

# Every action a device is sent (the desktop's and the terminal's), in protocol order.
SENT_ACTIONS = (
    "connected",
    "pong",
    "terminalsResponse",
    "terminalStatusUpdate",
    "paymentAccepted",
    "paymentRequest",
    "paymentComplete",
    "refundAccepted",
    "refundRequest",
    "refundComplete",
    "cancelPayment",
    "cancelRequested",
    "transactionStatus",
    "displayAccepted",
    "displayRequest",
    "displayComplete",
    "inputAccepted",
    "inputRequest",
    "inputComplete",
    "sessionBegin",
    "sessionEnd",
    "terminalApiResponse",
    "forceDisconnect",
)
# The results a desktop is sent numbered by seq (one stream, acknowledged by ``ack``).
RESULT_ACTIONS = frozenset({"paymentComplete", "refundComplete"})
# The requests a terminal acts on (it may charge a card): written on one connection once.
REQUEST_ACTIONS = frozenset({"paymentRequest", "refundRequest", "displayRequest", "inputRequest"})


def request_key(frame: Frame) -> str | None:
    """What makes a request to a terminal the same request (``paymentRequest:T-1``), or None
    for frames that are not requests. The gateway's sends of one request (the first, a
    recovery re-send after a channel-layer outage, a retry of a refused hand-off) share it."""
    action = frame.get("action")
    if action not in REQUEST_ACTIONS:
        return None
    if action in ("paymentRequest", "refundRequest"):
        return f"{action}:{frame[action]['transactionId']}"
    return f"{action}:{frame['requestId']}"


# --- Connection and terminals --------------------------------------------------------------


def connected(*, connection_id: str, device_id: str | None, device_type: str, group: str) -> Frame:
    return {
        "action": "connected",
        "connectionId": connection_id,
        "deviceId": device_id,
        "deviceType": device_type,
        "group": group,
        "timestamp": now_iso(),
    }


def pong() -> Frame:
    return {"action": "pong", "timestamp": now_iso()}


def force_disconnect(reason: str) -> Frame:
    return {"action": "forceDisconnect", "reason": reason}


def terminal(status: TerminalStatus) -> Frame:
    """A terminal as it appears in ``terminalsResponse`` and ``terminalStatusUpdate``."""
    return {
        "connectionId": status.connection_id,
        "deviceId": status.device_id,
        "connectedAt": iso(status.connected_at),
        "lastActivity": iso(status.last_activity),
        "status": status.status,
        "metadata": status.metadata,
    }


def terminals_response(terminals: list[TerminalStatus]) -> Frame:
    return {
        "action": "terminalsResponse",
        "terminals": [terminal(t) for t in terminals],
        "timestamp": now_iso(),
    }


def terminal_status_update(event: TerminalStatusChanged) -> Frame:
    return {
        "action": "terminalStatusUpdate",
        "terminal": terminal(event.terminal),
        "timestamp": now_iso(),
    }


# --- Payments --------------------------------------------------------------------------------


def payment_request_body(txn: Transaction) -> Frame:
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


def _to_terminal(frame: Frame, event: PaymentForwarded | RequestForwarded) -> Frame:
    """A request forwarded to a terminal: inside a session it carries the waitingScreen; sent
    again to a reconnected terminal it is marked ``resent``."""
    if event.waiting_screen is not None:
        frame["waitingScreen"] = event.waiting_screen
    if event.resent:
        frame["resent"] = True
    return frame


def refund_request_body(txn: Transaction) -> Frame:
    """A refund as the terminal receives it, with the details of the payment it refunds."""
    original = txn.original
    assert original is not None
    return {
        "transactionId": txn.transaction_id,
        "originalTransactionId": original.transaction_id,
        "amount": format_amount(txn.amount, txn.currency),
        "currency": txn.currency,
        "reason": txn.reason,
        "original": {
            "transactionId": original.transaction_id,
            "amount": format_amount(original.amount, original.currency),
            "currency": original.currency,
            "authorizationCode": original.authorization_code or None,
            "createdAt": iso(original.created_at),
        },
    }


def payment_request(event: PaymentForwarded) -> Frame:
    """``paymentRequest`` (or ``refundRequest``) to the terminal."""
    txn = event.txn
    if txn.is_refund:
        frame: Frame = {
            "action": "refundRequest",
            "desktopId": event.desktop_connection_id or None,
            "refundRequest": refund_request_body(txn),
            "timestamp": now_iso(),
        }
    else:
        frame = {
            "action": "paymentRequest",
            "desktopId": event.desktop_connection_id,
            "paymentRequest": payment_request_body(txn),
            "timestamp": now_iso(),
        }
    return _to_terminal(frame, event)


def refund_accepted(outcome: PaymentAccepted) -> Frame:
    txn = outcome.txn
    assert txn.original is not None
    frame: Frame = {
        "action": "refundAccepted",
        "transactionId": txn.transaction_id,
        "originalTransactionId": txn.original.transaction_id,
        "terminalId": outcome.terminal_ref,
        "deviceId": txn.terminal.device_id or None,
        "connectionId": outcome.connection_id,
        "amount": format_amount(txn.amount, txn.currency),
        "currency": txn.currency,
        "status": txn.status,
        "timestamp": now_iso(),
    }
    if outcome.duplicate:
        frame["duplicate"] = True
    return frame


def payment_accepted(outcome: PaymentAccepted) -> Frame:
    txn = outcome.txn
    if txn.is_refund:
        return refund_accepted(outcome)
    frame: Frame = {
        "action": "paymentAccepted",
        "transactionId": txn.transaction_id,
        "terminalId": outcome.terminal_ref,
        "deviceId": txn.terminal.device_id or None,
        "connectionId": outcome.connection_id,
        "status": txn.status,
        "timestamp": now_iso(),
    }
    if outcome.duplicate:
        frame["duplicate"] = True
    return frame


def payment_complete(result: dict[str, Any]) -> Frame:
    """A stored result (``ResultPushed.result``: seq, transactionId, paymentResponse or
    refundResponse, late, timestamp) as its desktop receives it, now and on every redelivery:
    ``paymentComplete``, or ``refundComplete`` for a refund."""
    action = "refundComplete" if "refundResponse" in result else "paymentComplete"
    return {"action": action, **result}


def cancel_payment(transaction_id: str) -> Frame:
    return {"action": "cancelPayment", "transactionId": transaction_id, "timestamp": now_iso()}


def cancel_requested(outcome: CancelRequested) -> Frame:
    return {
        "action": "cancelRequested",
        "transactionId": outcome.txn.transaction_id,
        "status": outcome.txn.status,
        "forwarded": outcome.forwarded,
        "timestamp": now_iso(),
    }


def transaction_status(txn: Transaction) -> Frame:
    """``transactionStatus`` of a payment or a refund (a refund's result is its
    ``refundResponse``; a payment adds what has been refunded of it)."""
    frame: Frame = {
        "action": "transactionStatus",
        "transactionId": txn.transaction_id,
        "type": txn.type,
        "status": txn.status,
    }
    if txn.is_refund:
        assert txn.original is not None
        frame["originalTransactionId"] = txn.original.transaction_id
        frame["amount"] = format_amount(txn.amount, txn.currency)
        frame["currency"] = txn.currency
        frame["refundResponse"] = txn.payment_response if txn.is_final else None
        frame["refundedAmount"] = None
    else:
        frame["originalTransactionId"] = None
        frame["paymentResponse"] = txn.payment_response if txn.is_final else None
        frame["refundedAmount"] = format_amount(txn.refunded_amount, txn.currency)
    frame.update(
        {
            "late": txn.late,
            "createdAt": iso(txn.created_at),
            "updatedAt": iso(txn.updated_at),
            "completedAt": iso(txn.completed_at),
            "timestamp": now_iso(),
        }
    )
    return frame


# --- Display and input requests, sessions ----------------------------------------------------


def request_forwarded(event: RequestForwarded) -> Frame:
    """``displayRequest`` / ``inputRequest`` to the terminal."""
    frame: Frame = {
        "action": f"{event.kind}Request",
        "desktopId": event.desktop_connection_id,
        "requestId": event.request_id,
        f"{event.kind}Request": event.request,
        "timestamp": now_iso(),
    }
    return _to_terminal(frame, event)


def request_accepted(outcome: RequestAccepted) -> Frame:
    """``displayAccepted`` / ``inputAccepted`` to the desktop."""
    return {
        "action": f"{outcome.req.kind}Accepted",
        "requestId": outcome.req.request_id,
        "terminalId": outcome.terminal_ref,
        "deviceId": outcome.device_id,
        "connectionId": outcome.connection_id,
        "status": outcome.req.status,
        "timestamp": now_iso(),
    }


def request_completed(event: RequestCompleted) -> Frame:
    """``displayComplete`` / ``inputComplete`` to the desktop."""
    return {
        "action": f"{event.kind}Complete",
        "requestId": event.request_id,
        f"{event.kind}Response": event.response,
        "timestamp": now_iso(),
    }


def session_begin(event: SessionBegun) -> Frame:
    frame: Frame = {
        "action": "sessionBegin",
        "session": {"id": event.session_id, "operations": event.operations},
    }
    if event.resumed:
        frame["resumed"] = True
    frame["timestamp"] = now_iso()
    return frame


def session_end(event: SessionEnded) -> Frame:
    # Ending a session does not interrupt a waiting screen already showing (the seed).
    return {
        "action": "sessionEnd",
        "session": {"id": event.session_id},
        "interruptWaitingScreen": False,
        "reason": event.reason,
        "timestamp": now_iso(),
    }


def terminal_api_response(response: dict[str, Any]) -> Frame:
    """A Terminal API answer (``SaleToPOIResponse``) pushed to, or answering, a desktop."""
    return {"action": "terminalApiResponse", **response}


# --- Outcomes and events as frames ------------------------------------------------------------


@singledispatch
def reply(outcome: Any) -> Frame:
    """The frame answering a desktop's request with a service's outcome."""
    raise TypeError(f"no frame for {type(outcome).__name__}")


reply.register(PaymentAccepted, payment_accepted)
reply.register(CancelRequested, cancel_requested)
reply.register(Transaction, transaction_status)
reply.register(RequestAccepted, request_accepted)


@reply.register
def _(outcome: StoredResult) -> Frame:
    return payment_complete(outcome.result)


@singledispatch
def device_frame(event: Any) -> Frame | None:
    """The frame an event sends to a device's socket, or None for events that send none."""
    return None


device_frame.register(PaymentForwarded, payment_request)
device_frame.register(RequestForwarded, request_forwarded)
device_frame.register(RequestCompleted, request_completed)
device_frame.register(SessionBegun, session_begin)
device_frame.register(SessionEnded, session_end)
device_frame.register(TerminalStatusChanged, terminal_status_update)


@device_frame.register
def _(event: ResultPushed) -> Frame:
    return payment_complete(event.result)


@device_frame.register
def _(event: CancelForwarded) -> Frame:
    return cancel_payment(event.transaction_id)


# --- The staff dashboards' socket -------------------------------------------------------------
# Each state change sends one small event to the store's channel-layer group; the page then
# fetches its fragment again through the same scoped selectors as its first render:
#
#     {"type": "device",  "deviceId", "deviceType", "status", "active"}
#     {"type": "payment", "transactionId", "status", "late", "step", "kind",
#      "originalTransactionId"}   step: an EventKind value; kind PAYMENT or REFUND
#     {"type": "payment", "transactionIds": [...], "step": "delivered"}  (one ack, many results)
#     {"type": "session", "sessionId", "state"}
#     {"type": "request", "requestId", "kind", "status"}
# (``type`` first; every event carries ``timestamp``.)

DASHBOARD_GROUP_PREFIX = "dashboard.store."
# The consumer method that receives them (channels maps "dashboard.event" to dashboard_event).
DASHBOARD_MESSAGE_TYPE = "dashboard.event"


def dashboard_group(group_id: int) -> str:
    """The channel-layer group of one store's dashboards."""
    return f"{DASHBOARD_GROUP_PREFIX}{group_id}"


# Each dashboard event's type and its fields (the event's attribute behind each).
_DASHBOARD_EVENTS: dict[type, tuple[str, dict[str, str]]] = {
    DeviceChanged: (
        "device",
        {
            "deviceId": "device_id",
            "deviceType": "device_type",
            "status": "status",
            "active": "active",
        },
    ),
    PaymentChanged: (
        "payment",
        {
            "transactionId": "transaction_id",
            "status": "status",
            "late": "late",
            "step": "step",
            "kind": "type",
            "originalTransactionId": "original_transaction_id",
        },
    ),
    SessionChanged: ("session", {"sessionId": "session_id", "state": "state"}),
    RequestChanged: (
        "request",
        {"requestId": "request_id", "kind": "kind", "status": "status"},
    ),
}


def dashboard_event(event: Any) -> tuple[int, Frame] | None:
    """(store, dashboard event) for an event the dashboards hear of, else None."""
    spec = _DASHBOARD_EVENTS.get(type(event))
    if spec is not None:
        kind, fields = spec
        body = {name: getattr(event, attribute) for name, attribute in fields.items()}
        return event.group_id, {"type": kind, **body}
    if isinstance(event, PaymentsDelivered):  # one ack, many results
        ids = list(event.transaction_ids)
        return event.group_id, {"type": "payment", "transactionIds": ids, "step": "delivered"}
    return None


def dashboard_message(event: Frame) -> dict[str, Any]:
    """The channel-layer message carrying a dashboard event to the store's group."""
    return {"type": DASHBOARD_MESSAGE_TYPE, "event": {**event, "timestamp": now_iso()}}


# --- A transaction's end, for whoever waits on it ---------------------------------------------
# A finished payment or refund started through the Terminal API (Transaction.terminal_api: its
# result, late result, timeout or failure) is also sent to a group of its own, the only extra
# channel-layer message of a payment and only of those: a sync Terminal API request waits there
# without a thread
# (posgateway.gateway.waiting), and a desktop that asked over the async Terminal API or the
# terminalApi action follows it to be pushed its terminalApiResponse.

TRANSACTION_GROUP_PREFIX = "transaction."
TRANSACTION_FINISHED = "terminal_api.result"  # GatewayConsumer.terminal_api_result
_FINISHING_STEPS = frozenset({"result", "late_result", "timeout", "failed"})


def transaction_group(group_id: int, transaction_id: str) -> str:
    """The channel-layer group of one transaction (a group name is at most 100 characters of
    [A-Za-z0-9._-]: a transactionId may hold any printable character, so it is hashed)."""
    digest = hashlib.sha256(transaction_id.encode()).hexdigest()[:32]
    return f"{TRANSACTION_GROUP_PREFIX}{group_id}.{digest}"


def transaction_finished(event: Any) -> tuple[str, dict[str, Any]] | None:
    """(group, message) telling a transaction's waiters it finished, for a PaymentChanged that
    ends a transaction started through the Terminal API (only those can have waiters: the
    plain WebSocket payments send nothing more); else None."""
    if (
        not isinstance(event, PaymentChanged)
        or not event.terminal_api
        or event.step not in _FINISHING_STEPS
    ):
        return None
    message = {
        "type": TRANSACTION_FINISHED,
        "groupId": event.group_id,
        "transactionId": event.transaction_id,
    }
    return transaction_group(event.group_id, event.transaction_id), message
