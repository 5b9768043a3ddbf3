from django.conf import settings
from django.db import models
from django.db.models import Q

from terminals.models import Device, Group


class TransactionStatus(models.TextChoices):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    DECLINED = "DECLINED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"


IN_FLIGHT_STATUSES = (TransactionStatus.PENDING, TransactionStatus.IN_PROGRESS)
FINAL_STATUSES = (
    TransactionStatus.SUCCESS,
    TransactionStatus.DECLINED,
    TransactionStatus.FAILED,
    TransactionStatus.CANCELLED,
    TransactionStatus.TIMEOUT,
)
# What a terminal may report; TIMEOUT is only ever decided by the gateway.
TERMINAL_RESULT_STATUSES = (
    TransactionStatus.SUCCESS,
    TransactionStatus.DECLINED,
    TransactionStatus.FAILED,
    TransactionStatus.CANCELLED,
)


class TransactionType(models.TextChoices):
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"


class Transaction(models.Model):
    """One payment or refund, unique per store by its transactionId (one id space for both).

    A refund points at the successful payment it gives money back from (``original``) and runs
    through the same lifecycle; the payment keeps the sum of its successful refunds.
    """

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="transactions")
    transaction_id = models.CharField(max_length=64)
    type = models.CharField(
        max_length=8, choices=TransactionType.choices, default=TransactionType.PAYMENT
    )
    original = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="refunds",
        help_text="The payment a refund gives money back from",
    )
    # 12 digits before the point (contract section 7) and 4 after: the most minor units any
    # ISO 4217 currency has (CLF, UYW). Shown with the currency's own decimals (exports.money).
    amount = models.DecimalField(max_digits=16, decimal_places=4)
    currency = models.CharField(max_length=3)
    payment_method = models.CharField(max_length=32, blank=True)
    products = models.JSONField(default=list, blank=True)
    customer_info = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=TransactionStatus.choices, default=TransactionStatus.PENDING
    )
    late = models.BooleanField(
        default=False, help_text="A terminal result arrived after the gateway gave up"
    )
    reason = models.CharField(max_length=200, blank=True, help_text="Why a refund was made")
    # A payment's SUCCESS refunds, added up as each one succeeds (late ones too).
    refunded_amount = models.DecimalField(max_digits=16, decimal_places=4, default=0)
    over_refunded = models.BooleanField(
        default=False,
        help_text="Succeeded refunds add up to more than the payment (a late refund success): "
        "money has moved, a person must look",
    )
    # The terminal's answer (card data masked before it is stored).
    authorization_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    payment_response = models.JSONField(null=True, blank=True)
    # The desktop that started it and receives its result; none for a refund started by staff
    # (REST API, dashboard), who is then ``initiated_by``.
    desktop = models.ForeignKey(
        Device,
        on_delete=models.PROTECT,
        related_name="desktop_transactions",
        null=True,
        blank=True,
    )
    initiated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The staff user who started a refund from the REST API or the dashboard",
    )
    terminal = models.ForeignKey(
        Device, on_delete=models.PROTECT, related_name="terminal_transactions"
    )
    terminal_ref = models.CharField(
        max_length=64, help_text="terminalId exactly as the desktop sent it"
    )
    desktop_connection_id = models.CharField(max_length=32, blank=True)
    # Set at insert, never changed after (but for a Terminal API message that names a payment
    # already in flight): only such a transaction's end is announced to its waiters, so the
    # plain WebSocket payments send nothing more through the channel layer.
    terminal_api = models.BooleanField(
        default=False,
        help_text="Started by a Terminal API (nexo) message: a request may be waiting on its end",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    forwarded_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    # Set only while the channel layer refuses to hand the request to its terminal: when the
    # next hand-off is due, and how many were tried (posgateway.core.forwarding).
    forward_retry_at = models.DateTimeField(null=True, blank=True)
    forward_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "transaction_id"], name="transaction_id_unique_in_group"
            ),
            # One payment in flight per terminal, enforced by the database for every process.
            models.UniqueConstraint(
                fields=["terminal"],
                condition=Q(status__in=["PENDING", "IN_PROGRESS"]),
                name="one_payment_in_flight_per_terminal",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transaction_amount_positive"),
            models.CheckConstraint(
                condition=Q(type="PAYMENT", original__isnull=True)
                | Q(type="REFUND", original__isnull=False),
                name="refund_has_original_payment",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "deadline_at"]),
            models.Index(fields=["group", "created_at"]),
            models.Index(
                fields=["forward_retry_at"],
                condition=Q(forward_retry_at__isnull=False),
                name="transaction_forward_retry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_refund(self) -> bool:
        return self.type == TransactionType.REFUND


class EventSource(models.TextChoices):
    DESKTOP = "desktop"
    TERMINAL = "terminal"
    GATEWAY = "gateway"
    ADMIN = "admin"
    API = "api"
    DASHBOARD = "dashboard"


class EventKind(models.TextChoices):
    REQUESTED = "requested"
    FORWARDED = "forwarded"
    RESENT = "resent"
    FORWARD_REFUSED = "forward_refused"  # the channel layer refused the hand-off: retried
    DUPLICATE = "duplicate"
    CANCEL_REQUESTED = "cancel_requested"
    RESULT = "result"
    LATE_RESULT = "late_result"
    IGNORED_RESULT = "ignored_result"
    TIMEOUT = "timeout"
    FAILED = "failed"
    DELIVERED = "delivered"
    REFUNDED = "refunded"  # on a payment: one of its refunds succeeded
    OVER_REFUNDED = "over_refunded"  # on a payment: its refunds now exceed it
    RESOLVED = "resolved"  # a manager marked a needs-attention item resolved, with a note


class TransactionEvent(models.Model):
    """Append-only log of everything that happened to a transaction, one row per step."""

    transaction = models.ForeignKey(Transaction, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    source = models.CharField(max_length=16, choices=EventSource.choices)
    old_status = models.CharField(max_length=16, blank=True)
    new_status = models.CharField(max_length=16, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.old_status}->{self.new_status}"


class DesktopMessage(models.Model):
    """A result pushed to a desktop device, numbered by seq, kept until acknowledged."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="outbox")
    seq = models.PositiveBigIntegerField()
    transaction = models.ForeignKey(
        Transaction, on_delete=models.CASCADE, related_name="desktop_messages"
    )
    frame = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["device", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["device", "seq"], name="desktop_message_seq_unique"),
        ]
        indexes = [models.Index(fields=["device", "acked_at", "seq"])]

    def __str__(self) -> str:
        return f"{self.device_id}#{self.seq}"
