"""The wire protocol's envelope: timestamps, the error hierarchy and its one mapper.

Errors are ``{"error": <HTTP reason phrase>, "message": <text>}`` on the WebSocket and in
REST responses alike. The seed's texts are kept letter for letter (contract section 3):

    Bad Request            Invalid JSON in message body
    Bad Request            terminalId is required
    Bad Request            paymentRequest is required
    Not Found              Terminal connection not found
    Not Found              Connection not found
    Forbidden              Only desktop devices can request terminal list
    Forbidden              Cannot send message to connection in different group
    Internal Server Error  Failed to process message
"""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus
from typing import Any

INVALID_JSON = "Invalid JSON in message body"
TERMINAL_ID_REQUIRED = "terminalId is required"
PAYMENT_REQUEST_REQUIRED = "paymentRequest is required"
TERMINAL_NOT_FOUND = "Terminal connection not found"
CONNECTION_NOT_FOUND = "Connection not found"
ONLY_DESKTOP_TERMINAL_LIST = "Only desktop devices can request terminal list"
DIFFERENT_GROUP = "Cannot send message to connection in different group"
FAILED_TO_PROCESS = "Failed to process message"
UNAUTHORIZED = "A valid API key is required"
TRANSACTION_NOT_FOUND = "Transaction not found"
TERMINAL_BUSY = "Terminal is busy"
TRANSACTION_ID_REUSED = "transactionId already used with different details"
BINARY_NOT_SUPPORTED = "Binary frames are not supported"


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and Z, as every timestamp on the wire."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso(dt.datetime.now(dt.UTC))


class ProtocolError(Exception):
    """An error the client caused or must be told about, in the protocol's own form."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = {k: v for k, v in extra.items() if v is not None}

    @property
    def reason(self) -> str:
        return self.status.phrase

    def to_frame(self) -> dict[str, Any]:
        return {"error": self.reason, "message": self.message, **self.extra}


class BadRequest(ProtocolError):
    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ProtocolError):
    status = HTTPStatus.UNAUTHORIZED


class Forbidden(ProtocolError):
    status = HTTPStatus.FORBIDDEN


class NotFound(ProtocolError):
    status = HTTPStatus.NOT_FOUND


class Conflict(ProtocolError):
    status = HTTPStatus.CONFLICT


class PayloadTooLarge(ProtocolError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    @property
    def reason(self) -> str:
        return "Payload Too Large"


class TooManyRequests(ProtocolError):
    status = HTTPStatus.TOO_MANY_REQUESTS


class InternalError(ProtocolError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str = FAILED_TO_PROCESS, **extra: Any) -> None:
        super().__init__(message, **extra)


def error_frame(exc: BaseException, **context: Any) -> dict[str, Any]:
    """Map any exception to an error frame; unknown ones never leak their text."""
    if not isinstance(exc, ProtocolError):
        exc = InternalError()
    frame = exc.to_frame()
    for key, value in context.items():
        if value is not None:
            frame.setdefault(key, value)
    return frame
