"""Handing a stored request to its terminal again after the channel layer refused it.

A request (a payment, a refund, a display or input request) is stored and then handed to the
channel layer for its terminal's socket. When the layer refuses (Redis down or restarting),
the request stays in flight and its row gets ``forward_retry_at``: from then on the background
sweep of every process hands it off again, at FORWARD_RETRY_S doubling up to
FORWARD_RETRY_MAX_S, until a hand-off succeeds or the request's deadline passes (the timeout
sweep then finishes it). The state is in the row, not in a process: a retry survives the
process that hit the refusal.

Each try is claimed on the row first (a compare-and-set of ``forward_retry_at`` that also moves
it on by the next backoff), so one process makes it and a process dying mid-try leaves it due
again. A hand-off that "failed" after it delivered, or one that crosses a terminal's reconnect,
is harmless: a terminal's socket writes a request at most once (posgateway.gateway.consumers).
Nothing here runs on a payment's usual path: rows get ``forward_retry_at`` only when a hand-off
was refused, and the partial index on it is empty otherwise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.utils import timezone

# (primary key, the try's number): a claimed try, confirmed by that number.
Claim = tuple[int, int]


def backoff(attempt: int) -> dt.timedelta:
    """How long after the ``attempt``-th try (0: the refused first hand-off) the next is due."""
    first, cap = settings.FORWARD_RETRY_S, settings.FORWARD_RETRY_MAX_S
    return dt.timedelta(seconds=min(cap, first * 2 ** max(0, attempt)))


def schedule(model: type[models.Model], *, pk: int, in_flight: Iterable[str]) -> bool:
    """The hand-off of this in-flight row was refused: retry it. A row already waiting for a
    retry (a refused retry: its claim set the next time) keeps its time. False when the row is
    no longer in flight or already waits."""
    due = timezone.now() + backoff(0)
    return bool(
        model._default_manager.filter(
            pk=pk, status__in=list(in_flight), forward_retry_at__isnull=True
        ).update(forward_retry_at=due, forward_attempts=0)
    )


def claim_due(
    model: type[models.Model], *, in_flight: Iterable[str], limit: int = 100
) -> list[Claim]:
    """The rows whose retry is due, each claimed for this process (its next retry moved on by
    the backoff: a try that is refused, or never confirmed, comes round again). Rows that
    finished or passed their deadline meanwhile stop waiting."""
    now = timezone.now()
    states = set(in_flight)
    manager = model._default_manager
    due = list(
        manager.filter(forward_retry_at__lte=now)
        .order_by("forward_retry_at")
        .values_list("pk", "forward_retry_at", "forward_attempts", "status", "deadline_at")[:limit]
    )
    claimed: list[Claim] = []
    for pk, at, attempts, status, deadline in due:
        row = manager.filter(pk=pk, forward_retry_at=at)
        if status not in states or (deadline is not None and deadline <= now):
            row.update(forward_retry_at=None)
            continue
        attempt = attempts + 1
        if row.update(forward_retry_at=now + backoff(attempt), forward_attempts=attempt):
            claimed.append((pk, attempt))
    return claimed


def confirm(model: type[models.Model], claims: Iterable[Claim]) -> None:
    """These tries were handed to the channel layer: their rows stop waiting (unless another
    process claimed a later try meanwhile)."""
    manager = model._default_manager
    for pk, attempt in claims:
        manager.filter(pk=pk, forward_attempts=attempt).update(forward_retry_at=None)


def waiting(model: type[models.Model]) -> int:
    """How many rows wait for a retry of their hand-off (GET /healthz)."""
    return model._default_manager.filter(forward_retry_at__isnull=False).count()
