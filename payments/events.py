"""What the payments app publishes after commit (see posgateway.core.events), and what its
services answer with. The interfaces turn both into frames; nothing here is a wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payments.models import Transaction


@dataclass(frozen=True, slots=True)
class PaymentChanged:
    """A step of a payment's life, for the store's dashboards (step: an EventKind value)."""

    group_id: int
    transaction_id: str
    status: str
    late: bool
    step: str
    type: str = "PAYMENT"
    original_transaction_id: str | None = None  # a refund's payment
    terminal_api: bool = False  # started by a Terminal API message (Transaction.terminal_api)

    @classmethod
    def of(cls, txn: Transaction, step: str) -> PaymentChanged:
        if txn.type == "REFUND":
            assert txn.original is not None
            original: str | None = txn.original.transaction_id
        else:
            original = None
        return cls(
            txn.group_id,
            txn.transaction_id,
            txn.status,
            txn.late,
            str(step),
            txn.type,
            original,
            txn.terminal_api,
        )


@dataclass(frozen=True, slots=True)
class PaymentsDelivered:
    """A desktop acknowledged these payments' results (one ack, many results)."""

    group_id: int
    transaction_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PaymentForwarded:
    """A payment request goes to its terminal: published on ``channel_name`` (a failed hand-over
    fails the payment: ``payments.services.payment_forward_failed``), or, when ``resent``,
    sent again on a reconnected terminal's socket. ``txn`` is not changed after this."""

    txn: Transaction
    desktop_connection_id: str
    waiting_screen: dict[str, Any] | None = None
    channel_name: str | None = None
    resent: bool = False


@dataclass(frozen=True, slots=True)
class CancelForwarded:
    """The terminal is asked to cancel a payment in flight."""

    transaction_id: str
    channel_name: str | None = None


@dataclass(frozen=True, slots=True)
class ResultPushed:
    """A payment's result, numbered for its desktop (``result["seq"]``), as stored until the
    desktop acknowledges it; pushed on ``channel_name`` when the desktop is connected."""

    result: dict[str, Any]
    channel_name: str | None = None


# --- What the services answer -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentAccepted:
    """A payment stored and forwarded (or, ``duplicate``, already in flight)."""

    txn: Transaction
    terminal_ref: str
    connection_id: str | None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class CancelRequested:
    txn: Transaction
    forwarded: bool


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The result a finished payment or refund already has, as its desktop was sent it."""

    result: dict[str, Any]
    txn: Transaction | None = None
