"""Dashboard events: what the services publish, after commit, for the staff dashboards.

Each state change queues one small message on the store's channel-layer group
(``dashboard.store.<group pk>``) through the caller's :class:`~posgateway.realtime.Outbox`, so a
rolled-back change publishes nothing. An event only says *what* changed; the page then fetches
its own fragment again, through the same scoped selectors as the first render. A dashboard
therefore never shows more than the page itself would, and a lost event costs nothing that the
next one (or a reconnect) does not repair.

Event shapes (``type`` first; every event carries ``timestamp``):

    {"type": "device",  "deviceId", "deviceType", "status", "active"}
    {"type": "payment", "transactionId", "status", "late", "step"}   step: an EventKind value
    {"type": "payment", "transactionIds": [...], "step": "delivered"}  (one ack, many results)
    {"type": "session", "sessionId", "state"}
    {"type": "request", "requestId", "kind", "status"}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from posgateway.protocol import now_iso

if TYPE_CHECKING:
    from payments.models import Transaction
    from posgateway.realtime import Outbox
    from sessions.models import TerminalRequest, TerminalSession
    from terminals.models import Device

GROUP_PREFIX = "dashboard.store."
# The consumer method that receives them (channels maps "dashboard.event" to dashboard_event).
MESSAGE_TYPE = "dashboard.event"


def store_group(group_id: int) -> str:
    """The channel-layer group of one store's dashboards."""
    return f"{GROUP_PREFIX}{group_id}"


def publish(outbox: Outbox, group_id: int, event: dict[str, Any]) -> None:
    """Queue ``event`` for the dashboards of store ``group_id``, sent once the caller flushes."""
    outbox.group(
        store_group(group_id),
        {"type": MESSAGE_TYPE, "event": {**event, "timestamp": now_iso()}},
    )


def device_changed(outbox: Outbox, device: Device) -> None:
    publish(
        outbox,
        device.group_id,
        {
            "type": "device",
            "deviceId": device.device_id or None,
            "deviceType": device.device_type,
            "status": device.status,
            "active": device.is_active,
        },
    )


def payment_changed(outbox: Outbox, txn: Transaction, step: str) -> None:
    publish(
        outbox,
        txn.group_id,
        {
            "type": "payment",
            "transactionId": txn.transaction_id,
            "status": txn.status,
            "late": txn.late,
            "step": str(step),
        },
    )


def payments_delivered(outbox: Outbox, group_id: int, transaction_ids: Iterable[str]) -> None:
    publish(
        outbox,
        group_id,
        {"type": "payment", "transactionIds": sorted(set(transaction_ids)), "step": "delivered"},
    )


def session_changed(outbox: Outbox, session: TerminalSession) -> None:
    publish(
        outbox,
        session.group_id,
        {"type": "session", "sessionId": session.session_id, "state": session.state},
    )


def request_changed(outbox: Outbox, req: TerminalRequest) -> None:
    publish(
        outbox,
        req.group_id,
        {
            "type": "request",
            "requestId": req.request_id,
            "kind": req.kind,
            "status": req.status,
        },
    )
