"""Reads of payments for the REST API, the CSV exports and the dashboard.

Everything is scoped to the stores a user may see (``terminals.selectors.groups_for_user``);
another store's payment is simply not there.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate

from payments.exports import money
from payments.models import (
    IN_FLIGHT_STATUSES,
    EventKind,
    Transaction,
    TransactionEvent,
    TransactionStatus,
    TransactionType,
)
from posgateway.core.protocol import TRANSACTION_NOT_FOUND, BadRequest, NotFound
from terminals.models import Device, DeviceType, Group
from terminals.selectors import devices_for_user, in_user_stores

# Report ranges are bounded: a year of days per store is plenty for a reconciliation.
MAX_REPORT_DAYS = 366
DEFAULT_REPORT_DAYS = 30


@functools.lru_cache(maxsize=512)
def store_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone of a store's ``timezone``; UTC for a name that is not one (older rows)."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return zoneinfo.ZoneInfo("UTC")


def local_midnight(day: dt.date, zone: dt.tzinfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=zone)


# --- Transactions ----------------------------------------------------------------------------


def transaction_list(*, user: Any) -> QuerySet[Transaction]:
    """The payments and refunds of the user's stores, newest first, with store, devices, a
    refund's payment and the staff user who started it joined."""
    return in_user_stores(
        Transaction.objects.select_related(
            "group", "terminal", "desktop", "original", "initiated_by"
        ),
        user=user,
    ).order_by("-created_at", "-pk")


def transaction_get(*, user: Any, transaction_id: str, store: str | None = None) -> Transaction:
    """One payment or refund of the user's stores by its transactionId, with its event
    timeline and (a payment's) refunds.

    A transactionId is unique per store only: when several of the user's stores have it, the
    caller must name the store (``BadRequest`` naming ``store``); none is ``NotFound``.
    """
    pk = _one_of_user_stores(transaction_list(user=user), transaction_id, store)
    refunds = Prefetch("refunds", queryset=Transaction.objects.order_by("created_at", "pk"))
    return transaction_list(user=user).prefetch_related("events", refunds).get(pk=pk)


def payment_to_refund(*, user: Any, transaction_id: str, store: str | None = None) -> Transaction:
    """The payment of the user's stores a refund is asked for, by its transactionId (the
    store resolved as in ``transaction_get``). A refund's id is ``NotFound`` like an unknown
    one: a refund is not refunded."""
    payments = transaction_list(user=user).filter(type=TransactionType.PAYMENT)
    return payments.get(pk=_one_of_user_stores(payments, transaction_id, store))


def _one_of_user_stores(
    queryset: QuerySet[Transaction], transaction_id: str, store: str | None
) -> int:
    matches = queryset.filter(transaction_id=transaction_id)
    if store:
        matches = matches.filter(group__slug=store)
    found = list(matches.values_list("pk", "group__slug")[:100])
    if not found:
        raise NotFound(TRANSACTION_NOT_FOUND, transactionId=transaction_id)
    if len(found) > 1:
        stores = ", ".join(sorted(slug for _, slug in found))
        message = (
            f"transactionId {transaction_id} exists in more than one of your stores "
            f"({stores}): add store=<slug>"
        )
        raise BadRequest(message, fields={"store": [message]})
    return found[0][0]


def business_date_range(
    queryset: QuerySet[Transaction],
    *,
    stores: QuerySet[Group],
    date_from: dt.date | None,
    date_to: dt.date | None,
) -> QuerySet[Transaction]:
    """Payments whose store-local business date lies in ``[date_from, date_to]``.

    Each store's day starts at its own local midnight, so the range is one condition per time
    zone among ``stores`` (a handful), each a plain ``created_at`` range the index serves.
    """
    if date_from is None and date_to is None:
        return queryset
    condition = Q()
    for name in set(stores.values_list("timezone", flat=True)):
        zone = store_zone(name)
        part = Q(group__timezone=name)
        if date_from is not None:
            part &= Q(created_at__gte=local_midnight(date_from, zone))
        if date_to is not None:
            part &= Q(created_at__lt=local_midnight(date_to + dt.timedelta(days=1), zone))
        condition |= part
    if not condition:
        return queryset.none()
    return queryset.filter(condition)


