"""The one table from action name to handler, and who may call what.

A handler is a plain function ``(ctx, frame, outbox) -> reply | None``. Handlers that touch the
database run in one worker-thread hop per frame; the others run inline on the event loop. The
consumer never looks anything up by the client's action name except in this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from posgateway.realtime import Outbox
from terminals.models import Device, DeviceType


@dataclass
class DeviceContext:
    """What a connection knows about its device, fixed for the connection's life."""

    device: Device
    group_slug: str
    connection_pk: int
    connection_id: str

    @property
    def device_type(self) -> str:
        return self.device.device_type

    @property
    def group_id(self) -> int:
        return self.device.group_id


Handler = Callable[[DeviceContext, dict[str, Any], Outbox], dict[str, Any] | None]


@dataclass(frozen=True)
class Action:
    handler: Handler
    device_types: tuple[str, ...] = (DeviceType.DESKTOP, DeviceType.TERMINAL)
    forbidden_message: str = ""
    uses_database: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def build_actions() -> dict[str, Action]:
    from payments import handlers as payment_handlers
    from sessions import handlers as session_handlers
    from terminals import handlers as terminal_handlers

    desktop = (DeviceType.DESKTOP,)
    terminal = (DeviceType.TERMINAL,)
    return {
        "ping": Action(terminal_handlers.ping, uses_database=False),
        "getTerminals": Action(
            terminal_handlers.get_terminals,
            desktop,
            "Only desktop devices can request terminal list",
        ),
        "payment": Action(
            payment_handlers.payment, desktop, "Only desktop devices can start payments"
        ),
        "cancelPayment": Action(
            payment_handlers.cancel_payment, desktop, "Only desktop devices can cancel payments"
        ),
        "getTransactionStatus": Action(
            payment_handlers.get_transaction_status,
            desktop,
            "Only desktop devices can query transactions",
        ),
        "ack": Action(payment_handlers.ack, desktop, "Only desktop devices acknowledge results"),
        "paymentResponse": Action(
            payment_handlers.payment_response,
            terminal,
            "Only terminal devices can report payment results",
        ),
        "display": Action(
            session_handlers.display, desktop, "Only desktop devices can send display requests"
        ),
        "input": Action(
            session_handlers.input_, desktop, "Only desktop devices can send input requests"
        ),
        "displayResponse": Action(
            session_handlers.display_response,
            terminal,
            "Only terminal devices can answer display requests",
        ),
        "inputResponse": Action(
            session_handlers.input_response,
            terminal,
            "Only terminal devices can answer input requests",
        ),
        "terminalApi": Action(
            session_handlers.terminal_api,
            desktop,
            "Only desktop devices can send Terminal API requests",
        ),
    }
