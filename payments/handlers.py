"""WebSocket actions about payments: each validates its frame's shape and calls one service."""

from __future__ import annotations

from typing import Any

from payments import services
from posgateway.dispatch import DeviceContext
from posgateway.protocol import PAYMENT_REQUEST_REQUIRED, TERMINAL_ID_REQUIRED, BadRequest
from posgateway.realtime import Outbox


def payment(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    terminal_id = frame.get("terminalId")
    if terminal_id is None or terminal_id == "":
        raise BadRequest(TERMINAL_ID_REQUIRED)
    if not isinstance(terminal_id, str):
        raise BadRequest("terminalId must be a string")
    if len(terminal_id) > 64:
        raise BadRequest("terminalId must be at most 64 characters")
    if frame.get("paymentRequest") is None:
        raise BadRequest(PAYMENT_REQUEST_REQUIRED)
    return services.payment_start(
        desktop=ctx.device,
        desktop_connection_id=ctx.connection_id,
        terminal_id=terminal_id,
        payment_request=frame["paymentRequest"],
        outbox=outbox,
    )


def payment_response(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> None:
    if frame.get("paymentResponse") is None:
        raise BadRequest("paymentResponse is required")
    services.payment_result(
        terminal=ctx.device, payment_response=frame["paymentResponse"], outbox=outbox
    )


def cancel_payment(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    return services.payment_cancel(
        group_id=ctx.group_id, transaction_id=frame.get("transactionId"), outbox=outbox
    )


def get_transaction_status(
    ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox
) -> dict[str, Any]:
    return services.payment_status(group_id=ctx.group_id, transaction_id=frame.get("transactionId"))


def ack(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> None:
    services.results_ack(desktop=ctx.device, seq=frame.get("seq"), outbox=outbox)
