"""State changes of stores, devices and connections. Every caller goes through these."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from posgateway.core.events import Outbox
from posgateway.core.protocol import TooManyRequests
from posgateway.core.sql import columns as _columns
from posgateway.core.sql import dt_param as _dt
from posgateway.core.sql import execute as _execute
from posgateway.core.sql import instances as _instances
from posgateway.core.sql import mark_saved, statement
from terminals.events import (
    ConnectionClosed,
    ConnectionReplaced,
    DeviceChanged,
    TerminalStatus,
    TerminalStatusChanged,
)
from terminals.models import (
    Connection,
    Device,
    DeviceStatus,
    DeviceType,
    Group,
    Membership,
    Role,
    generate_key,
    hash_key,
)
from terminals.selectors import open_desktop_channels
from webhooks.services import event_record

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
        outbox.publish(DeviceChanged.of(device))
    logger.info("device created %s key_prefix=%s", device, device.key_prefix)
    return device, key


def device_rotate_key(*, device: Device, outbox: Outbox) -> str:
    """Give the device a new key; the old one stops working and its sockets are closed."""
    key = generate_key()
    with transaction.atomic():
        device.set_key(key)
        device.save(update_fields=["key_hash", "key_prefix", "updated_at"])
        _close_live_connections(device, outbox, code=CLOSE_KEY_REVOKED)
        outbox.publish(DeviceChanged.of(device))
    logger.info("device key rotated %s key_prefix=%s", device, device.key_prefix)
    return key


def device_deactivate(*, device: Device, outbox: Outbox) -> None:
    with transaction.atomic():
        device.is_active = False
        device.save(update_fields=["is_active", "updated_at"])
        _close_live_connections(device, outbox, code=CLOSE_KEY_REVOKED)
        outbox.publish(DeviceChanged.of(device))
    logger.info("device deactivated %s", device)


def device_reactivate(*, device: Device, outbox: Outbox) -> None:
    """Let a deactivated device connect again with its unchanged key."""
    with transaction.atomic():
        device.is_active = True
        device.save(update_fields=["is_active", "updated_at"])
        outbox.publish(DeviceChanged.of(device))
    logger.info("device reactivated %s", device)


def device_delete(*, device: Device, outbox: Outbox) -> None:
    """Remove a device registered by mistake; its live sockets are closed as on deactivation.

    A device with history (payments, sessions, requests) is protected by the database and
    raises ProtectedError: deactivate it instead.
    """
    with transaction.atomic():
        _close_live_connections(device, outbox, code=CLOSE_KEY_REVOKED)
        described = str(device)
        device.delete()
        device.is_active = False  # what the dashboards hear: the device is gone
        outbox.publish(DeviceChanged.of(device))
    logger.info("device deleted %s", described)


def _close_live_connections(device: Device, outbox: Outbox, *, code: int) -> None:
    for conn in Connection.objects.filter(device=device, closed_at__isnull=True):
        outbox.publish(ConnectionClosed(conn.channel_name, code))


def staff_create_or_update(
    *,
    username: str,
    group_slugs: Iterable[str],
    password: str | None = None,
    role: str = Role.MANAGER,
) -> tuple[object, str]:
    """Create or update a staff user, a member of exactly these stores with this role in each
    (``manager`` or ``viewer``, contract section 8); returns a new API token.

    Memberships of other stores are removed; those of these stores get ``role``. Tokens are
    stored as digests (terminals/tokens.py), so the one printed is always a new one: it
    replaces the user's previous token, which stops working. A password must pass
    ``AUTH_PASSWORD_VALIDATORS`` (``django.core.exceptions.ValidationError`` otherwise, and
    nothing changes).
    """
    if role not in Role.values:
        raise ValueError(f"role must be one of {', '.join(Role.values)}")
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username)
        user.is_staff = True
        if password:
            # AUTH_PASSWORD_VALIDATORS, as the admin runs them; raises ValidationError.
            validate_password(password, user)
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        groups = [group_get_or_create(slug=slug) for slug in group_slugs]
        Membership.objects.filter(user=user).exclude(group__in=groups).delete()
        for group in groups:
            Membership.objects.update_or_create(user=user, group=group, defaults={"role": role})
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
    logger.info("staff user %s: %s of %s", username, role, ", ".join(g.slug for g in groups))
    return user, token.key


# --- Connections and live status -------------------------------------------------------------

# The statements of every connect and disconnect, written out: building them with the ORM cost
# several times what running them does (docs/performance.md). Plain SQL for SQLite and
# PostgreSQL alike.
_OPEN_CONNECTIONS_OF_DEVICE = statement(
    "SELECT {Connection.id}, {Connection.channel_name} FROM {Connection}"
    " WHERE {Connection.device} = %s AND {Connection.closed_at} IS NULL",
    Connection,
)
_INSERT_CONNECTION = statement(
    "INSERT INTO {Connection} ({Connection.connection_id}, {Connection.device},"
    " {Connection.channel_name}, {Connection.remote_addr}, {Connection.connected_at},"
    " {Connection.last_activity}) VALUES (%s, %s, %s, %s, %s, %s) RETURNING {Connection.id}",
    Connection,
)
_SET_STATUS = statement(
    "UPDATE {Device} SET {Device.status} = %s, {Device.status_changed_at} = %s,"
    " {Device.current_connection} = %s, {Device.updated_at} = %s WHERE {Device.id} = %s",
    Device,
)
_CLOSE_IF_OPEN = statement(
    "UPDATE {Connection} SET {Connection.closed_at} = %s, {Connection.close_code} = %s"
    " WHERE {Connection.id} = %s AND {Connection.closed_at} IS NULL",
    Connection,
)


def _set_status(device: Device, status: str, now: dt.datetime, outbox: Outbox) -> bool:
    changed = device.status != status
    device.status = status
    if changed:
        device.status_changed_at = now
    device.updated_at = now
    _execute(
        _SET_STATUS,
        [
            status,
            _dt(device.status_changed_at),
            device.current_connection_id,
            _dt(now),
            device.pk,
        ],
    )
    if changed:
        logger.info("device %s is %s", device, status)
        _terminal_event(device, status)
    return changed


def _terminal_event(device: Device, status: str) -> None:
    """``terminal.online|reconnecting|offline`` for the store's webhooks, in the caller's
    transaction (webhooks.services: one INSERT)."""
    if device.device_type == DeviceType.TERMINAL:
        event_record(group_id=device.group_id, type=f"terminal.{status}", subject_pk=device.pk)


def publish_terminal_status(*, device: Device, outbox: Outbox) -> None:
    """Tell every desktop of the store how this terminal stands now (and the dashboards how
    any device does)."""
    outbox.publish(DeviceChanged.of(device))
    if device.device_type != DeviceType.TERMINAL:
        return
    channels = open_desktop_channels(group_id=device.group_id)
    if channels:
        outbox.publish(TerminalStatusChanged(TerminalStatus.of(device), channels))


def connection_open(
    *, device_pk: int, channel_name: str, remote_addr: str, outbox: Outbox
) -> Connection:
    """A device connected: it replaces any older live connection and is online.

    The returned connection's ``device`` is the device as locked and updated here.
    """
    with transaction.atomic():
        device = _locked_device("d.id = %s", [device_pk])
        if device is None:
            raise Device.DoesNotExist(f"no device {device_pk}")
        return _open(device, channel_name, remote_addr, outbox)


def connection_open_by_key(
    *, key: str, channel_name: str, remote_addr: str, outbox: Outbox
) -> Connection | None:
    """``connection_open`` for the active device whose API key this is; None for a wrong key.

    The key lookup is the device's locking read: a connect costs one transaction.
    """
    if not key:
        return None
    with transaction.atomic():
        device = _locked_device("d.key_hash = %s AND d.is_active = %s", [hash_key(key), True])
        if device is None:
            return None
        return _open(device, channel_name, remote_addr, outbox)


# The device row locked (FOR UPDATE OF d where the database has it), with its store and the
# number of devices in that store. A store holds at most one live connection per device, so it
# can only be full when it has at least MAX_CONNECTIONS_PER_STORE devices: counting them is an
# index-only count of one store, where counting live connections walks every open connection.
_LOCKED_DEVICE = statement(
    f"SELECT {_columns(Device, 'd')}, {_columns(Group, 'g')},"  # noqa: S608 (model columns)
    " (SELECT COUNT(*) FROM {Device} s WHERE s.{Device.group} = d.{Device.group})"
    " FROM {Device} d INNER JOIN {Group} g ON g.{Group.id} = d.{Device.group} WHERE ",
    Device,
    Group,
)
_LOCKED_DEVICE_OF_CONNECTION = statement(
    f"SELECT {_columns(Device, 'd')}, {_columns(Connection, 'c')}"  # noqa: S608 (model columns)
    " FROM {Connection} x INNER JOIN {Device} d ON d.{Device.id} = x.{Connection.device}"
    " LEFT OUTER JOIN {Connection} c ON c.{Connection.id} = d.{Device.current_connection}"
    " WHERE x.{Connection.id} = %s",
    Device,
    Connection,
)


def _lock_clause() -> str:
    return " FOR UPDATE OF d" if db_connection.features.has_select_for_update_of else ""


def _locked_device(where: str, params: list) -> Device | None:
    row = _execute(_LOCKED_DEVICE + where + _lock_clause(), params, fetch="one")
    if row is None:
        return None
    device, group = _instances(row, Device, Group)
    device.group = group
    device.store_devices = row[-1]
    return device


def _open(device: Device, channel_name: str, remote_addr: str, outbox: Outbox) -> Connection:
    now = timezone.now()
    older = _execute(_OPEN_CONNECTIONS_OF_DEVICE, [device.pk], fetch="all")
    if (
        not older
        and device.store_devices >= settings.MAX_CONNECTIONS_PER_STORE
        and _store_is_full(device.group_id)
    ):
        raise TooManyRequests(
            f"The store has reached {settings.MAX_CONNECTIONS_PER_STORE} live connections"
        )
    if older:
        Connection.objects.filter(pk__in=[pk for pk, _ in older]).update(
            closed_at=now, close_code=CLOSE_REPLACED
        )
        for _, older_channel in older:
            outbox.publish(ConnectionReplaced(older_channel))
    conn = Connection(
        connection_id=new_connection_id(),
        device=device,
        channel_name=channel_name,
        remote_addr=remote_addr[:64],
        connected_at=now,
        last_activity=now,
    )
    stamp = _dt(now)
    params = [conn.connection_id, device.pk, conn.channel_name, conn.remote_addr, stamp, stamp]
    (conn.pk,) = _execute(_INSERT_CONNECTION, params, fetch="one")
    mark_saved(conn)
    device.current_connection = conn
    _set_status(device, DeviceStatus.ONLINE, now, outbox)
    publish_terminal_status(device=device, outbox=outbox)
    return conn


def _lock_device_of(connection_pk: int) -> Device | None:
    """The device of a connection, locked, with its current connection (a status frame shows
    it, and it is usually this one)."""
    row = _execute(_LOCKED_DEVICE_OF_CONNECTION + _lock_clause(), [connection_pk], fetch="one")
    if row is None:
        return None
    device, current = _instances(row, Device, Connection)
    device.current_connection = current
    return device


def _store_is_full(group_id: int) -> bool:
    live = Connection.objects.filter(device__group_id=group_id, closed_at__isnull=True)
    return live.count() >= settings.MAX_CONNECTIONS_PER_STORE


def connection_close(*, connection_pk: int, code: int | None, outbox: Outbox) -> None:
    """A socket closed: offline at once on a normal close or a revoked key, else reconnecting
    for the grace period."""
    now = timezone.now()
    with transaction.atomic():
        # The device row first, the order connection_open takes them in: the other order
        # deadlocks with a reconnect of the same device.
        device = _lock_device_of(connection_pk)
        won = _execute(_CLOSE_IF_OPEN, [_dt(now), code, connection_pk])
        if not won:
            return  # already closed: replaced, or found stale by a sweep
        if device is None or device.current_connection_id != connection_pk:
            return  # replaced by a newer connection, which now governs the status
        # A revoked key (rotated or deactivated) will not come back by itself: offline too.
        gone = code in NORMAL_CLOSE_CODES or code == CLOSE_KEY_REVOKED or not device.is_active
        status = DeviceStatus.OFFLINE if gone else DeviceStatus.RECONNECTING
        if _set_status(device, status, now, outbox):
            publish_terminal_status(device=device, outbox=outbox)


def connections_touch(*, connection_pks: list[int], at: dt.datetime) -> set[int]:
    """Record activity of many connections at once; return those the gateway counts as closed
    (or that no longer exist): their sockets must go."""
    gone: set[int] = set()
    for start in range(0, len(connection_pks), 500):
        chunk = connection_pks[start : start + 500]
        with transaction.atomic():
            open_pks = set(
                Connection.objects.filter(pk__in=chunk, closed_at__isnull=True).values_list(
                    "pk", flat=True
                )
            )
            if open_pks:
                Connection.objects.filter(pk__in=open_pks).update(last_activity=at)
        gone.update(pk for pk in chunk if pk not in open_pks)
    return gone


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
            outbox.publish(ConnectionClosed(channel_name, CLOSE_STALE))
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
            _terminal_event(device, DeviceStatus.OFFLINE)
            publish_terminal_status(device=device, outbox=outbox)
            changed += 1
    return changed


# --- A desktop's result numbering --------------------------------------------------------------
# Results pushed to a desktop are numbered per device (last_seq) and acknowledged up to a seq
# (acked_seq); the payments app keeps the results themselves.

_NEXT_SEQ = statement(
    "UPDATE {Device} SET {Device.last_seq} = {Device.last_seq} + 1 WHERE {Device.id} = %s"
    " RETURNING {Device.last_seq}",
    Device,
)
# acked_seq rises only when the ack acknowledges a result (``unacked``), and never past an
# unacknowledged one: connects trust it to skip the backlog (acked_seq == last_seq).
_ACK_SEQ = statement(
    "UPDATE {Device} SET {Device.acked_seq} = CASE WHEN {Device.acked_seq} < %s AND {{unacked}}"
    " THEN %s ELSE {Device.acked_seq} END WHERE {Device.id} = %s AND {Device.last_seq} >= %s"
    " RETURNING {Device.id}",
    Device,
)


def desktop_next_seq(*, desktop_pk: int) -> int:
    """The desktop's next result number; the UPDATE locks its device row (as connects and acks
    do) until the caller's transaction ends."""
    (seq,) = _execute(_NEXT_SEQ, [desktop_pk], fetch="one")
    return seq


def desktop_seq_acked(*, desktop_pk: int, seq: int, unacked: tuple[str, list]) -> bool:
    """The desktop acknowledged every result up to ``seq``: False if seq was never sent.

    ``unacked`` is the caller's SQL condition (with its parameters) that a result up to seq is
    still unacknowledged. Locks the device row, like ``desktop_next_seq``.
    """
    condition, params = unacked
    sql = _ACK_SEQ.replace("{unacked}", condition)
    return _execute(sql, [seq, *params, seq, desktop_pk, seq], fetch="one") is not None
