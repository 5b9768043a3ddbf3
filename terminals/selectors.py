"""Reads of stores, devices and their live connections."""

from __future__ import annotations

from typing import Any

from django.db import connection as db_connection
from django.db.models import Prefetch, QuerySet

from posgateway.protocol import DIFFERENT_GROUP, TERMINAL_NOT_FOUND, Forbidden, NotFound, iso
from terminals.models import Connection, Device, DeviceType, Group, hash_key


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


def terminal_frame(device: Device) -> dict[str, Any]:
    """A terminal as it appears in ``terminalsResponse`` and ``terminalStatusUpdate``."""
    conn = device.current_connection
    return {
        "connectionId": conn.connection_id if conn else None,
        "deviceId": device.device_id or None,
        "connectedAt": iso(conn.connected_at) if conn else None,
        "lastActivity": iso(conn.last_activity) if conn else None,
        "status": device.status,
        "metadata": device.metadata or {},
    }


# Written out: the ORM took several times longer to build it than SQLite to run it.
_OPEN_DESKTOP_CHANNELS = (
    "SELECT channel_name FROM terminals_connection WHERE closed_at IS NULL AND device_id IN"
    " (SELECT id FROM terminals_device WHERE group_id = %s AND device_type = %s)"
)


def open_desktop_channels(*, group_id: int) -> list[str]:
    """Channel names of the live connections of a store's desktops.

    Driven by the store's desktops (index on device group and type), not by the open
    connections of every store: the cost stays the same however many sockets are open.
    """
    with db_connection.cursor() as cursor:
        cursor.execute(_OPEN_DESKTOP_CHANNELS, [group_id, DeviceType.DESKTOP.value])
        return [channel for (channel,) in cursor.fetchall()]


def live_connection(*, device_id: int) -> Connection | None:
    """The device's current connection if it is open."""
    return (
        Connection.objects.filter(device_id=device_id, closed_at__isnull=True)
        .order_by("-connected_at")
        .first()
    )


def resolve_terminal(*, group_id: int, terminal_id: str) -> tuple[Device, Connection | None]:
    """Terminal ID resolution: a deviceId of the sender's store first, then a connectionId.

    Returns the terminal and its live connection (None when it is not connected). A
    connectionId of another store's device is Forbidden (the seed's own answer); anything else
    unknown is Not Found.
    """
    device = (
        Device.objects.select_related("current_connection")
        .filter(
            group_id=group_id,
            device_type=DeviceType.TERMINAL,
            device_id=terminal_id,
            is_active=True,
        )
        .first()
    )
    if device is None:
        conn = (
            Connection.objects.select_related("device__current_connection")
            .filter(connection_id=terminal_id)
            .first()
        )
        if conn is None:
            raise NotFound(TERMINAL_NOT_FOUND)
        if conn.device.group_id != group_id:
            raise Forbidden(DIFFERENT_GROUP)
        device = conn.device
        if device.device_type != DeviceType.TERMINAL or not device.is_active:
            raise NotFound(TERMINAL_NOT_FOUND)
    # A terminal that reconnected is reached on its newest connection.
    live = device.current_connection
    if live is not None and live.closed_at is not None:
        live = None
    return device, live


# --- Store scope of staff users (REST API, dashboard) ----------------------------------------


def groups_for_user(user: Any) -> QuerySet[Group]:
    """The stores a user may see: every store for a superuser, their own for staff, else none."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Group.objects.none()
    if user.is_superuser:
        return Group.objects.all()
    if user.is_staff:
        return Group.objects.filter(members=user)
    return Group.objects.none()


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


def terminals_for_user(*, user: Any) -> QuerySet[Device]:
    """The active terminals of the user's stores, each with ``payments_in_flight`` prefetched."""
    # Imported here: payments depends on terminals, not the other way round.
    from payments.models import IN_FLIGHT_STATUSES, Transaction

    in_flight = Prefetch(
        "terminal_transactions",
        queryset=Transaction.objects.filter(status__in=IN_FLIGHT_STATUSES).order_by("-created_at"),
        to_attr="payments_in_flight",
    )
    return (
        devices_for_user(user=user)
        .filter(device_type=DeviceType.TERMINAL, is_active=True)
        .prefetch_related(in_flight)
    )
