"""Every change of webhook endpoints, events and deliveries.

The domain apps call :func:`event_record` inside the transaction of the change it reports: one
INSERT, so a rolled-back change leaves no event and a committed one cannot lose it (the
transactional outbox). Delivery workers (``posgateway.webhook_delivery``) then call
:func:`events_dispatch` (fan an event out to the store's subscribed endpoints),
:func:`deliveries_claim` (lease what is due) and :func:`attempt_record` (what the attempt gave);
any number of them share the work: every claim is a conditional UPDATE that one worker wins
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL), and a lease expires with a killed worker.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import secrets as random_bytes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from posgateway.core.protocol import BadRequest, Conflict
from posgateway.core.sql import dt_param as _dt
from posgateway.core.sql import execute as _execute
from posgateway.core.sql import statement
from webhooks import destinations
from webhooks import secrets as signing
from webhooks.models import (
    ALL_EVENTS,
    DUE_STATUSES,
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

logger = logging.getLogger("webhooks")

# An endpoint whose every attempt failed for this long is deactivated (contract section 11).
DISABLE_AFTER = dt.timedelta(days=3)
# Both secrets sign for this long after a rotation.
ROTATION_OVERLAP = dt.timedelta(hours=24)
MAX_RESPONSE_BYTES = 1024
MAX_ERROR = 500
MAX_DESCRIPTION = 500
SUBSCRIBABLE = [t.value for t in EventType if t != EventType.WEBHOOK_TEST]


def new_event_id() -> str:
    return "evt_" + random_bytes.token_hex(12)


# --- Events: the outbox ------------------------------------------------------------------------

# One statement: the event, born dispatched when its store has no active endpoint (nothing to
# deliver, nothing for the workers to look at).
_INSERT_EVENT = statement(
    "INSERT INTO {WebhookEvent} ({WebhookEvent.event_id}, {WebhookEvent.group},"
    " {WebhookEvent.type}, {WebhookEvent.subject_pk}, {WebhookEvent.payload},"
    " {WebhookEvent.dispatched}, {WebhookEvent.created_at}) VALUES (%s, %s, %s, %s, '',"
    " NOT EXISTS (SELECT 1 FROM {WebhookEndpoint} e WHERE e.{WebhookEndpoint.group} = %s"
    " AND e.{WebhookEndpoint.active} = %s), %s)",
    WebhookEvent,
    WebhookEndpoint,
)


def event_record(*, group_id: int, type: str, subject_pk: int | None) -> None:
    """Keep an event of the store for its webhook endpoints, in the caller's transaction."""
    _execute(
        _INSERT_EVENT,
        [new_event_id(), group_id, type, subject_pk, group_id, True, _dt(timezone.now())],
    )


_TRANSACTION_EVENTS = {
    "SUCCESS": "succeeded",
    "DECLINED": "declined",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timed_out",
}


def transaction_event_type(*, kind: str, status: str, late: bool) -> str | None:
    """``payment.succeeded`` … ``refund.late_result`` for a transaction that reached ``status``
    (``kind`` PAYMENT or REFUND); None for a status that is not final."""
    prefix = "refund" if kind == "REFUND" else "payment"
    if late:
        return f"{prefix}.late_result"
    what = _TRANSACTION_EVENTS.get(status)
    return f"{prefix}.{what}" if what else None


def transaction_event_record(*, group_id: int, pk: int, kind: str, status: str, late: bool) -> None:
    """The event of a payment or refund that reached a final state (or a late result)."""
    event_type = transaction_event_type(kind=kind, status=status, late=late)
    if event_type is not None:
        event_record(group_id=group_id, type=event_type, subject_pk=pk)


# --- Endpoints ---------------------------------------------------------------------------------


