"""State changes of stores, devices and connections. Every caller goes through these."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from posgateway.dashboard import events as dashboard
from posgateway.protocol import TooManyRequests, now_iso
from posgateway.realtime import Outbox
from terminals.models import (
    Connection,
    Device,
    DeviceStatus,
    DeviceType,
    Group,
    generate_key,
)
from terminals.selectors import open_desktop_channels, terminal_frame

logger = logging.getLogger("terminals")

# Close codes the gateway uses on device sockets.
CLOSE_UNAUTHORIZED = 4401
CLOSE_STALE = 4408
CLOSE_REPLACED = 4409
CLOSE_TOO_MANY = 4429
CLOSE_KEY_REVOKED = 4403
# The gateway cannot serve the socket (channel layer or database failing): reconnect. An
# application may not close with 1011 under daphne (autobahn raises).
CLOSE_UNAVAILABLE = 4503
NORMAL_CLOSE_CODES = (1000, 1001)


def new_connection_id() -> str:
    return secrets.token_urlsafe(12)


# --- Stores and devices ----------------------------------------------------------------------


def group_get_or_create(*, slug: str, name: str = "") -> Group:
    group, _ = Group.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return group


def device_create(
    *,
    group: Group,
    device_type: str,
    device_id: str | None = None,
    label: str = "",
    metadata: dict | None = None,
    outbox: Outbox | None = None,
) -> tuple[Device, str]:
    """Register a device; returns it with its API key, which is never stored in clear."""
    if device_type not in DeviceType.values:
        raise ValueError(f"device type must be one of {', '.join(DeviceType.values)}")
    key = generate_key()
    device = Device(
        group=group,
        device_type=device_type,
        device_id=device_id or None,
        label=label,
        metadata=metadata or {},
    )
    device.set_key(key)
    device.full_clean(exclude=["key_hash", "key_prefix"])
    device.save()
    if outbox is not None:
        dashboard.device_changed(outbox, device)
    logger.info("device created %s key_prefix=%s", device, device.key_prefix)
    return device, key


def device_rotate_key(*, device: Device, outbox: Outbox) -> str:
    """Give the device a new key; the old one stops working and its sockets are closed."""
    key = generate_key()
    with transaction.atomic():
        device.set_key(key)
        device.save(update_fields=["key_hash", "key_prefix", "updated_at"])
        _close_live_connections(device, outbox, code=CLOSE_KEY_REVOKED)
        dashboard.device_changed(outbox, device)
    logger.info("device key rotated %s key_prefix=%s", device, device.key_prefix)
    return key


def device_deactivate(*, device: Device, outbox: Outbox) -> None:
    with transaction.atomic():
        device.is_active = False
        device.save(update_fields=["is_active", "updated_at"])
        _close_live_connections(device, outbox, code=CLOSE_KEY_REVOKED)
        dashboard.device_changed(outbox, device)
    logger.info("device deactivated %s", device)


def _close_live_connections(device: Device, outbox: Outbox, *, code: int) -> None:
    for conn in Connection.objects.filter(device=device, closed_at__isnull=True):
        outbox.send(conn.channel_name, {"type": "gateway.close", "code": code})


def staff_create_or_update(
    *, username: str, group_slugs: Iterable[str], password: str | None = None
) -> tuple[object, str]:
    """Create or update a staff user, a member of exactly these stores; returns its API token."""
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username)
        user.is_staff = True
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        groups = [group_get_or_create(slug=slug) for slug in group_slugs]
        user.stores.set(groups)
        token, _ = Token.objects.get_or_create(user=user)
    return user, token.key


# --- Connections and live status -------------------------------------------------------------


def _set_status(device: Device, status: str, now: dt.datetime, outbox: Outbox) -> bool:
    changed = device.status != status
    device.status = status
    if changed:
        device.status_changed_at = now
    device.save(update_fields=["status", "status_changed_at", "current_connection", "updated_at"])
    if changed:
        logger.info("device %s is %s", device, status)
    return changed


def publish_terminal_status(*, device: Device, outbox: Outbox) -> None:
    """Tell every desktop of the store how this terminal stands now (and the dashboards how
    any device does)."""
    dashboard.device_changed(outbox, device)
    if device.device_type != DeviceType.TERMINAL:
        return
    frame = {
        "action": "terminalStatusUpdate",
        "terminal": terminal_frame(device),
        "timestamp": now_iso(),
    }
    for channel_name in open_desktop_channels(group_id=device.group_id):
        outbox.frame(channel_name, frame)


def connection_open(
    *, device_pk: int, channel_name: str, remote_addr: str, outbox: Outbox
) -> Connection:
    """A device connected: it replaces any older live connection and is online."""
    now = timezone.now()
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_pk)
        older = list(Connection.objects.filter(device=device, closed_at__isnull=True))
        if not older and _store_is_full(device.group_id):
            raise TooManyRequests(
                f"The store has reached {settings.MAX_CONNECTIONS_PER_STORE} live connections"
            )
        if older:
            Connection.objects.filter(pk__in=[c.pk for c in older]).update(
                closed_at=now, close_code=CLOSE_REPLACED
            )
            for conn in older:
                outbox.send(
                    conn.channel_name,
                    {
                        "type": "gateway.force_disconnect",
                        "reason": "replaced by a newer connection",
                    },
                )
        conn = Connection.objects.create(
            connection_id=new_connection_id(),
            device=device,
            channel_name=channel_name,
            remote_addr=remote_addr[:64],
            connected_at=now,
            last_activity=now,
        )
        device.current_connection = conn
        _set_status(device, DeviceStatus.ONLINE, now, outbox)
        publish_terminal_status(device=device, outbox=outbox)
    return conn


def _lock_device_of(connection_pk: int) -> Device | None:
    return (
        Device.objects.select_for_update(of=("self",)).filter(connections__pk=connection_pk).first()
    )


def _store_is_full(group_id: int) -> bool:
    live = Connection.objects.filter(device__group_id=group_id, closed_at__isnull=True)
    return live.count() >= settings.MAX_CONNECTIONS_PER_STORE


def connection_close(*, connection_pk: int, code: int | None, outbox: Outbox) -> None:
    """A socket closed: offline at once on a normal close, else reconnecting for the grace."""
    now = timezone.now()
    with transaction.atomic():
        # The device row first, the order connection_open takes them in: the other order
        # deadlocks with a reconnect of the same device.
        device = _lock_device_of(connection_pk)
        won = Connection.objects.filter(pk=connection_pk, closed_at__isnull=True).update(
            closed_at=now, close_code=code
        )
        if not won:
            return  # already closed: replaced, or found stale by a sweep
        if device is None or device.current_connection_id != connection_pk:
            return  # replaced by a newer connection, which now governs the status
        status = DeviceStatus.OFFLINE if code in NORMAL_CLOSE_CODES else DeviceStatus.RECONNECTING
        if _set_status(device, status, now, outbox):
            publish_terminal_status(device=device, outbox=outbox)


def connection_touch(*, connection_pk: int, at: dt.datetime) -> bool:
    """Record activity; False when the gateway already counts this connection as closed."""
    return bool(
        Connection.objects.filter(pk=connection_pk, closed_at__isnull=True).update(last_activity=at)
    )


def orphan_threshold_s() -> float:
    """Silence after which an open connection is presumed dead with its process.

    A live process closes its own stale sockets after interval + timeout; this is the back-stop
    for sockets whose process died, so it waits longer than any debounced activity write.
    """
    return 2 * (settings.HEARTBEAT_INTERVAL_S + settings.HEARTBEAT_TIMEOUT_S) + 5


def sweep_connections(*, outbox: Outbox, limit: int = 500) -> int:
    """Close connections orphaned by a dead process and let expired grace periods go offline.

    Safe to run in every process at once: each change is a conditional update that only one
    process wins, and only the winner publishes.
    """
    now = timezone.now()
    changed = 0
    cutoff = now - dt.timedelta(seconds=orphan_threshold_s())
    orphans = list(
        Connection.objects.filter(closed_at__isnull=True, last_activity__lt=cutoff).values_list(
            "pk", "channel_name"
        )[:limit]
    )
    for pk, channel_name in orphans:
        with transaction.atomic():
            device = _lock_device_of(pk)  # before the connection, as in connection_close
            won = Connection.objects.filter(pk=pk, closed_at__isnull=True).update(
                closed_at=now, close_code=CLOSE_STALE
            )
            if not won:
                continue
            outbox.send(channel_name, {"type": "gateway.close", "code": CLOSE_STALE})
            if (
                device
                and device.current_connection_id == pk
                and device.status == DeviceStatus.ONLINE
                and _set_status(device, DeviceStatus.RECONNECTING, now, outbox)
            ):
                publish_terminal_status(device=device, outbox=outbox)
                changed += 1

    grace_cutoff = now - dt.timedelta(seconds=settings.RECONNECT_GRACE_S)
    expired = list(
        Device.objects.filter(
            status=DeviceStatus.RECONNECTING, status_changed_at__lt=grace_cutoff
        ).values_list("pk", flat=True)[:limit]
    )
    for pk in expired:
        with transaction.atomic():
            won = Device.objects.filter(
                pk=pk, status=DeviceStatus.RECONNECTING, status_changed_at__lt=grace_cutoff
            ).update(status=DeviceStatus.OFFLINE, status_changed_at=now)
            if not won:
                continue
            device = Device.objects.select_related("current_connection").get(pk=pk)
            logger.info("device %s is offline (grace period over)", device)
            publish_terminal_status(device=device, outbox=outbox)
            changed += 1
    return changed