EXPORT_FIELDS = {
    "transaction_id": "transaction_id",
    "store": "group__slug",
    "timezone": "group__timezone",
    "terminal": "terminal__device_id",
    "desktop": "desktop__device_id",
    "status": "status",
    "amount": "amount",
    "currency": "currency",
    "payment_method": "payment_method",
    "authorization_code": "authorization_code",
    "metadata": "metadata",
    "customer_info": "customer_info",
    "created_at": "created_at",
    "completed_at": "completed_at",
    "late": "late",
    "error_message": "error_message",
    "type": "type",
    "original_transaction_id": "original__transaction_id",
    "refunded_amount": "refunded_amount",
}


class ExportRow(NamedTuple):
    """One payment as the export reads it: the fields of EXPORT_FIELDS, in its order."""

    transaction_id: str
    store: str
    timezone: str
    terminal: str | None
    desktop: str | None
    status: str
    amount: Decimal
    currency: str
    payment_method: str
    authorization_code: str
    metadata: Any
    customer_info: Any
    created_at: dt.datetime
    completed_at: dt.datetime | None
    late: bool
    error_message: str
    type: str
    original_transaction_id: str | None
    refunded_amount: Decimal


def transactions_for_export(
    queryset: QuerySet[Transaction], *, chunk_size: int = 2000
) -> Iterator[ExportRow]:
    """Rows for the CSV export, fetched ``chunk_size`` at a time (a server-side cursor on
    PostgreSQL), as plain tuples: no model instances, no payment responses or product lists."""
    values = queryset.values_list(*EXPORT_FIELDS.values())
    for row in values.iterator(chunk_size=chunk_size):
        yield ExportRow._make(row)


# --- Daily totals ----------------------------------------------------------------------------

_STATUS_COUNTS = {
    "declinedCount": TransactionStatus.DECLINED,
    "failedCount": TransactionStatus.FAILED,
    "cancelledCount": TransactionStatus.CANCELLED,
    "timeoutCount": TransactionStatus.TIMEOUT,
}


def report_today(stores: QuerySet[Group]) -> dt.date:
    """Today for the report's default range: the latest date among the stores' time zones."""
    now = dt.datetime.now(dt.UTC)
    zones = {store_zone(name) for name in stores.values_list("timezone", flat=True)}
    return max((now.astimezone(zone).date() for zone in zones), default=now.date())


def daily_totals(
    *, stores: QuerySet[Group], date_from: dt.date, date_to: dt.date, by_terminal: bool = False
) -> list[dict[str, Any]]:
    """Per store, business date and currency: counts and the succeeded amount of payments,
    the succeeded refunds and what is left of the day's takings after them, summed by the
    database in Decimal. One query per time zone among ``stores``.

    A payment or a refund counts on the day it was started, in its store's time zone. Its
    status is its real outcome, so a late SUCCESS (after a timeout) counts as succeeded (and a
    payment as late). A day with neither payments nor succeeded refunds has no row.

    ``by_terminal``: the same figures per terminal too (each row then has ``terminal``, the
    terminal's deviceId; a refund counts on the terminal it ran on).
    """
    rows: list[dict[str, Any]] = []
    by_zone: dict[str, list[int]] = {}
    for pk, name in stores.values_list("pk", "timezone"):
        by_zone.setdefault(name, []).append(pk)
    group_by = ("terminal__device_id",) if by_terminal else ()
    for name, store_pks in by_zone.items():
        zone = store_zone(name)
        # A wide index-friendly range first, then the exact local date.
        start = local_midnight(date_from, zone) - dt.timedelta(days=1)
        end = local_midnight(date_to + dt.timedelta(days=2), zone)
        payment = Q(type=TransactionType.PAYMENT)
        succeeded = Q(status=TransactionStatus.SUCCESS)
        refunded = Q(type=TransactionType.REFUND) & succeeded
        aggregates = {
            "count": Count("pk", filter=payment),
            "succeededCount": Count("pk", filter=payment & succeeded),
            "succeededAmount": Sum("amount", filter=payment & succeeded),
            **{
                key: Count("pk", filter=payment & Q(status=status))
                for key, status in _STATUS_COUNTS.items()
            },
            "lateCount": Count("pk", filter=payment & Q(late=True)),
            "refundCount": Count("pk", filter=refunded),
            "refundedAmount": Sum("amount", filter=refunded),
        }
        # Each row holds the aggregates too (the stubs know only the keys named in values()).
        query: QuerySet[Transaction, Mapping[str, Any]] = (
            Transaction.objects.filter(
                payment | refunded,
                group_id__in=store_pks,
                created_at__gte=start,
                created_at__lt=end,
            )
            .annotate(day=TruncDate("created_at", tzinfo=zone))
            .filter(day__gte=date_from, day__lte=date_to)
            .values("day", "group__slug", "currency", *group_by)
            .annotate(**aggregates)
            .order_by()
        )
        for row in query:
            currency = row["currency"]
            gross = row["succeededAmount"] or Decimal(0)
            refunds = row["refundedAmount"] or Decimal(0)
            rows.append(
                {
                    "date": row["day"].isoformat(),
                    "store": row["group__slug"],
                    **({"terminal": row["terminal__device_id"] or ""} if by_terminal else {}),
                    "currency": currency,
                    "count": row["count"],
                    "succeededCount": row["succeededCount"],
                    "succeededAmount": money(gross, currency),
                    **{key: row[key] for key in _STATUS_COUNTS},
                    "lateCount": row["lateCount"],
                    "refundCount": row["refundCount"],
                    "refundedAmount": money(refunds, currency),
                    "netAmount": money(Decimal(gross) - Decimal(refunds), currency),
                }
            )
    rows.sort(key=lambda r: (r["date"], r["store"], r.get("terminal", ""), r["currency"]))
    return rows


