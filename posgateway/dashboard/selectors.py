"""Reads for the dashboard pages, on top of the REST API's scoped selectors.

Every read starts from the stores the user may see (``terminals.selectors.groups_for_user``) and
runs a fixed number of queries however many rows there are (the list pages assert it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import ExtractHour

from payments.exports import money
from payments.models import IN_FLIGHT_STATUSES, Transaction, TransactionStatus, TransactionType
from payments.selectors import (
    AttentionItem,
    attention_items,
    daily_totals,
    local_midnight,
    store_zone,
    terminals_for_user,
)
from sessions.models import RequestStatus, SessionState, TerminalRequest, TerminalSession
from terminals.models import Device, DeviceStatus, Group
from terminals.selectors import (
    OfflineTerminal,
    groups_for_user,
    in_user_stores,
    terminal_list,
    terminals_offline_for_attention,
)

RECENT_SESSIONS = 50
RECENT_REQUESTS = 25


# --- Terminals -------------------------------------------------------------------------------


@dataclass
class TerminalRow:
    device: Device
    payment: Transaction | None
    request: TerminalRequest | None
    session: TerminalSession | None

    @property
    def last_activity(self) -> dt.datetime | None:
        conn = self.device.current_connection
        if conn is not None:
            return conn.last_activity
        return self.device.status_changed_at


def terminal_board(*, user: Any) -> list[TerminalRow]:
    """Every active terminal of the user's stores with what it is doing now: the payment or
    display/input request in flight and the active Terminal API session. Four queries."""
    terminals = list(terminals_for_user(user=user))
    pks = [t.pk for t in terminals]
    requests: dict[int, TerminalRequest] = {}
    sessions: dict[int, TerminalSession] = {}
    if pks:
        for req in TerminalRequest.objects.filter(
            terminal_id__in=pks, status=RequestStatus.IN_PROGRESS
        ):
            requests[req.terminal_id] = req
        for session in TerminalSession.objects.filter(
            terminal_id__in=pks, state=SessionState.ACTIVE
        ):
            sessions[session.terminal_id] = session
    return [
        TerminalRow(
            device=t,
            payment=t.payments_in_flight[0] if t.payments_in_flight else None,
            request=requests.get(t.pk),
            session=sessions.get(t.pk),
        )
        for t in terminals
    ]


# --- Today at a glance -----------------------------------------------------------------------


@dataclass
class CurrencyTotal:
    currency: str
    count: int = 0
    succeeded: int = 0
    amount: Decimal = Decimal(0)
    declined: int = 0
    failed: int = 0
    cancelled: int = 0
    timeout: int = 0
    late: int = 0
    refunds: int = 0  # refunds that succeeded
    refunded: Decimal = Decimal(0)

    @property
    def amount_text(self) -> str:
        return money(self.amount, self.currency)

    @property
    def refunded_text(self) -> str:
        return money(self.refunded, self.currency)

    @property
    def net_text(self) -> str:
        """Succeeded payments minus succeeded refunds."""
        return money(self.amount - self.refunded, self.currency)

    @property
    def other(self) -> int:
        return self.count - self.succeeded


@dataclass
class Glance:
    dates: list[dt.date]
    currencies: list[CurrencyTotal]
    # Per local hour 0-23: (succeeded, still in flight, ended otherwise)
    hours: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 0, 0)] * 24)
    current_hour: int | None = None
    stores: int = 0

    @property
    def count(self) -> int:
        return sum(c.count for c in self.currencies)

    @property
    def succeeded(self) -> int:
        return sum(c.succeeded for c in self.currencies)

    @property
    def refunds(self) -> int:
        return sum(c.refunds for c in self.currencies)


_PAYMENT = Q(type=TransactionType.PAYMENT)
_SUCCESS = Q(status=TransactionStatus.SUCCESS)
_REFUNDED = Q(type=TransactionType.REFUND) & _SUCCESS
# CurrencyTotal's fields, each an aggregate over today's transactions of a currency (named
# with a prefix: an annotation may not take a model field's name such as ``amount``).
_TODAY_FIGURES = {
    "count": Count("pk", filter=_PAYMENT),
    "succeeded": Count("pk", filter=_PAYMENT & _SUCCESS),
    "amount": Sum("amount", filter=_PAYMENT & _SUCCESS),
    "declined": Count("pk", filter=_PAYMENT & Q(status=TransactionStatus.DECLINED)),
    "failed": Count("pk", filter=_PAYMENT & Q(status=TransactionStatus.FAILED)),
    "cancelled": Count("pk", filter=_PAYMENT & Q(status=TransactionStatus.CANCELLED)),
    "timeout": Count("pk", filter=_PAYMENT & Q(status=TransactionStatus.TIMEOUT)),
    "late": Count("pk", filter=_PAYMENT & Q(late=True)),
    "refunds": Count("pk", filter=_REFUNDED),
    "refunded": Sum("amount", filter=_REFUNDED),
}
_SUMS = ("amount", "refunded")


def today_at_a_glance(*, user: Any, now: dt.datetime | None = None) -> Glance:
    """Today's payments of the user's stores, each store's today in its own time zone:
    counts and succeeded totals per currency, the refunds that succeeded and the net, and
    payments per local hour: succeeded, in flight, or ended otherwise. Two queries per time
    zone among the stores, plus one.

    The daily report's rules (contract section 9): a transaction counts on the day it was
    started, by its real outcome (a late SUCCESS succeeded); the payment figures count payments
    only, and the net is the succeeded payments minus the succeeded refunds.
    """
    now = now or dt.datetime.now(dt.UTC)
    by_zone: dict[str, list[int]] = {}
    for pk, name in groups_for_user(user).values_list("pk", "timezone"):
        by_zone.setdefault(name, []).append(pk)
    totals: dict[str, CurrencyTotal] = {}
    hours = [[0, 0, 0] for _ in range(24)]
    dates: set[dt.date] = set()
    current_hours: set[int] = set()
    for name, store_pks in sorted(by_zone.items()):
        zone = store_zone(name)
        local_now = now.astimezone(zone)
        today = local_now.date()
        dates.add(today)
        current_hours.add(local_now.hour)
        todays = Transaction.objects.filter(
            group_id__in=store_pks,
            created_at__gte=local_midnight(today, zone),
            created_at__lt=local_midnight(today + dt.timedelta(days=1), zone),
        )
        figures = {f"today_{key}": aggregate for key, aggregate in _TODAY_FIGURES.items()}
        for row in todays.values("currency").annotate(**figures).order_by():
            total = totals.setdefault(row["currency"], CurrencyTotal(row["currency"]))
            for key in _TODAY_FIGURES:
                value = row[f"today_{key}"]
                if key in _SUMS:
                    # Decimal from any backend's SUM (SQLite's may be a float); None: no rows.
                    value = Decimal(str(value or 0))
                setattr(total, key, getattr(total, key) + value)
        per_hour = (
            todays.filter(type=TransactionType.PAYMENT)
            .annotate(hour=ExtractHour("created_at", tzinfo=zone))
            .values("hour")
            .annotate(
                total=Count("pk"),
                ok=Count("pk", filter=Q(status=TransactionStatus.SUCCESS)),
                busy=Count("pk", filter=Q(status__in=IN_FLIGHT_STATUSES)),
            )
            .order_by()
        )
        for row in per_hour:
            counts = hours[row["hour"]]
            counts[0] += row["ok"]
            counts[1] += row["busy"]
            counts[2] += row["total"] - row["ok"] - row["busy"]
    return Glance(
        dates=sorted(dates),
        currencies=sorted(totals.values(), key=lambda t: (-t.count, t.currency)),
        hours=[(ok, busy, other) for ok, busy, other in hours],
        current_hour=current_hours.pop() if len(current_hours) == 1 else None,
        stores=sum(len(pks) for pks in by_zone.values()),
    )


# --- Sessions --------------------------------------------------------------------------------


def _sessions(user: Any):
    return in_user_stores(
        TerminalSession.objects.select_related("group", "terminal", "desktop"), user=user
    ).prefetch_related(
        Prefetch(
            "requests",
            queryset=TerminalRequest.objects.order_by("-created_at", "-pk"),
            to_attr="request_list",
        )
    )


def sessions_for_user(
    *, user: Any, recent: int = RECENT_SESSIONS
) -> tuple[list[TerminalSession], list[TerminalSession]]:
    """The active sessions of the user's stores and the most recent ended or expired ones,
    each with its display and input requests. Four queries."""
    active = list(_sessions(user).filter(state=SessionState.ACTIVE).order_by("-begun_at", "-pk"))
    ended = list(
        _sessions(user).exclude(state=SessionState.ACTIVE).order_by("-begun_at", "-pk")[:recent]
    )
    return active, ended


def recent_requests(*, user: Any, limit: int = RECENT_REQUESTS) -> list[TerminalRequest]:
    """The latest display and input requests of the user's stores, in flight ones included."""
    return list(
        in_user_stores(
            TerminalRequest.objects.select_related("group", "terminal", "session"), user=user
        ).order_by("-created_at", "-pk")[:limit]
    )