def _check_events(events: Any) -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise BadRequest('events must be a non-empty list of event types, or ["*"]')
    if ALL_EVENTS in events:
        if len(events) > 1:
            raise BadRequest('events: "*" stands alone (it means every event type)')
        return [ALL_EVENTS]
    unknown = [e for e in events if e not in SUBSCRIBABLE]
    if unknown:
        raise BadRequest(
            f"events: unknown event type {unknown[0]!r} (one of {', '.join(SUBSCRIBABLE)}, or *)"
        )
    return sorted(set(events), key=SUBSCRIBABLE.index)


def _check_url(url: Any) -> str:
    try:
        return destinations.check_url(url).url
    except destinations.Refused as exc:
        raise BadRequest(f"url: {exc}") from None


def _check_description(description: Any) -> str:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise BadRequest(f"description must be text of at most {MAX_DESCRIPTION} characters")
    if "\x00" in description:
        raise BadRequest("description must not contain NUL characters")
    return description


def endpoint_create(
    *, group_id: int, url: Any, events: Any, description: Any = "", user: Any = None
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint of the store and its signing secret (shown once: only its encryption is
    kept). Raises BadRequest for a URL the SSRF rules refuse, unknown event types …"""
    endpoint = WebhookEndpoint(
        group_id=group_id,
        url=_check_url(url),
        events=_check_events(events),
        description=_check_description(description),
        created_by=user.get_username() if user is not None else "",
    )
    secret = signing.new_secret()
    endpoint.secret_encrypted = signing.encrypt(secret)
    endpoint.save()
    logger.info("webhook endpoint %s added to store %s", endpoint.pk, group_id)
    return endpoint, secret


def endpoint_update(*, endpoint: WebhookEndpoint, changes: dict[str, Any]) -> WebhookEndpoint:
    """Change an endpoint's url, events, description or active; reactivating it forgets its
    failures (``disabledReason``)."""
    unknown = sorted(set(changes) - {"url", "events", "description", "active"})
    if unknown:
        raise BadRequest(f"{unknown[0]} cannot be changed")
    fields = ["updated_at"]
    if "url" in changes:
        endpoint.url = _check_url(changes["url"])
        fields.append("url")
    if "events" in changes:
        endpoint.events = _check_events(changes["events"])
        fields.append("events")
    if "description" in changes:
        endpoint.description = _check_description(changes["description"])
        fields.append("description")
    if "active" in changes:
        active = changes["active"]
        if not isinstance(active, bool):
            raise BadRequest("active must be true or false")
        if active and not endpoint.active:
            endpoint.disabled_reason = ""
            endpoint.failing_since = None
            fields += ["disabled_reason", "failing_since"]
        elif not active and endpoint.active:
            endpoint.disabled_reason = "Deactivated by a manager"
            fields.append("disabled_reason")
        endpoint.active = active
        fields.append("active")
    endpoint.save(update_fields=fields)
    return endpoint


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret (shown once); the old one keeps signing for 24 h beside it."""
    secret = signing.new_secret()
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret_encrypted = locked.secret_encrypted
        locked.previous_secret_until = timezone.now() + ROTATION_OVERLAP
        locked.secret_encrypted = signing.encrypt(secret)
        locked.save(
            update_fields=[
                "previous_secret_encrypted",
                "previous_secret_until",
                "secret_encrypted",
                "updated_at",
            ]
        )
    endpoint.refresh_from_db()
    logger.info("webhook endpoint %s: signing secret rotated", endpoint.pk)
    return secret


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def signing_secrets(endpoint: WebhookEndpoint, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign a message to the endpoint now: its own, and during 24 h after a
    rotation the previous one too."""
    now = now or timezone.now()
    current = [signing.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_until
        and endpoint.previous_secret_until > now
    ):
        current.append(signing.decrypt(endpoint.previous_secret_encrypted))
    return current


def endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookEvent:
    """A ``webhook.test`` event for this endpoint only."""
    if not endpoint.active:
        raise Conflict("The endpoint is not active: reactivate it first")
    return WebhookEvent.objects.create(
        event_id=new_event_id(),
        group_id=endpoint.group_id,
        type=EventType.WEBHOOK_TEST,
        subject_pk=endpoint.pk,
        endpoint=endpoint,
        created_at=timezone.now(),
    )


def event_redeliver(*, event: WebhookEvent) -> int:
    """Send an event again to every active endpoint that gets it, each with a fresh retry
    schedule (a delivery in flight right now is left to finish). The number of deliveries."""
    now = timezone.now()
    with transaction.atomic():
        again = WebhookDelivery.objects.filter(event=event, endpoint__active=True).exclude(
            lease_until__gte=now
        )
        count = 0
        for delivery in again.select_for_update(of=("self",)):
            delivery.status = DeliveryStatus.PENDING
            delivery.next_attempt_at = now
            delivery.schedule_start = delivery.attempts
            delivery.lease_until = None
            delivery.lease_owner = ""
            delivery.save(
                update_fields=[
                    "status",
                    "next_attempt_at",
                    "schedule_start",
                    "lease_until",
                    "lease_owner",
                    "updated_at",
                ]
            )
            count += 1
        # Endpoints subscribed since (or an event sent to none): the next fan-out adds them.
        if event.endpoint_id is None:
            WebhookEvent.objects.filter(pk=event.pk).update(dispatched=False)
    return count


# --- Fan-out -----------------------------------------------------------------------------------


def _skip_locked() -> str:
    return (
        " FOR UPDATE SKIP LOCKED"
        if db_connection.features.has_select_for_update_skip_locked
        else ""
    )


# Picked, then marked, as deliveries are claimed (see _PICK).
_DISPATCH_PICK = statement(
    "SELECT {WebhookEvent.id} FROM {WebhookEvent} WHERE {WebhookEvent.dispatched} = %s"
    " ORDER BY {WebhookEvent.created_at} LIMIT %s{{lock}}",
    WebhookEvent,
)
_DISPATCH = statement(
    "UPDATE {WebhookEvent} SET {WebhookEvent.dispatched} = %s WHERE {WebhookEvent.id} IN"
    " ({{ids}}) AND {WebhookEvent.dispatched} = %s RETURNING {WebhookEvent.id}",
    WebhookEvent,
)


def events_dispatch(*, render: Callable[[WebhookEvent], str], limit: int = 100) -> int:
    """Fan undispatched events out: one delivery per active endpoint of the store subscribed to
    the event's type (a test event: its endpoint), with the body rendered once (``render``).
    Safe in any number of workers at once: each event is taken by one. Returns how many."""
    if not WebhookEvent.objects.filter(dispatched=False).exists():
        return 0  # a read: an idle worker takes no write lock
    now = timezone.now()
    with transaction.atomic():
        picked = [
            pk
            for (pk,) in _execute(
                _DISPATCH_PICK.format(lock=_skip_locked()), [False, limit], fetch="all"
            )
        ]
        taken = (
            _execute(
                _DISPATCH.format(ids=", ".join(["%s"] * len(picked))),
                [True, *picked, False],
                fetch="all",
            )
            if picked
            else []
        )
        if not taken:
            return 0
        events = list(
            WebhookEvent.objects.select_related("group").filter(pk__in=[pk for (pk,) in taken])
        )
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(
            group_id__in={e.group_id for e in events}, active=True
        ):
            endpoints.setdefault(endpoint.group_id, []).append(endpoint)
        deliveries = []
        rendered = []
        for event in events:
            if event.endpoint_id is not None:
                targets = [
                    e for e in endpoints.get(event.group_id, []) if e.pk == event.endpoint_id
                ]
            else:
                targets = [
                    e for e in endpoints.get(event.group_id, []) if e.subscribes_to(event.type)
                ]
            if not targets:
                continue
            if not event.payload:
                event.payload = render(event)
                rendered.append(event)
            deliveries += [
                WebhookDelivery(event=event, endpoint=e, next_attempt_at=now) for e in targets
            ]
        if rendered:
            WebhookEvent.objects.bulk_update(rendered, ["payload"])
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
    return len(events)


# --- Claims and attempts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery leased to one worker for one attempt."""

    delivery_pk: int
    attempt: int
    endpoint_pk: int
    url: str
    event_id: str
    payload: str
    secrets: list[str]


def _due(now: dt.datetime) -> Any:
    return WebhookDelivery.objects.filter(
        status__in=DUE_STATUSES, next_attempt_at__lte=now, endpoint__active=True
    ).exclude(lease_until__gte=now)


def due_endpoints(*, limit: int = 200) -> list[int]:
    """Endpoints with a delivery due now (a read)."""
    rows = _due(timezone.now()).values_list("endpoint_id", flat=True).distinct()[:limit]
    return list(rows)


# Two statements in one transaction, not ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE
# SKIP LOCKED)``: PostgreSQL may run such a subquery more than once, each run skipping the rows
# the last one locked, and so update more than n rows (a worker then sent more than its slots).
_PICK = statement(
    "SELECT d.{WebhookDelivery.id} FROM {WebhookDelivery} d"
    " WHERE d.{WebhookDelivery.endpoint} = %s AND d.{WebhookDelivery.status} IN (%s, %s)"
    " AND d.{WebhookDelivery.next_attempt_at} <= %s"
    " AND (d.{WebhookDelivery.lease_until} IS NULL OR d.{WebhookDelivery.lease_until} < %s)"
    " ORDER BY d.{WebhookDelivery.next_attempt_at}, d.{WebhookDelivery.id} LIMIT %s{{lock}}",
    WebhookDelivery,
)
_CLAIM = statement(
    "UPDATE {WebhookDelivery} SET {WebhookDelivery.lease_until} = %s,"
    " {WebhookDelivery.lease_owner} = %s,"
    " {WebhookDelivery.attempts} = {WebhookDelivery.attempts} + 1,"
    " {WebhookDelivery.updated_at} = %s"
    " WHERE {WebhookDelivery.id} IN ({{ids}})"
    " AND {WebhookDelivery.status} IN (%s, %s)"
    " AND ({WebhookDelivery.lease_until} IS NULL OR {WebhookDelivery.lease_until} < %s)"
    " RETURNING {WebhookDelivery.id}, {WebhookDelivery.attempts}",
    WebhookDelivery,
)


def deliveries_claim(*, endpoint_pk: int, owner: str, limit: int) -> list[Claim]:
    """Lease up to ``limit`` due deliveries of one endpoint to ``owner`` for WEBHOOK_LEASE_S:
    nobody else sends them meanwhile; a worker killed mid-delivery leaves them to another once
    the lease expires."""
    now = timezone.now()
    stamp = _dt(now)
    until = _dt(now + dt.timedelta(seconds=settings.WEBHOOK_LEASE_S))
    due = [str(s) for s in DUE_STATUSES]
    with transaction.atomic():
        picked = [
            pk
            for (pk,) in _execute(
                _PICK.format(lock=_skip_locked()),
                [endpoint_pk, *due, stamp, stamp, limit],
                fetch="all",
            )
        ]
        if not picked:
            return []
        rows = _execute(
            _CLAIM.format(ids=", ".join(["%s"] * len(picked))),
            [until, owner, stamp, *picked, *due, stamp],
            fetch="all",
        )
        if not rows:
            return []
        attempts = dict(rows)
        deliveries = list(
            WebhookDelivery.objects.select_related("event", "endpoint").filter(pk__in=attempts)
        )
    claims = []
    for delivery in deliveries:
        endpoint = delivery.endpoint
        claims.append(
            Claim(
                delivery_pk=delivery.pk,
                attempt=attempts[delivery.pk],
                endpoint_pk=endpoint.pk,
                url=endpoint.url,
                event_id=delivery.event.event_id,
                payload=delivery.event.payload,
                secrets=signing_secrets(endpoint, now),
            )
        )
    return claims


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt gave."""

    ok: bool
    attempted_at: dt.datetime
    duration_ms: int = 0
    http_status: int | None = None
    error: str = ""
    response_body: str = ""


def retry_delay(attempt_in_schedule: int) -> float | None:
    """Seconds until the next attempt after the n-th of a schedule failed (jittered ±10 %);
    None once the schedule is spent."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_S
    if attempt_in_schedule > len(schedule):
        return None
    return float(schedule[attempt_in_schedule - 1]) * random.uniform(0.9, 1.1)


def attempt_record(*, claim: Claim, owner: str, outcome: Outcome) -> str:
    """Record an attempt and move its delivery on: succeeded, retrying (at the next time of the
    schedule) or failed after the last. An endpoint failing for 3 days is deactivated. Returns
    the delivery's status."""
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .get(pk=claim.delivery_pk)
        )
        # Still ours: nobody took it over after our lease expired.
        mine = (
            delivery.lease_owner == owner
            and delivery.attempts == claim.attempt
            and delivery.status in DUE_STATUSES
        )
        next_at = None
        status: str
        if outcome.ok:
            status = DeliveryStatus.SUCCEEDED
        else:
            delay = retry_delay(claim.attempt - delivery.schedule_start)
            if delay is None:
                status = DeliveryStatus.FAILED
            else:
                status = DeliveryStatus.RETRYING
                next_at = now + dt.timedelta(seconds=delay)
        if mine or outcome.ok:
            delivery.status = status
            delivery.next_attempt_at = next_at
            delivery.lease_until = None
            delivery.lease_owner = ""
            delivery.save(
                update_fields=[
                    "status",
                    "next_attempt_at",
                    "lease_until",
                    "lease_owner",
                    "updated_at",
                ]
            )
        else:
            status = delivery.status  # another worker has it now
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=claim.attempt,
            attempted_at=outcome.attempted_at,
            status=status if mine or outcome.ok else DeliveryStatus.RETRYING,
            http_status=outcome.http_status,
            duration_ms=outcome.duration_ms,
            error=outcome.error[:MAX_ERROR],
            response_body=outcome.response_body[:MAX_RESPONSE_BYTES],
            next_attempt_at=next_at,
        )
        _endpoint_health(delivery.endpoint, outcome, now)
    return status


