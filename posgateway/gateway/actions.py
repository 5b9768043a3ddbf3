"""The one table from action name to handler, who may call what, and the handlers themselves.

A handler is a plain function ``(ctx, frame, outbox) -> reply | None``: it checks the frame's
shape, calls one service and renders the service's outcome (``posgateway.gateway.frames``).
Handlers that touch the database run in one worker-thread hop per frame; the others run inline
on the event loop. The consumer never looks anything up by the client's action name except in
this table (never ``getattr(self, action)``: a client could call ``close``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payments import services as payments
from payments.models import TransactionType
from posgateway import nexo
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    PAYMENT_REQUEST_REQUIRED,
    REFUND_REQUEST_REQUIRED,
    TERMINAL_ID_REQUIRED,
    BadRequest,
)
from posgateway.gateway import frames
from posgateway.gateway.delivery import Follow
from posgateway.nexo import payments as nexo_payments
from sessions import services as sessions
from sessions.models import RequestKind
from terminals.events import TerminalStatus
from terminals.models import Device, DeviceType
from terminals.selectors import live_connection, terminal_list


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


Frame = dict[str, Any]
Handler = Callable[[DeviceContext, Frame, Outbox], Frame | None]


# --- Terminals ---------------------------------------------------------------------------------


def ping(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    return frames.pong()


def get_terminals(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    terminals = terminal_list(group=ctx.group_id)
    return frames.terminals_response([TerminalStatus.of(d) for d in terminals])


# --- Payments ----------------------------------------------------------------------------------


def _terminal_id(frame: Frame) -> str:
    terminal_id = frame.get("terminalId")
    if terminal_id is None or terminal_id == "":
        raise BadRequest(TERMINAL_ID_REQUIRED)
    if not isinstance(terminal_id, str):
        raise BadRequest("terminalId must be a string")
    if len(terminal_id) > 64:
        raise BadRequest("terminalId must be at most 64 characters")
    return terminal_id


def payment(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    terminal_id = _terminal_id(frame)
    if frame.get("paymentRequest") is None:
        raise BadRequest(PAYMENT_REQUEST_REQUIRED)
    outcome = payments.payment_start(
        desktop=ctx.device,
        desktop_connection_id=ctx.connection_id,
        terminal_id=terminal_id,
        payment_request=frame["paymentRequest"],
        outbox=outbox,
    )
    return frames.reply(outcome)


def payment_response(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> None:
    if frame.get("paymentResponse") is None:
        raise BadRequest("paymentResponse is required")
    payments.payment_result(
        terminal=ctx.device, payment_response=frame["paymentResponse"], outbox=outbox
    )


def refund(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    terminal_id = _terminal_id(frame)
    if frame.get("refundRequest") is None:
        raise BadRequest(REFUND_REQUEST_REQUIRED)
    outcome = payments.refund_start(
        group_id=ctx.group_id,
        desktop=ctx.device,
        desktop_connection_id=ctx.connection_id,
        terminal_id=terminal_id,
        refund_request=frame["refundRequest"],
        outbox=outbox,
    )
    return frames.reply(outcome)


def refund_response(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> None:
    if frame.get("refundResponse") is None:
        raise BadRequest("refundResponse is required")
    payments.payment_result(
        terminal=ctx.device,
        payment_response=frame["refundResponse"],
        outbox=outbox,
        kind=TransactionType.REFUND,
    )


def cancel_payment(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    outcome = payments.payment_cancel(
        group_id=ctx.group_id, transaction_id=frame.get("transactionId"), outbox=outbox
    )
    return frames.reply(outcome)


def get_transaction_status(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
    txn = payments.payment_status(group_id=ctx.group_id, transaction_id=frame.get("transactionId"))
    return frames.transaction_status(txn)


def ack(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> None:
    payments.results_ack(desktop=ctx.device, seq=frame.get("seq"), outbox=outbox)


# --- Display and input requests, Terminal API sessions ----------------------------------------


def _request(kind: str) -> Handler:
    def start(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame:
        terminal_id = frame.get("terminalId")
        if terminal_id is None or terminal_id == "":
            raise BadRequest(TERMINAL_ID_REQUIRED)
        if not isinstance(terminal_id, str) or len(terminal_id) > 64:
            raise BadRequest("terminalId must be a string of at most 64 characters")
        if frame.get(f"{kind}Request") is None:
            raise BadRequest(f"{kind}Request is required")
        outcome = sessions.request_start(
            kind=kind,
            desktop=ctx.device,
            desktop_connection_id=ctx.connection_id,
            terminal_id=terminal_id,
            body=frame[f"{kind}Request"],
            outbox=outbox,
        )
        return frames.request_accepted(outcome)

    return start


def _response(kind: str) -> Handler:
    def result(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> None:
        sessions.request_result(
            kind=kind, terminal=ctx.device, response=frame.get(f"{kind}Response"), outbox=outbox
        )

    return result


def terminal_api(ctx: DeviceContext, frame: Frame, outbox: Outbox) -> Frame | None:
    """A nexo request over the socket: admin requests answered at once; a payment or a
    reversal answered when the terminal has (this socket follows the transaction), a status
    at once, an abort not at all (as Adyen's empty answer)."""
    document = {k: v for k, v in frame.items() if k != "action"}
    if nexo_payments.category_of(document) is None:
        response, _ = nexo.terminal_api_request(
            desktop=ctx.device, document=document, outbox=outbox
        )
        return frames.terminal_api_response(response)
    answer = nexo_payments.handle(
        desktop=ctx.device,
        document=document,
        outbox=outbox,
        desktop_connection_id=ctx.connection_id,
    )
    if answer.empty:
        return None
    if answer.document is not None:
        return frames.terminal_api_response(answer.document)
    assert answer.message is not None
    assert answer.message.transaction is not None
    live = live_connection(device_id=ctx.device.pk)
    if live is not None:
        txn = answer.message.transaction
        group = frames.transaction_group(txn.group_id, txn.transaction_id)
        outbox.publish(Follow(group, live.channel_name))
    return None


# --- The table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    handler: Handler
    device_types: tuple[str, ...] = (DeviceType.DESKTOP, DeviceType.TERMINAL)
    forbidden_message: str = ""
    uses_database: bool = True


_DESKTOP = (DeviceType.DESKTOP,)
_TERMINAL = (DeviceType.TERMINAL,)

ACTIONS: dict[str, Action] = {
    "ping": Action(ping, uses_database=False),
    "getTerminals": Action(
        get_terminals, _DESKTOP, "Only desktop devices can request terminal list"
    ),
    "payment": Action(payment, _DESKTOP, "Only desktop devices can start payments"),
    "refund": Action(refund, _DESKTOP, "Only desktop devices can start refunds"),
    "refundResponse": Action(
        refund_response, _TERMINAL, "Only terminal devices can report refund results"
    ),
    "cancelPayment": Action(cancel_payment, _DESKTOP, "Only desktop devices can cancel payments"),
    "getTransactionStatus": Action(
        get_transaction_status, _DESKTOP, "Only desktop devices can query transactions"
    ),
    "ack": Action(ack, _DESKTOP, "Only desktop devices acknowledge results"),
    "paymentResponse": Action(
        payment_response, _TERMINAL, "Only terminal devices can report payment results"
    ),
    "display": Action(
        _request(RequestKind.DISPLAY), _DESKTOP, "Only desktop devices can send display requests"
    ),
    "input": Action(
        _request(RequestKind.INPUT), _DESKTOP, "Only desktop devices can send input requests"
    ),
    "displayResponse": Action(
        _response(RequestKind.DISPLAY),
        _TERMINAL,
        "Only terminal devices can answer display requests",
    ),
    "inputResponse": Action(
        _response(RequestKind.INPUT), _TERMINAL, "Only terminal devices can answer input requests"
    ),
    "terminalApi": Action(
        terminal_api, _DESKTOP, "Only desktop devices can send Terminal API requests"
    ),
}
