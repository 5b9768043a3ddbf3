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

and the gateway's own, among them (issue 20):

    Service Unavailable    Database unavailable, try again shortly
"""

from __future__ import annotations

import datetime as dt
import json
import re
from http import HTTPStatus
from typing import Any, overload

from posgateway.core.health import is_database_outage

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
REFUND_REQUEST_REQUIRED = "refundRequest is required"
ONLY_SUCCESSFUL_PAYMENT_REFUNDABLE = "Only a successful payment can be refunded"
REFUND_EXCEEDS_REFUNDABLE = "amount exceeds the refundable amount"
REFUND_CURRENCY_MISMATCH = "currency does not match the original payment"
BINARY_NOT_SUPPORTED = "Binary frames are not supported"
UNSTORABLE_TEXT = "must not contain NUL characters or unpaired surrogates"
# The database is restarting, unreachable or locked: nothing was stored, the same frame may be
# sent again.
DATABASE_UNAVAILABLE = "Database unavailable, try again shortly"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@overload
def iso(value: dt.datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
@overload
def iso(value: dt.datetime | None) -> str | None: ...
def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and Z, as every timestamp on the wire."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return iso(dt.datetime.now(dt.UTC))


def unstorable_text(value: object) -> str | None:
    """Where a decoded JSON value holds a NUL or an unpaired surrogate, or None if nowhere.

    Both arrive only as ``\\u`` escapes (a frame's text is valid UTF-8, and JSON refuses raw
    control characters), and neither can be stored or looked up: PostgreSQL refuses NUL in
    text and jsonb, and no database driver encodes a lone surrogate to UTF-8 (I-JSON, RFC
    7493, forbids them). Returns the path of the string, or of the object whose key it is
    (``paymentRequest.metadata.note``); the caller refuses the whole message.
    """
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return path or "the message"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return f"{path} keys" if path else "the message's keys"
                stack.append((_child_path(path, key), child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def _child_path(path: str, key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}" if path else text
    shown = text if len(text) <= 64 else text[:61] + "..."
    return f"{path}[{json.dumps(shown)}]"


def reason_phrase(status: int) -> str:
    """The ``error`` of an error body: the status's reason phrase (413 as the protocol names it)."""
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        return "Payload Too Large"  # the protocol's (and RFC 9110's) name for 413
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, message: str, /, **extra: Any) -> dict[str, Any]:
    """``{"error": <reason phrase>, "message": <text>, ...}``: every error, on every interface."""
    return {"error": reason_phrase(status), "message": message, **extra}


class ProtocolError(Exception):
    """An error the client caused or must be told about, in the protocol's own form."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = {k: v for k, v in extra.items() if v is not None}

    def to_frame(self) -> dict[str, Any]:
        return error_body(self.status, self.message, **self.extra)


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


class TooManyRequests(ProtocolError):
    status = HTTPStatus.TOO_MANY_REQUESTS


class InternalError(ProtocolError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str = FAILED_TO_PROCESS, **extra: Any) -> None:
        super().__init__(message, **extra)


class ServiceUnavailable(ProtocolError):
    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str = DATABASE_UNAVAILABLE, **extra: Any) -> None:
        super().__init__(message, **extra)


def as_protocol_error(exc: BaseException) -> ProtocolError:
    """The protocol's error for any exception: a database outage is Service Unavailable
    (nothing was stored: a transaction is all or nothing), anything else unknown an internal
    error that never leaks its text."""
    if isinstance(exc, ProtocolError):
        return exc
    if is_database_outage(exc):
        return ServiceUnavailable()
    return InternalError()


def error_frame(exc: BaseException, **context: Any) -> dict[str, Any]:
    """Map any exception to an error frame; unknown ones never leak their text."""
    exc = as_protocol_error(exc)
    frame = exc.to_frame()
    for key, value in context.items():
        if value is not None:
            frame.setdefault(key, value)
    return frame