def terminals_for_user(*, user: Any) -> QuerySet[Device]:
    """The active terminals of the user's stores, each with ``payments_in_flight`` prefetched."""
    in_flight = Prefetch(
        "terminal_transactions",
        queryset=Transaction.objects.filter(status__in=IN_FLIGHT_STATUSES).order_by("-created_at"),
        to_attr="payments_in_flight",
    )
    return (
        devices_for_user(user=user)
        .filter(device_type=DeviceType.TERMINAL, is_active=True)
        .prefetch_related(in_flight)
    )


# --- Needs attention -------------------------------------------------------------------------


class AttentionCase(StrEnum):
    """Why a payment or refund needs a person: money may be wrong, or someone must act."""

    LATE_SUCCESS = "late_success"  # the terminal took (or gave back) money after we gave up
    OVER_REFUNDED = "over_refunded"  # its succeeded refunds add up to more than it
    STUCK = "stuck"  # still in flight well past its deadline (the sweeper should have ended it)


# What the till was told before a late success, in plain words.
_TOLD = {
    TransactionStatus.TIMEOUT: "the payment had timed out",
    TransactionStatus.CANCELLED: "the payment was cancelled",
    TransactionStatus.FAILED: "the terminal could not be reached",
}


@dataclass(frozen=True)
class AttentionItem:
    """One open needs-attention item of a transaction: what happened and what to check."""

    txn: Transaction
    case: AttentionCase
    since: dt.datetime
    what: str
    check: str


def _resolved(case: AttentionCase) -> Exists:
    return Exists(
        TransactionEvent.objects.filter(
            transaction=OuterRef("pk"), kind=EventKind.RESOLVED, detail__case=case.value
        )
    )


def _event_field(kind: str, field: str) -> Subquery:
    """A field of the transaction's latest event of ``kind``."""
    return Subquery(
        TransactionEvent.objects.filter(transaction=OuterRef("pk"), kind=kind)
        .order_by("-pk")
        .values(field)[:1]
    )


def _attention_queryset(queryset: QuerySet[Transaction], now: dt.datetime) -> QuerySet:
    stuck_before = now - dt.timedelta(seconds=settings.ATTENTION_STUCK_AFTER_S)
    late = Q(late=True, status=TransactionStatus.SUCCESS)
    over = Q(over_refunded=True)
    stuck = Q(status__in=IN_FLIGHT_STATUSES, deadline_at__lt=stuck_before)
    return (
        queryset.filter(late | over | stuck)
        .annotate(
            resolved_late=_resolved(AttentionCase.LATE_SUCCESS),
            resolved_over=_resolved(AttentionCase.OVER_REFUNDED),
            resolved_stuck=_resolved(AttentionCase.STUCK),
        )
        .filter(
            (late & Q(resolved_late=False))
            | (over & Q(resolved_over=False))
            | (stuck & Q(resolved_stuck=False))
        )
        .annotate(
            late_from=_event_field(EventKind.LATE_RESULT, "old_status"),
            late_at=_event_field(EventKind.LATE_RESULT, "created_at"),
            over_at=_event_field(EventKind.OVER_REFUNDED, "created_at"),
        )
    )


