import hashlib
import secrets
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


def validate_timezone(value: str) -> None:
    """An IANA zone name such as ``Europe/Berlin``: the store's business day depends on it."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationError(
            "%(value)s is not an IANA time zone (e.g. Europe/Berlin)", params={"value": value}
        ) from None


class Group(models.Model):
    """A store or merchant: every device, connection, transaction and session belongs to one."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="IANA time zone of the store's business day"
    )
    # Opening hours, the same every day, in the store's time zone: a terminal offline while the
    # store is open needs someone (the dashboard's "Needs attention"). Both empty: no hours, and
    # a terminal needs attention once it has been offline for ATTENTION_OFFLINE_AFTER_S.
    opens_at = models.TimeField(
        null=True, blank=True, help_text="Opening time, local (empty: no opening hours)"
    )
    closes_at = models.TimeField(
        null=True,
        blank=True,
        help_text="Closing time, local; before the opening time when the store closes after "
        "midnight",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="stores", blank=True, through="Membership"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "store (group)"
        verbose_name_plural = "stores (groups)"

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        # In clean() rather than as a field validator: no migration, same admin error.
        try:
            validate_timezone(self.timezone)
        except ValidationError as exc:
            raise ValidationError({"timezone": exc.messages}) from None
        if (self.opens_at is None) != (self.closes_at is None):
            raise ValidationError("Give both the opening and the closing time, or neither.")
        if self.opens_at is not None and self.opens_at == self.closes_at:
            raise ValidationError({"closes_at": ["The store must close at another time."]})

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The store's time zone; UTC if the stored name is not one (rows predating the check)."""
        try:
            return zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            return zoneinfo.ZoneInfo("UTC")


class Role(models.TextChoices):
    """What a staff user may do in a store (contract section 8)."""

    MANAGER = "manager", "Manager (everything: devices, refunds, webhooks)"
    VIEWER = "viewer", "Viewer (reads pages, REST reads and exports; changes nothing)"


class Membership(models.Model):
    """A staff user's membership of a store, with their role there.

    The table is the one the plain ``Group.members`` many-to-many had (migration 0003 kept its
    rows, every one a manager).
    """

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MANAGER)

    class Meta:
        db_table = "terminals_group_members"
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="membership_unique_group_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.group} ({self.role})"


class DeviceType(models.TextChoices):
    DESKTOP = "desktop", "Desktop (POS)"
    TERMINAL = "terminal", "Payment terminal"


class DeviceStatus(models.TextChoices):
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key: keys are looked up by it and never stored in clear."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    """32 random bytes as URL-safe text, never starting with "-": a command line takes such a
    key for an option (``simulate_terminal --key -Xb…``: "expected one argument")."""
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key


KEY_PREFIX_LENGTH = 8


class Device(models.Model):
    """A registered POS desktop or payment terminal with its own API key."""

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="devices")
    device_type = models.CharField(max_length=16, choices=DeviceType.choices)
    device_id = models.CharField(  # noqa: DJ001 (NULL: several devices without an id)
        max_length=64, null=True, blank=True, help_text="Stable id, unique in its store"
    )
    label = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(max_length=KEY_PREFIX_LENGTH, editable=False)
    is_active = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.OFFLINE
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    current_connection = models.ForeignKey(
        "Connection", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Results pushed to a desktop are numbered per device (contract section 7: seq / ack).
    last_seq = models.PositiveBigIntegerField(default=0)
    acked_seq = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Not a field: the number of devices in its store, only on a device read (and locked) by
    # terminals.services._locked_device.
    store_devices: int

    class Meta:
        # No join in the default ordering: row locks (select_for_update) must not reach Group.
        ordering = ["device_type", "device_id", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "device_id"],
                condition=Q(device_id__isnull=False),
                name="device_id_unique_in_group",
            ),
        ]
        indexes = [
            models.Index(fields=["group", "device_type"]),
            models.Index(fields=["status", "status_changed_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.group.slug}/{self.device_id or f'#{self.pk}'} ({self.device_type})"

    def set_key(self, key: str) -> None:
        self.key_hash = hash_key(key)
        self.key_prefix = key[:KEY_PREFIX_LENGTH]


class Connection(models.Model):
    """One WebSocket connection of a device, open or closed."""

    connection_id = models.CharField(max_length=32, unique=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="connections")
    channel_name = models.CharField(max_length=200)
    remote_addr = models.CharField(max_length=64, blank=True)
    connected_at = models.DateTimeField()
    last_activity = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-connected_at"]
        indexes = [
            models.Index(fields=["device", "closed_at"]),
            models.Index(fields=["closed_at", "last_activity"]),
        ]

    def __str__(self) -> str:
        return self.connection_id

    @property
    def is_open(self) -> bool:
        return self.closed_at is None