# --- Payments --------------------------------------------------------------------------------


def terminal_ids_for_user(*, user: Any) -> list[str]:
    """The deviceIds of the user's terminals (for the payments filter), each once."""
    return list(
        in_user_stores(Device.objects.filter(device_type="terminal"), user=user)
        .exclude(device_id=None)
        .order_by("device_id")
        .values_list("device_id", flat=True)
        .distinct()
    )


def payment_stores(*, user: Any, transaction_id: str) -> list[str]:
    """The slugs of the user's stores that have a payment with this transactionId."""
    return sorted(
        in_user_stores(Transaction.objects.filter(transaction_id=transaction_id), user=user)
        .values_list("group__slug", flat=True)
        .distinct()
    )


def refunds_of(*, payment: Transaction) -> list[Transaction]:
    """A payment's refunds, oldest first, with who started each (a staff user or a desktop)."""
    return list(
        payment.refunds.select_related("group", "terminal", "desktop", "initiated_by").order_by(
            "created_at", "pk"
        )
    )


def refund_terminals(*, payment: Transaction, online_only: bool = True) -> list[Device]:
    """The store's terminals a refund of ``payment`` can run on, by deviceId (the only name a
    form can give): the online ones (every active one with ``online_only=False``), the
    payment's own terminal first."""
    terminals = [
        t
        for t in terminal_list(group=payment.group_id)
        if t.device_id and (not online_only or t.status == DeviceStatus.ONLINE)
    ]
    terminals.sort(key=lambda t: t.pk != payment.terminal_id)  # stable: then by deviceId
    return terminals


