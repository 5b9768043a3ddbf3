from django.db import models
from django.db.models import Q

from terminals.models import Device, Group


class SessionState(models.TextChoices):
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"
    EXPIRED = "EXPIRED"


class OperationType(models.TextChoices):
    INPUT_REQUEST = "InputRequest"
    DISPLAY_REQUEST = "DisplayRequest"
    PAYMENT = "Payment"


class TerminalSession(models.Model):
    """A Terminal API admin session: the terminal shows a waiting screen between requests."""

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="terminal_sessions")
    session_id = models.CharField(max_length=64, help_text="Session.Id as the POS sent it")
    terminal = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    desktop = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    sale_id = models.CharField(max_length=64, blank=True)
    service_id = models.CharField(max_length=64, blank=True, help_text="ServiceID of the Begin")
    operations = models.JSONField(
        default=list, help_text='[{"type", "variant", "waitingScreenTimeoutMs"}]'
    )
    state = models.CharField(
        max_length=16, choices=SessionState.choices, default=SessionState.ACTIVE
    )
    begun_at = models.DateTimeField(auto_now_add=True)
    last_request_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, blank=True)
    last_response = models.JSONField(
        null=True, blank=True, help_text="The SaleToPOIResponse of the last accepted request"
    )

    class Meta:
        ordering = ["-begun_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["terminal"],
                condition=Q(state="ACTIVE"),
                name="one_active_session_per_terminal",
            ),
            models.UniqueConstraint(
                fields=["group", "session_id"],
                condition=Q(state="ACTIVE"),
                name="active_session_id_unique_in_group",
            ),
        ]
        indexes = [models.Index(fields=["state", "last_request_at"])]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state == SessionState.ACTIVE

    def waiting_screen_for(self, operation_type: str) -> dict | None:
        """The waitingScreen a forwarded request of this type carries, if the session names it."""
        for op in self.operations:
            if op.get("type") == operation_type:
                return {"sessionId": self.session_id, "timeoutMs": op["waitingScreenTimeoutMs"]}
        return None


class RequestKind(models.TextChoices):
    DISPLAY = "display"
    INPUT = "input"


class RequestStatus(models.TextChoices):
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"


class InputType(models.TextChoices):
    CONFIRMATION = "confirmation"
    TEXT = "text"
    NUMBER = "number"
    EMAIL = "email"
    PHONE = "phone"
    MENU = "menu"
    SIGNATURE = "signature"


# Input results that hold personal data: delivered to the desktop, never stored.
PERSONAL_INPUT_TYPES = (InputType.EMAIL, InputType.PHONE, InputType.SIGNATURE)


class TerminalRequest(models.Model):
    """A display or input request sent to a terminal, and its outcome."""

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="terminal_requests")
    request_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=RequestKind.choices)
    input_type = models.CharField(max_length=16, choices=InputType.choices, blank=True)
    terminal = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    desktop = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    session = models.ForeignKey(
        TerminalSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )
    status = models.CharField(
        max_length=16, choices=RequestStatus.choices, default=RequestStatus.IN_PROGRESS
    )
    request = models.JSONField(help_text="What the terminal was asked to show or ask")
    result = models.JSONField(
        null=True, blank=True, help_text="The answer; for personal data only its outcome"
    )
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField()
    # Set only while the channel layer refuses to hand the request to its terminal
    # (posgateway.core.forwarding).
    forward_retry_at = models.DateTimeField(null=True, blank=True)
    forward_attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "request_id"], name="terminal_request_id_unique_in_group"
            ),
            models.UniqueConstraint(
                fields=["terminal"],
                condition=Q(status="IN_PROGRESS"),
                name="one_terminal_request_in_flight",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "deadline_at"]),
            models.Index(
                fields=["forward_retry_at"],
                condition=Q(forward_retry_at__isnull=False),
                name="terminal_request_forward_retry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.request_id} ({self.status})"


class TerminalApiMessage(models.Model):
    """A nexo payment message (Payment, Reversal) a POS sent over the Terminal API, keyed as
    Adyen's cloud keys it: (SaleID, ServiceID, POIID) in the store, seen once in 48 h.

    A repeat of the key starts nothing new: it is answered from here, with the transaction it
    started (whose row holds the outcome) or the Failure it got (``failure``).
    """

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    sale_id = models.CharField(max_length=64)
    service_id = models.CharField(max_length=10)
    poi_id = models.CharField(max_length=64)
    category = models.CharField(max_length=16, help_text="Payment or Reversal")
    desktop = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    transaction = models.ForeignKey(
        "payments.Transaction",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="terminal_api_messages",
    )
    failure = models.JSONField(
        null=True, blank=True, help_text='{"condition", "text"} when it started nothing'
    )
    aborted = models.BooleanField(
        default=False, help_text="An AbortRequest named it while it was in flight"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "sale_id", "service_id", "poi_id"],
                name="terminal_api_message_unique_in_group",
            ),
        ]
        # The sweep looks for rows older than 48 h every second in every process.
        indexes = [models.Index(fields=["created_at"], name="terminal_api_message_created")]

    def __str__(self) -> str:
        return f"{self.category} {self.sale_id}/{self.service_id}/{self.poi_id}"