def _items_of(txn: Any, now: dt.datetime) -> list[AttentionItem]:
    """The open items of a transaction read by ``_attention_queryset``, in plain words."""
    items = []
    amount = f"{money(txn.amount, txn.currency)} {txn.currency}"
    terminal = txn.terminal.device_id or "the terminal"
    if txn.late and txn.status == TransactionStatus.SUCCESS and not txn.resolved_late:
        told = _TOLD.get(txn.late_from, f"it was {txn.late_from or 'finished'}")
        if txn.is_refund:
            what = (
                f"{terminal} paid {amount} back to the card after the till was told {told}"
                " (refund)."
            )
            check = (
                "Make sure the customer was not refunded twice (in cash or by another refund); "
                "if so, recover the difference."
            )
        else:
            what = f"{terminal} charged the card {amount} after the till was told {told}."
            check = (
                "Ask the cashier whether the customer paid again (a second card payment or "
                "cash). If so, refund one of the two; if not, the sale is paid."
            )
        items.append(
            AttentionItem(
                txn, AttentionCase.LATE_SUCCESS, txn.late_at or txn.updated_at, what, check
            )
        )
    if txn.over_refunded and not txn.resolved_over:
        refunded = f"{money(txn.refunded_amount, txn.currency)} {txn.currency}"
        items.append(
            AttentionItem(
                txn,
                AttentionCase.OVER_REFUNDED,
                txn.over_at or txn.updated_at,
                f"Refunds of {refunded} went back to the card, more than the payment of {amount}.",
                "Check the refunds with the card acquirer, and recover the difference from the "
                "customer if they were paid twice.",
            )
        )
    stuck_before = now - dt.timedelta(seconds=settings.ATTENTION_STUCK_AFTER_S)
    if (
        txn.status in IN_FLIGHT_STATUSES
        and txn.deadline_at is not None
        and txn.deadline_at < stuck_before
        and not txn.resolved_stuck
    ):
        kind = "refund" if txn.is_refund else "payment"
        items.append(
            AttentionItem(
                txn,
                AttentionCase.STUCK,
                txn.deadline_at,
                f"A {kind} of {amount} on {terminal} is still waiting for the terminal, past "
                "its deadline.",
                "The gateway ends such a payment as timed out by itself: if it stays, check "
                "that the gateway is running, and look at the terminal's screen.",
            )
        )
    return items


def attention_items(
    *, user: Any, now: dt.datetime | None = None, limit: int = 200
) -> list[AttentionItem]:
    """The open needs-attention items of the user's stores, newest first: late successes
    (after TIMEOUT, CANCELLED or an unreachable terminal), over-refunded payments, payments
    stuck past their deadline; each stays until a manager resolves it
    (``payments.services.attention_resolve``). Two queries."""
    now = now or dt.datetime.now(dt.UTC)
    queryset = _attention_queryset(transaction_list(user=user), now)
    items = [item for txn in queryset[:limit] for item in _items_of(txn, now)]
    items.sort(key=lambda item: item.since, reverse=True)
    return items


def attention_items_of(*, txn: Transaction, now: dt.datetime | None = None) -> list[AttentionItem]:
    """The open needs-attention items of one transaction."""
    now = now or dt.datetime.now(dt.UTC)
    found = _attention_queryset(
        Transaction.objects.select_related("terminal").filter(pk=txn.pk), now
    ).first()
    return [] if found is None else _items_of(found, now)


def attention_resolved(*, user: Any, limit: int = 20) -> list[TransactionEvent]:
    """The latest items marked resolved in the user's stores, with their note, who and when."""
    return list(
        in_user_stores(
            TransactionEvent.objects.filter(kind=EventKind.RESOLVED).select_related(
                "transaction__group", "transaction__terminal"
            ),
            user=user,
            field="transaction__group",
        ).order_by("-created_at", "-pk")[:limit]
    )