__all__ = [
    "Attention",
    "Glance",
    "TerminalRow",
    "end_of_day",
    "filter_totals",
    "needs_attention",
    "payment_stores",
    "recent_requests",
    "refund_terminals",
    "refunds_of",
    "sessions_for_user",
    "terminal_board",
    "terminal_ids_for_user",
    "today_at_a_glance",
]


# --- Needs attention -------------------------------------------------------------------------


@dataclass
class Attention:
    """What needs a person in the user's stores now (the rules are the domain's selectors)."""

    items: list[AttentionItem]
    terminals: list[OfflineTerminal]

    @property
    def count(self) -> int:
        return len(self.items) + len(self.terminals)


def needs_attention(*, user: Any, now: dt.datetime | None = None) -> Attention:
    """Open payment items and offline terminals of the user's stores. Three queries."""
    now = now or dt.datetime.now(dt.UTC)
    return Attention(
        items=attention_items(user=user, now=now),
        terminals=terminals_offline_for_attention(user=user, now=now),
    )


# --- End-of-day report -----------------------------------------------------------------------


@dataclass
class StoreReport:
    store: Group
    totals: list[dict[str, Any]]  # per currency, as the REST daily report's rows
    terminals: list[dict[str, Any]]  # per terminal and currency


def end_of_day(*, stores: QuerySet[Group], day: dt.date) -> list[StoreReport]:
    """One business day of each store, per currency and per terminal: the daily export's own
    rows (``payments.selectors.daily_totals``), so the page, its CSV and the REST export agree.
    Stores without a row that day are listed with none."""
    totals = daily_totals(stores=stores, date_from=day, date_to=day)
    per_terminal = daily_totals(stores=stores, date_from=day, date_to=day, by_terminal=True)
    return [
        StoreReport(
            store=store,
            totals=[row for row in totals if row["store"] == store.slug],
            terminals=[row for row in per_terminal if row["store"] == store.slug],
        )
        for store in stores.order_by("slug")
    ]


# --- The payments list's totals --------------------------------------------------------------


@dataclass
class FilterTotal:
    currency: str
    payments: int
    amount: str
    refunds: int
    refunded: str


def filter_totals(queryset: QuerySet[Transaction]) -> list[FilterTotal]:
    """The succeeded payments and refunds of a filtered list, per currency. One query."""
    rows = (
        queryset.filter(status=TransactionStatus.SUCCESS)
        .values("currency")
        .annotate(
            # Named apart from the model's fields (an annotation may not take their names).
            n_payments=Count("pk", filter=_PAYMENT),
            paid=Sum("amount", filter=_PAYMENT),
            n_refunds=Count("pk", filter=Q(type=TransactionType.REFUND)),
            refunded_sum=Sum("amount", filter=Q(type=TransactionType.REFUND)),
        )
        .order_by("currency")
    )
    return [
        FilterTotal(
            row["currency"],
            row["n_payments"],
            money(Decimal(str(row["paid"] or 0)), row["currency"]),
            row["n_refunds"],
            money(Decimal(str(row["refunded_sum"] or 0)), row["currency"]),
        )
        for row in rows
    ]