def _endpoint_health(endpoint: WebhookEndpoint, outcome: Outcome, now: dt.datetime) -> None:
    if outcome.ok:
        if endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        return
    if endpoint.failing_since is None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
            failing_since=now
        )
        return
    if endpoint.active and endpoint.failing_since <= now - DISABLE_AFTER:
        since = endpoint.failing_since.strftime("%Y-%m-%d %H:%M UTC")
        reason = f"Every delivery failed since {since} (last: {outcome.error})"[:MAX_ERROR]
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            active=False, disabled_reason=reason, updated_at=now
        )
        logger.warning("webhook endpoint %s deactivated: %s", endpoint.pk, reason)


# --- Retention -----------------------------------------------------------------------------------


def events_prune(*, batch: int = 500) -> int:
    """Delete events (with their deliveries and attempts) older than WEBHOOK_RETENTION_DAYS."""
    cutoff = timezone.now() - dt.timedelta(days=settings.WEBHOOK_RETENTION_DAYS)
    deleted = 0
    while True:
        pks = list(
            WebhookEvent.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch]
        )
        if not pks:
            return deleted
        with transaction.atomic():
            WebhookAttempt.objects.filter(delivery__event_id__in=pks).delete()
            WebhookDelivery.objects.filter(event_id__in=pks).delete()
            WebhookEvent.objects.filter(pk__in=pks).delete()
        deleted += len(pks)


def secrets_reencrypt() -> int:
    """Every stored secret under the current encryption key (after a key rotation)."""
    count = 0
    with transaction.atomic():
        for endpoint in WebhookEndpoint.objects.select_for_update():
            endpoint.secret_encrypted = signing.reencrypt(endpoint.secret_encrypted)
            if endpoint.previous_secret_encrypted:
                endpoint.previous_secret_encrypted = signing.reencrypt(
                    endpoint.previous_secret_encrypted
                )
            endpoint.save(update_fields=["secret_encrypted", "previous_secret_encrypted"])
            count += 1
    return count
