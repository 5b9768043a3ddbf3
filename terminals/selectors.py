"""Reads of stores, devices and their live connections."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from posgateway.core.protocol import (
    DIFFERENT_GROUP,
    TERMINAL_NOT_FOUND,
    Forbidden,
    NotFound,
    ProtocolError,
)
from posgateway.core.sql import execute, loaded
from terminals.models import (
    Connection,
    Device,
    DeviceStatus,
    DeviceType,
    Group,
    Membership,
    Role,
    hash_key,
)


def device_for_key(*, key: str) -> Device | None:
    """The active device whose API key this is, or None."""
    if not key:
        return None
    return (
        Device.objects.select_related("group")
        .filter(key_hash=hash_key(key), is_active=True)
        .first()
    )


def terminal_list(*, group: Group | int) -> list[Device]:
    """Every active terminal of the store with its current connection, offline ones included."""
    return list(
        Device.objects.filter(group=group, device_type=DeviceType.TERMINAL, is_active=True)
        .select_related("current_connection")
        .order_by("device_id", "pk")
    )


# Written out: the ORM took several times longer to build it than SQLite to run it.
_OPEN_DESKTOP_CHANNELS = (
    f"SELECT channel_name FROM {Connection._meta.db_table}"  # noqa: S608 (model metadata)
    " WHERE closed_at IS NULL AND device_id IN"
    f" (SELECT id FROM {Device._meta.db_table} WHERE group_id = %s AND device_type = %s)"
)


def open_desktop_channels(*, group_id: int) -> list[str]:
    """Channel names of the live connections of a store's desktops.

    Driven by the store's desktops (index on device group and type), not by the open
    connections of every store: the cost stays the same however many sockets are open.
    """
    rows = execute(_OPEN_DESKTOP_CHANNELS, [group_id, DeviceType.DESKTOP.value], fetch="all")
    return [channel for (channel,) in rows]


def live_connection(*, device_id: int) -> Connection | None:
    """The device's current connection if it is open."""
    return (
        Connection.objects.filter(device_id=device_id, closed_at__isnull=True)
        .order_by("-connected_at")
        .first()
    )


@dataclass(slots=True)
class Resolution:
    """What a terminal ID names: the terminal and its live connection, or why nothing."""

    terminal: Device | None
    live: Connection | None  # None when the terminal is not connected
    extras: tuple = ()  # the caller's ``also`` values, for this terminal
    error: ProtocolError | None = None

    def require(self) -> tuple[Device, Connection | None]:
        """The terminal and its live connection; raises what the resolution found instead."""
        if self.error is not None:
            raise self.error
        assert self.terminal is not None
        return self.terminal, self.live


_RESOLVE_BY_DEVICE_ID: dict[tuple[str, ...], str] = {}


def _resolve_statement(extras: tuple[str, ...]) -> str:
    """One statement: the store's active terminal of this deviceId with its current
    connection, and the caller's scalar subqueries (placed first, evaluated for ``d.id``).
    From a one-row table, so the subqueries answer even when no terminal matches. Built once
    per list of subqueries (the payment path asks the same ones every time)."""
    if extras not in _RESOLVE_BY_DEVICE_ID:
        device, conn = Device._meta, Connection._meta
        _RESOLVE_BY_DEVICE_ID[extras] = (
            f"SELECT {''.join(f'{e}, ' for e in extras)}"  # noqa: S608 (callers' constants)
            "d.id, d.device_id, c.id, c.connection_id, c.channel_name, c.closed_at"
            f" FROM (SELECT 1 AS one) x LEFT OUTER JOIN {device.db_table} d ON d.group_id = %s"
            f" AND d.device_type = '{DeviceType.TERMINAL.value}' AND d.device_id = %s"
            f" AND d.is_active = %s LEFT OUTER JOIN {conn.db_table} c"
            " ON c.id = d.current_connection_id"
        )
    return _RESOLVE_BY_DEVICE_ID[extras]


