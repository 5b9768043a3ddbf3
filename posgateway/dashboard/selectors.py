"""Reads for the dashboard pages, on top of the REST API's scoped selectors.

Every read starts from the stores the user may see (``terminals.selectors.groups_for_user``) and
runs a fixed number of queries however many rows there are (the list pages assert it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, Prefetch, Q
from django.db.models.functions import ExtractHour

from payments.exports import money
from payments.models import Transaction, TransactionStatus
from payments.selectors import daily_totals, local_midnight, store_zone, terminals_for_user
from sessions.models import RequestStatus, SessionState, TerminalRequest, TerminalSession
from terminals.models import Device
from terminals.selectors import groups_for_user, in_user_stores

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

    @property
    def amount_text(self) -> str:
        return money(self.amount, self.currency)

    @property
    def other(self) -> int:
        return self.count - self.succeeded


@dataclass
class Glance:
    dates: list[dt.date]
    currencies: list[CurrencyTotal]
    # Per local hour 0-23: (succeeded, not succeeded)
    hours: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)] * 24)
    current_hour: int | None = None
    stores: int = 0

    @property
    def count(self) -> int:
        return sum(c.count for c in self.currencies)

    @property
    def succeeded(self) -> int:
        return sum(c.succeeded for c in self.currencies)


def today_at_a_glance(*, user: Any, now: dt.datetime | None = None) -> Glance:
    """Today's payments of the user's stores, each store's today in its own time zone:
    counts and succeeded totals per currency (the daily report's own numbers) and payments per
    local hour, succeeded or not. Three queries per time zone among the stores, plus one."""
    now = now or dt.datetime.now(dt.UTC)
    by_zone: dict[str, list[int]] = {}
    for pk, name in groups_for_user(user).values_list("pk", "timezone"):
        by_zone.setdefault(name, []).append(pk)
    totals: dict[str, CurrencyTotal] = {}
    hours = [[0, 0] for _ in range(24)]
    dates: set[dt.date] = set()
    current_hours: set[int] = set()
    for name, store_pks in sorted(by_zone.items()):
        zone = store_zone(name)
        local_now = now.astimezone(zone)
        today = local_now.date()
        dates.add(today)
        current_hours.add(local_now.hour)
        stores = groups_for_user(user).filter(pk__in=store_pks)
        for row in daily_totals(stores=stores, date_from=today, date_to=today):
            total = totals.setdefault(row["currency"], CurrencyTotal(row["currency"]))
            total.count += row["count"]
            total.succeeded += row["succeededCount"]
            total.amount += Decimal(row["succeededAmount"])
            total.declined += row["declinedCount"]
            total.failed += row["failedCount"]
            total.cancelled += row["cancelledCount"]
            total.timeout += row["timeoutCount"]
            total.late += row["lateCount"]
        per_hour = (
            Transaction.objects.filter(
                group_id__in=store_pks,
                created_at__gte=local_midnight(today, zone),
                created_at__lt=local_midnight(today + dt.timedelta(days=1), zone),
            )
            .annotate(hour=ExtractHour("created_at", tzinfo=zone))
            .values("hour")
            .annotate(total=Count("pk"), ok=Count("pk", filter=Q(status=TransactionStatus.SUCCESS)))
            .order_by()
        )
        for row in per_hour:
            hours[row["hour"]][0] += row["ok"]
            hours[row["hour"]][1] += row["total"] - row["ok"]
    return Glance(
        dates=sorted(dates),
        currencies=sorted(totals.values(), key=lambda t: (-t.count, t.currency)),
        hours=[(ok, other) for ok, other in hours],
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


__all__ = [
    "Glance",
    "TerminalRow",
    "payment_stores",
    "recent_requests",
    "sessions_for_user",
    "terminal_board",
    "terminal_ids_for_user",
    "today_at_a_glance",
]
