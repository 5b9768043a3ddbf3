"""What the terminals app publishes after commit (see posgateway.core.events).

Each event is a snapshot of plain values, taken when the change was made: the interfaces turn
it into frames and dashboard messages later, after commit, whatever happens to the objects
meanwhile.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from terminals.models import Device


@dataclass(frozen=True, slots=True)
class DeviceChanged:
    """A device was added, changed status, was re-keyed, (de)activated or deleted."""

    group_id: int
    device_id: str | None
    device_type: str
    status: str
    active: bool

    @classmethod
    def of(cls, device: Device) -> DeviceChanged:
        return cls(
            group_id=device.group_id,
            device_id=device.device_id or None,
            device_type=device.device_type,
            status=device.status,
            active=device.is_active,
        )


@dataclass(frozen=True, slots=True)
class TerminalStatus:
    """A terminal as the store's desktops see it (``terminalsResponse``, status updates)."""

    device_id: str | None
    status: str
    metadata: dict[str, Any]
    connection_id: str | None = None
    connected_at: dt.datetime | None = None
    last_activity: dt.datetime | None = None

    @classmethod
    def of(cls, device: Device) -> TerminalStatus:
        conn = device.current_connection
        return cls(
            device_id=device.device_id or None,
            status=device.status,
            metadata=device.metadata or {},
            connection_id=conn.connection_id if conn else None,
            connected_at=conn.connected_at if conn else None,
            last_activity=conn.last_activity if conn else None,
        )


@dataclass(frozen=True, slots=True)
class TerminalStatusChanged:
    """Every live desktop of the store is told how the terminal stands now."""

    terminal: TerminalStatus
    desktop_channels: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The gateway closes the socket of a connection it ended (revoked key, found stale)."""

    channel_name: str
    code: int


@dataclass(frozen=True, slots=True)
class ConnectionReplaced:
    """A newer connection of the same device took over: the older socket is told and closed."""

    channel_name: str