def resolve_terminal(
    *,
    group_id: int,
    terminal_id: str,
    device_id_only: bool = False,
    also: Sequence[tuple[str, Sequence[Any]]] = (),
) -> Resolution:
    """Terminal ID resolution, the seed's rule: a deviceId of the sender's store first, then a
    connectionId (not when ``device_id_only``: a Terminal API POIID is always a deviceId).

    A connectionId of another store's device is Forbidden (the seed's own answer); anything
    else unknown is Not Found: the resolution's ``error``, raised by ``require()``. A terminal
    that reconnected is reached on its newest connection.

    ``also`` are scalar subqueries ``(sql, params)`` the caller needs about the terminal,
    evaluated in the same statement with the terminal's id as ``d.id`` (NULL when the deviceId
    matched nothing), returned in ``extras``: the payment path is one statement.
    """
    sql = _resolve_statement(tuple(expression for expression, _ in also))
    params = [p for _, ps in also for p in ps] + [group_id, terminal_id, True]
    row = execute(sql, params, fetch="one")
    extras, row = tuple(row[: len(also)]), row[len(also) :]
    terminal_pk, device_id, conn_pk, conn_id, channel, closed_at = row
    if terminal_pk is not None:
        terminal = loaded(
            Device,
            id=terminal_pk,
            group_id=group_id,
            device_type=DeviceType.TERMINAL.value,
            device_id=device_id,
            is_active=True,
        )
        live = None
        if conn_pk is not None and closed_at is None:  # its current connection, while open
            live = loaded(
                Connection,
                id=conn_pk,
                connection_id=conn_id,
                device_id=terminal_pk,
                channel_name=channel,
                closed_at=None,
            )
        return Resolution(terminal, live, extras)
    if device_id_only:
        return Resolution(None, None, extras, NotFound(TERMINAL_NOT_FOUND))
    conn = (
        Connection.objects.select_related("device__current_connection")
        .filter(connection_id=terminal_id)
        .first()
    )
    if conn is None:
        return Resolution(None, None, extras, NotFound(TERMINAL_NOT_FOUND))
    if conn.device.group_id != group_id:
        return Resolution(None, None, extras, Forbidden(DIFFERENT_GROUP))
    device = conn.device
    if device.device_type != DeviceType.TERMINAL or not device.is_active:
        return Resolution(None, None, extras, NotFound(TERMINAL_NOT_FOUND))
    live = device.current_connection
    if live is not None and live.closed_at is not None:
        live = None
    if also:  # evaluated again, now for the terminal found by its connectionId
        columns = ", ".join(expression for expression, _ in also)
        sql = f"SELECT {columns} FROM {Device._meta.db_table} d WHERE d.id = %s"  # noqa: S608
        extras = tuple(
            execute(
                sql,
                [p for _, ps in also for p in ps] + [device.pk],
                fetch="one",
            )
        )
    return Resolution(device, live, extras)


def names_terminal(*, terminal: Device, terminal_id: str, as_named: str = "") -> bool:
    """Whether ``terminal_id`` names this terminal by the resolution rule: its deviceId, one
    of its connectionIds, or how the caller named it before (``as_named``)."""
    if terminal_id in (as_named, terminal.device_id):
        return True
    return Connection.objects.filter(connection_id=terminal_id, device_id=terminal.pk).exists()


# --- Store scope of staff users (REST API, dashboard) ----------------------------------------


def _is_staff(user: Any) -> bool:
    """An active, logged-in staff user or superuser: the only users with any store."""
    return (
        user is not None
        and user.is_authenticated
        and user.is_active
        and (user.is_staff or user.is_superuser)
    )


def groups_for_user(user: Any) -> QuerySet[Group]:
    """The stores a user may read, in either role: every store for a superuser, their own for
    staff, else none."""
    if not _is_staff(user):
        return Group.objects.none()
    if user.is_superuser:
        return Group.objects.all()
    return Group.objects.filter(memberships__user=user)


