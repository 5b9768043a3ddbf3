"""The Terminal API's nexo documents: read, answered, and mapped onto the sessions services.

The one place that knows the shape of ``SaleToPOIRequest`` / ``SaleToPOIResponse`` (contract
section 6): the HTTP endpoints (``posgateway.terminal_api``) and the ``terminalApi`` WebSocket
action (``posgateway.gateway``) both call :func:`terminal_api_request`. Every failure is a
``Result: Failure`` document with a nexo ErrorCondition and leaves nothing half-created.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from posgateway.core.events import Outbox
from posgateway.core.protocol import UNSTORABLE_TEXT, unstorable_text
from sessions import services
from sessions.events import SessionRefused
from sessions.models import OperationType, TerminalSession
from sessions.validation import MAX_WAITING_SCREEN_MS, REQUEST_ID
from terminals.models import Device

logger = logging.getLogger("sessions")


class TerminalApiFailure(Exception):
    """Answered as ``Response.Result: Failure`` with a nexo ErrorCondition."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def message_format(text: str) -> TerminalApiFailure:
    return TerminalApiFailure("MessageFormat", text)


BEGIN_HEADER = {
    "ProtocolVersion": "3.0",
    "MessageClass": "Service",
    "MessageCategory": "Admin",
    "MessageType": "Request",
}
ID_FIELDS = ("ServiceID", "SaleID", "POIID")
# End needs only these (the seed lists fewer required fields for it).
END_REQUIRED = ("MessageClass", "MessageCategory")


def parse_terminal_api_request(document: object) -> dict[str, Any]:
    """Check a SaleToPOIRequest admin request; returns its header and decoded session parts."""
    if not isinstance(document, dict) or not isinstance(document.get("SaleToPOIRequest"), dict):
        raise message_format("The body must be a JSON object with a SaleToPOIRequest object")
    where = unstorable_text(document)
    if where is not None:
        raise message_format(f"{where} {UNSTORABLE_TEXT}")
    request = document["SaleToPOIRequest"]
    header = request.get("MessageHeader")
    if not isinstance(header, dict):
        raise message_format("SaleToPOIRequest.MessageHeader is required")
    admin = request.get("AdminRequest")
    if not isinstance(admin, dict):
        raise message_format("SaleToPOIRequest.AdminRequest is required")
    service = _decode_service_identification(admin.get("ServiceIdentification"))
    session = service.get("Session")
    if not isinstance(session, dict):
        raise message_format("ServiceIdentification.Session is required")
    session_id = session.get("Id", session.get("ID"))
    if not isinstance(session_id, str) or not REQUEST_ID.fullmatch(session_id):
        raise message_format(
            "ServiceIdentification.Session.Id must be 1-64 printable characters without spaces"
        )
    session_type = session.get("Type")
    if session_type not in ("Begin", "End"):
        raise message_format("ServiceIdentification.Session.Type must be Begin or End")
    if session_type == "Begin":
        _check_header(header, required=(*BEGIN_HEADER, *ID_FIELDS))
        operations = _operations(service.get("Operation"))
    else:
        _check_header(header, required=END_REQUIRED)
        operations = []
    return {
        "header": header,
        "sessionId": session_id,
        "type": session_type,
        "operations": operations,
    }


def _check_header(header: dict[str, Any], *, required: tuple[str, ...]) -> None:
    for name in required:
        if header.get(name) in (None, ""):
            raise message_format(f"MessageHeader.{name} is required")
    for name, expected in BEGIN_HEADER.items():
        if name in header and header[name] != expected:
            raise message_format(f"MessageHeader.{name} must be {expected}")
    for name in ID_FIELDS:
        value = header.get(name)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 64):
            raise message_format(f"MessageHeader.{name} must be a string of 1-64 characters")


