"""A store's webhook endpoints, its events (the transactional outbox) and their deliveries.

The domain apps write a :class:`WebhookEvent` row in the transaction of the change it reports
(``webhooks.services.event_record``: one INSERT); a delivery worker fans each event out to the
store's subscribed endpoints (one :class:`WebhookDelivery` each), leases deliveries that are
due, sends them and records every :class:`WebhookAttempt`. docs/webhooks.md.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class EventType(models.TextChoices):
    """Contract section 11, letter for letter."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_DECLINED = "payment.declined"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_CANCELLED = "payment.cancelled"
    PAYMENT_TIMED_OUT = "payment.timed_out"
    PAYMENT_LATE_RESULT = "payment.late_result"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_DECLINED = "refund.declined"
    REFUND_FAILED = "refund.failed"
    REFUND_CANCELLED = "refund.cancelled"
    REFUND_TIMED_OUT = "refund.timed_out"
    REFUND_LATE_RESULT = "refund.late_result"
    TERMINAL_ONLINE = "terminal.online"
    TERMINAL_RECONNECTING = "terminal.reconnecting"
    TERMINAL_OFFLINE = "terminal.offline"
    SESSION_BEGAN = "session.began"
    SESSION_ENDED = "session.ended"
    WEBHOOK_TEST = "webhook.test"


ALL_EVENTS = "*"


class WebhookEndpoint(models.Model):
    """A URL of the store's systems subscribed to some of its event types (or all: ``*``)."""

    group = models.ForeignKey(
        "terminals.Group", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list, help_text='Event types, or ["*"] for every one')
    description = models.CharField(max_length=500, blank=True)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    # The signing secrets, encrypted with a key from the settings (webhooks.secrets): a
    # database dump alone does not let anyone sign. The previous one still signs until
    # previous_secret_until (24 h after a rotation).
    secret_encrypted = models.TextField()
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # Since when every attempt to it failed (none since a success): deactivated after 3 days.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group_id", "pk"]

    def __str__(self) -> str:
        return f"{self.group_id}: {self.url}"

    def subscribes_to(self, event_type: str) -> bool:
        if event_type == EventType.WEBHOOK_TEST:
            return False  # sent only to the endpoint it tests
        return ALL_EVENTS in self.events or event_type in self.events


class WebhookEvent(models.Model):
    """Something that happened in a store, written in the transaction of the change."""

    event_id = models.CharField(max_length=40, unique=True)
    group = models.ForeignKey(
        "terminals.Group", on_delete=models.CASCADE, related_name="webhook_events"
    )
    type = models.CharField(max_length=40, choices=EventType.choices)
    # The primary key of what it is about: a transaction, a device, a session (by type).
    subject_pk = models.BigIntegerField(null=True, blank=True)
    # A test event goes to this endpoint only.
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The body exactly as signed and sent, rendered once when the event is fanned out: every
    # retry sends the same bytes.
    payload = models.TextField(blank=True)
    # False until a worker created its deliveries; born True when the store had no active
    # endpoint (nothing to deliver, and nothing for the workers to look at).
    dispatched = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["created_at"], condition=Q(dispatched=False), name="webhook_event_undisp"
            ),
            models.Index(fields=["group", "-created_at"], name="webhook_event_group"),
            models.Index(fields=["created_at"], name="webhook_event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class WebhookDelivery(models.Model):
    """One event to one endpoint: due at ``next_attempt_at``, leased by one worker at a time."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # The attempt count when the retry schedule (re)started: 0, or at a manual redelivery.
    schedule_start = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A worker's claim: nobody else sends it until lease_until; a killed worker's expires.
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="webhook_delivery_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id}: {self.status}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery, as it went."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_records"
    )
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField()
    # What the delivery became with it: succeeded, retrying or failed.
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    response_body = models.TextField(blank=True, help_text="The answer's first 1 KiB")
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["delivery_id", "number", "pk"]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}: {self.status}"