def managed_groups(user: Any) -> QuerySet[Group]:
    """The stores where the user is a manager (contract section 8: devices, refunds, webhooks):
    every store for an active superuser; none for anonymous, inactive or non-staff users."""
    if not _is_staff(user):
        return Group.objects.none()
    if user.is_superuser:
        return Group.objects.all()
    return Group.objects.filter(memberships__user=user, memberships__role=Role.MANAGER)


def role_of(user: Any, group_id: int) -> str | None:
    """The user's role in the store (``"manager"`` or ``"viewer"``), ``"manager"`` for an
    active superuser, None where the user has no role (not a member, not staff, inactive).

    For a store that does not exist: None for everyone but a superuser."""
    if not _is_staff(user):
        return None
    if user.is_superuser:
        return Role.MANAGER.value if Group.objects.filter(pk=group_id).exists() else None
    role = (
        Membership.objects.filter(user=user, group_id=group_id)
        .values_list("role", flat=True)
        .first()
    )
    return None if role is None else str(role)


def is_manager(user: Any, group_id: int) -> bool:
    """Whether the user may change things in the store: manager of it, or a superuser."""
    return role_of(user, group_id) == Role.MANAGER


def in_user_stores(queryset: QuerySet, *, user: Any, field: str = "group") -> QuerySet:
    """``queryset`` narrowed to the rows of the user's stores (``field`` points at the store)."""
    if user is not None and user.is_active and user.is_superuser:
        return queryset
    return queryset.filter(**{f"{field}__in": groups_for_user(user)})


def devices_for_user(*, user: Any) -> QuerySet[Device]:
    """Every device of the user's stores, desktops and terminals, inactive ones included."""
    return in_user_stores(
        Device.objects.select_related("group", "current_connection"), user=user
    ).order_by("group__slug", "device_type", "device_id", "pk")


# --- Needs attention: terminals offline when the store needs them ---------------------------


def store_open_since(group: Group, now: dt.datetime) -> dt.datetime | None:
    """When the store's current opening began, if it is open at ``now`` (its own local time);
    None when it is closed now or has no opening hours. Hours may run past midnight."""
    if group.opens_at is None or group.closes_at is None:
        return None
    local = now.astimezone(group.zone)
    today = local.date()
    for day in (today, today - dt.timedelta(days=1)):
        opens = dt.datetime.combine(day, group.opens_at, tzinfo=group.zone)
        closes_day = day if group.closes_at > group.opens_at else day + dt.timedelta(days=1)
        closes = dt.datetime.combine(closes_day, group.closes_at, tzinfo=group.zone)
        if opens <= local < closes:
            return opens
    return None


@dataclass(frozen=True)
class OfflineTerminal:
    """An active terminal that is offline when the store needs it."""

    device: Device
    since: dt.datetime  # offline since (or since the store opened, if later)
    during_opening_hours: bool


def terminals_offline_for_attention(
    *, user: Any, now: dt.datetime | None = None
) -> list[OfflineTerminal]:
    """The active terminals of the user's stores that need someone: offline while their store
    is open (for more than ``ATTENTION_OFFLINE_GRACE_S``, counted from the opening at the
    earliest), or, for a store without opening hours, offline for more than
    ``ATTENTION_OFFLINE_AFTER_S``. A reconnecting terminal is not offline yet. One query."""
    now = now or dt.datetime.now(dt.UTC)
    found = []
    offline = in_user_stores(
        Device.objects.select_related("group").filter(
            device_type=DeviceType.TERMINAL, is_active=True, status=DeviceStatus.OFFLINE
        ),
        user=user,
    ).order_by("group__slug", "device_id", "pk")
    for device in offline:
        since = device.status_changed_at or device.created_at
        opened = store_open_since(device.group, now)
        if device.group.opens_at is not None:
            if opened is None:
                continue  # closed now: nobody needs the terminal
            since = max(since, opened)
            wait = settings.ATTENTION_OFFLINE_GRACE_S
        else:
            wait = settings.ATTENTION_OFFLINE_AFTER_S
        if (now - since).total_seconds() >= wait:
            found.append(OfflineTerminal(device, since, opened is not None))
    return found