def _decode_service_identification(value: object) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        raise message_format("AdminRequest.ServiceIdentification is required (Base64 JSON)")
    if len(value) > 16_384:
        raise message_format("AdminRequest.ServiceIdentification is too long")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise message_format("AdminRequest.ServiceIdentification is not valid Base64") from None
    try:
        decoded = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise message_format("AdminRequest.ServiceIdentification does not decode to JSON") from None
    if not isinstance(decoded, dict):
        raise message_format("AdminRequest.ServiceIdentification must decode to a JSON object")
    return decoded


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def _operations(value: object) -> list[dict[str, Any]]:
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise message_format("ServiceIdentification.Operation is required for Begin")
    if len(items) > len(OperationType.values):
        raise message_format("ServiceIdentification.Operation lists too many operations")
    out, seen = [], set()
    for i, op in enumerate(items):
        path = f"ServiceIdentification.Operation[{i}]"
        if not isinstance(op, dict):
            raise message_format(f"{path} must be an object")
        op_type = op.get("Type")
        if op_type not in OperationType.values:
            raise message_format(f"{path}.Type must be one of {', '.join(OperationType.values)}")
        if op_type in seen:
            raise message_format(f"{path}.Type {op_type} is listed twice")
        seen.add(op_type)
        if op.get("Variant") != "WaitingScreen":
            raise message_format(f"{path}.Variant must be WaitingScreen")
        ui = op.get("UserInterfaceData")
        timeout = ui.get("WaitingScreenTimeoutMs") if isinstance(ui, dict) else None
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise message_format(
                f"{path}.UserInterfaceData.WaitingScreenTimeoutMs must be a positive integer"
            )
        if timeout > MAX_WAITING_SCREEN_MS:
            raise message_format(
                f"{path}.UserInterfaceData.WaitingScreenTimeoutMs must be at most "
                f"{MAX_WAITING_SCREEN_MS}"
            )
        out.append({"type": op_type, "variant": "WaitingScreen", "waitingScreenTimeoutMs": timeout})
    return out


# --- Answers ---------------------------------------------------------------------------------


def _response(
    header: dict[str, Any], result: str, condition: str = "", text: str = ""
) -> dict[str, Any]:
    response: dict[str, Any] = {"Result": result}
    if result != "Success":
        response["ErrorCondition"] = condition
        response["AdditionalResponse"] = text
    return {
        "SaleToPOIResponse": {
            "MessageHeader": {**header, "MessageType": "Response"},
            "AdminResponse": {"Response": response},
        }
    }


def failure_document(header: dict[str, Any], failure: TerminalApiFailure) -> dict[str, Any]:
    return _response(header, "Failure", failure.condition, failure.text)


def is_success(response: dict[str, Any]) -> bool:
    return response["SaleToPOIResponse"]["AdminResponse"]["Response"]["Result"] == "Success"


def _echo_header(document: object) -> dict[str, Any]:
    """The request's header as far as it is readable, to echo in a Failure."""
    request = document.get("SaleToPOIRequest") if isinstance(document, dict) else None
    header = request.get("MessageHeader") if isinstance(request, dict) else None
    if not isinstance(header, dict):
        return {}
    return {k: v for k, v in header.items() if isinstance(k, str) and isinstance(v, str)}


# --- Requests --------------------------------------------------------------------------------


def terminal_api_request(
    *, desktop: Device, document: object, outbox: Outbox
) -> tuple[dict[str, Any], TerminalSession | None]:
    """Handle one Terminal API admin request; returns the SaleToPOIResponse and the session.

    A successful answer is kept on the session (``last_response``).
    """
    try:
        parsed = parse_terminal_api_request(document)
        header = parsed["header"]
        if parsed["type"] == "Begin":
            session = services.session_begin(
                desktop=desktop,
                poi_id=header["POIID"],
                session_id=parsed["sessionId"],
                operations=parsed["operations"],
                sale_id=header.get("SaleID", ""),
                service_id=header.get("ServiceID", ""),
                outbox=outbox,
            )
        else:
            session = services.session_end(
                desktop=desktop,
                session_id=parsed["sessionId"],
                poi_id=header.get("POIID"),
                outbox=outbox,
            )
    except (TerminalApiFailure, SessionRefused) as exc:
        failure = (
            exc if isinstance(exc, TerminalApiFailure) else TerminalApiFailure(exc.reason, exc.text)
        )
        logger.info("terminal api request refused: %s %s", failure.condition, failure.text)
        return failure_document(_echo_header(document), failure), None
    response = _response(header, "Success")
    services.session_keep_response(session_pk=session.pk, response=response)
    return response, session
