"""What the sessions app publishes after commit (see posgateway.core.events), and what its
services answer with. The interfaces turn both into frames; nothing here is a wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessions.models import TerminalRequest, TerminalSession


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A session began, ended or expired: for the store's dashboards."""

    group_id: int
    session_id: str
    state: str

    @classmethod
    def of(cls, session: TerminalSession) -> SessionChanged:
        return cls(session.group_id, session.session_id, session.state)


@dataclass(frozen=True, slots=True)
class SessionBegun:
    """The terminal is told its session began (on ``channel_name``), or, ``resumed``, that it
    is still on after a reconnect."""

    session_id: str
    operations: list[dict[str, Any]]
    channel_name: str | None = None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The terminal is told its session ended (``reason``: ended, expired)."""

    session_id: str
    reason: str
    channel_name: str


@dataclass(frozen=True, slots=True)
class RequestChanged:
    """A display or input request was forwarded or finished: for the dashboards."""

    group_id: int
    request_id: str
    kind: str
    status: str

    @classmethod
    def of(cls, req: TerminalRequest) -> RequestChanged:
        return cls(req.group_id, req.request_id, req.kind, req.status)


@dataclass(frozen=True, slots=True)
class RequestForwarded:
    """A display or input request goes to its terminal (on ``channel_name``), or, ``resent``,
    again to the reconnected terminal."""

    kind: str
    request_id: str
    request: dict[str, Any]
    desktop_connection_id: str | None
    waiting_screen: dict[str, Any] | None = None
    channel_name: str | None = None
    resent: bool = False
    group_id: int = 0  # its store: a refused hand-off is retried by it and requestId


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """A display or input request's answer (or timeout) goes to the desktop that asked."""

    kind: str
    request_id: str
    response: dict[str, Any]
    channel_name: str


# --- What the services answer -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestAccepted:
    req: TerminalRequest
    terminal_ref: str
    device_id: str | None
    connection_id: str


class SessionRefused(Exception):
    """A session could not begin or end; ``reason`` says why: NotFound, Busy, UnreachableHost
    (the Terminal API answers them as its ErrorCondition of the same name)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.text = text
