"""WebSocket actions of sessions and of display / input requests."""

from __future__ import annotations

from typing import Any

from posgateway.dispatch import DeviceContext
from posgateway.protocol import TERMINAL_ID_REQUIRED, BadRequest
from posgateway.realtime import Outbox
from sessions import services
from sessions.models import RequestKind


def _terminal_id(frame: dict[str, Any]) -> str:
    terminal_id = frame.get("terminalId")
    if terminal_id is None or terminal_id == "":
        raise BadRequest(TERMINAL_ID_REQUIRED)
    if not isinstance(terminal_id, str) or len(terminal_id) > 64:
        raise BadRequest("terminalId must be a string of at most 64 characters")
    return terminal_id


def display(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    terminal_id = _terminal_id(frame)
    if frame.get("displayRequest") is None:
        raise BadRequest("displayRequest is required")
    return services.request_start(
        kind=RequestKind.DISPLAY,
        desktop=ctx.device,
        desktop_connection_id=ctx.connection_id,
        terminal_id=terminal_id,
        body=frame["displayRequest"],
        outbox=outbox,
    )


def input_(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    terminal_id = _terminal_id(frame)
    if frame.get("inputRequest") is None:
        raise BadRequest("inputRequest is required")
    return services.request_start(
        kind=RequestKind.INPUT,
        desktop=ctx.device,
        desktop_connection_id=ctx.connection_id,
        terminal_id=terminal_id,
        body=frame["inputRequest"],
        outbox=outbox,
    )


def display_response(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> None:
    services.request_result(
        kind=RequestKind.DISPLAY,
        terminal=ctx.device,
        response=frame.get("displayResponse"),
        outbox=outbox,
    )


def input_response(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> None:
    services.request_result(
        kind=RequestKind.INPUT,
        terminal=ctx.device,
        response=frame.get("inputResponse"),
        outbox=outbox,
    )


def terminal_api(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    document = {k: v for k, v in frame.items() if k != "action"}
    response, session = services.terminal_api_request(
        desktop=ctx.device, document=document, outbox=outbox
    )
    if session is not None:
        services.session_keep_response(session_pk=session.pk, response=response)
    return {"action": "terminalApiResponse", **response}
