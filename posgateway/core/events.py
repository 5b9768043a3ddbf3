"""How the domain tells the interfaces what changed: events, released when the change commits.

A service never builds a frame or talks to the channel layer. It publishes a small event (a
dataclass of its own app's ``events`` module: "this payment was forwarded to that connection",
"this device's status changed") into the caller's :class:`Outbox`; the event is kept only if
the service's transaction commits. The caller (a socket consumer, a view, the sweeper, the
admin) then hands the outbox to the real-time gateway (``posgateway.gateway.delivery``), which
turns each event into frames and dashboard messages. A rolled-back change therefore publishes
nothing, and a domain app knows nothing of frames, sockets or HTTP.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction


class Outbox:
    """The events of one request's (or one sweep's) service calls, in commit order."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Any] = []

    def publish(self, event: Any) -> None:
        """Keep ``event`` once the current transaction commits (now, outside of one)."""
        transaction.on_commit(lambda: self.events.append(event))

    def take(self) -> list[Any]:
        """The committed events so far, emptying the outbox."""
        events, self.events = self.events, []
        return events
