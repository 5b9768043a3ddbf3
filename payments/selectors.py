"""Reads of payments for the REST API, the CSV exports and the dashboard.

Everything is scoped to the stores a user may see (``terminals.selectors.groups_for_user``);
another store's payment is simply not there.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from payments.exports import money
from payments.models import IN_FLIGHT_STATUSES, Transaction, TransactionStatus, TransactionType
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
    *, stores: QuerySet[Group], date_from: dt.date, date_to: dt.date
) -> list[dict[str, Any]]:
    """Per store, business date and currency: counts and the succeeded amount of payments,
    the succeeded refunds and what is left of the day's takings after them, summed by the
    database in Decimal. One query per time zone among ``stores``.

    A payment or a refund counts on the day it was started, in its store's time zone. Its
    status is its real outcome, so a late SUCCESS (after a timeout) counts as succeeded (and a
    payment as late). A day with neither payments nor succeeded refunds has no row.
    """
    rows: list[dict[str, Any]] = []
    by_zone: dict[str, list[int]] = {}
    for pk, name in stores.values_list("pk", "timezone"):
        by_zone.setdefault(name, []).append(pk)
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
            .values("day", "group__slug", "currency")
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
    rows.sort(key=lambda r: (r["date"], r["store"], r["currency"]))
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
