"""Nexo payment messages (contract section 10) translated to and from the payments services.

    PaymentRequest           -> payments.services.payment_start (transactionId =
                                SaleData.SaleTransactionID.TransactionID)
    ReversalRequest          -> payments.services.refund_start of
                                OriginalPOITransaction.POITransactionID.TransactionID
    TransactionStatusRequest -> the stored outcome of the message named by MessageReference
    AbortRequest             -> payments.services.payment_cancel of that message's payment

Idempotency on (SaleID, ServiceID, POIID) and the rows are the domain's
(``sessions.services.terminal_api_payment``); this module only reads documents and writes
answers. Answers leave with their ``ErrorCondition``:

    SUCCESS                     Success
    DECLINED                    Failure Refusal
    CANCELLED after an Abort    Failure Aborted
    CANCELLED                   Failure Cancel
    FAILED                      Failure UnavailableService
    TIMEOUT                     Failure UnreachableHost (no answer from the terminal in time)
    terminal busy               Failure Busy
    terminal not connected      Failure UnreachableHost
    unknown POIID / message /   Failure NotFound
      original payment
    transactionId reused, a     Failure NotAllowed
      refund of a payment that
      did not succeed, over the
      refundable amount
    a malformed document        Failure MessageFormat
    status of one in flight     Failure InProgress

Amounts are JSON numbers: bodies are read with :func:`loads` (numbers with a fraction or an
exponent become ``Decimal``, never a float) and answers written with :func:`dumps`, which
writes a ``Decimal`` as the number it is (``10.99``, never ``10.990000000000001``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.utils import timezone

from payments.models import Transaction, TransactionStatus
from payments.validation import format_amount
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    REFUND_EXCEEDS_REFUNDABLE,
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    TRANSACTION_NOT_FOUND,
    BadRequest,
)
from sessions import services
from sessions.models import TerminalApiMessage
from terminals.models import Device
from terminals.selectors import resolve_terminal

CATEGORIES = {
    "Payment": "PaymentRequest",
    "Reversal": "ReversalRequest",
    "TransactionStatus": "TransactionStatusRequest",
    "Abort": "AbortRequest",
}
MAX_SERVICE_ID = 10
_ID = re.compile(r"[!-~]{1,64}")


class NexoFailure(Exception):
    """A request answered at once with ``Result: Failure`` and this ErrorCondition."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


def _format(text: str) -> NexoFailure:
    return NexoFailure("MessageFormat", text)


# --- Exact JSON ------------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def loads(text: str | bytes) -> Any:
    """A Terminal API body: numbers with a fraction or exponent as ``Decimal``; NaN and
    Infinity refused (ValueError)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def dumps(document: Any) -> str:
    """``document`` as JSON, each ``Decimal`` written as the number it is."""
    numbers: dict[str, str] = {}
    nonce = secrets.token_hex(8)

    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            token = f"{nonce}:{len(numbers)}"
            numbers[token] = f"{value:f}"
            return token
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(document), separators=(",", ":"), ensure_ascii=False)
    for token, number in numbers.items():
        text = text.replace(f'"{token}"', number, 1)
    return text


# --- Reading requests ------------------------------------------------------------------------


def category_of(document: object) -> str | None:
    """The MessageCategory of a SaleToPOIRequest when it is one this module answers."""
    request = document.get("SaleToPOIRequest") if isinstance(document, dict) else None
    header = request.get("MessageHeader") if isinstance(request, dict) else None
    category = header.get("MessageCategory") if isinstance(header, dict) else None
    # Any JSON value may be there (a list is not even hashable).
    return category if isinstance(category, str) and category in CATEGORIES else None


@dataclass(frozen=True)
class Header:
    category: str
    sale_id: str
    service_id: str
    poi_id: str

    def document(self, category: str | None = None) -> dict[str, Any]:
        return {
            "ProtocolVersion": "3.0",
            "MessageClass": "Service",
            "MessageCategory": category or self.category,
            "MessageType": "Response",
            "ServiceID": self.service_id,
            "SaleID": self.sale_id,
            "POIID": self.poi_id,
        }


def _header(request: dict[str, Any]) -> Header:
    header = request.get("MessageHeader")
    if not isinstance(header, dict):
        raise _format("SaleToPOIRequest.MessageHeader is required")
    for name, expected in (
        ("ProtocolVersion", "3.0"),
        ("MessageClass", "Service"),
        ("MessageType", "Request"),
    ):
        if header.get(name) in (None, ""):
            raise _format(f"MessageHeader.{name} is required")
        if header[name] != expected:
            raise _format(f"MessageHeader.{name} must be {expected}")
    ids = {}
    for name, limit in (("SaleID", 64), ("ServiceID", MAX_SERVICE_ID), ("POIID", 64)):
        value = header.get(name)
        if value in (None, ""):
            raise _format(f"MessageHeader.{name} is required")
        if not isinstance(value, str) or len(value) > limit or not _ID.fullmatch(value):
            raise _format(
                f"MessageHeader.{name} must be 1-{limit} printable ASCII characters without spaces"
            )
        ids[name] = value
    return Header(header["MessageCategory"], ids["SaleID"], ids["ServiceID"], ids["POIID"])


def _object(parent: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise _format(f"{path}.{name} is required (an object)")
    return value


def _string(parent: dict[str, Any], name: str, path: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise _format(f"{path}.{name} must be 1-64 printable ASCII characters without spaces")
    return value


def _amount(value: object, path: str) -> str:
    """A nexo amount (a JSON number) as the decimal string payments.validation reads."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _format(f"{path} must be a JSON number such as 10.99")
    number = Decimal(value)
    if not number.is_finite() or number <= 0:
        raise _format(f"{path} must be greater than zero")
    return f"{number:f}"


def _payment_request(body: dict[str, Any]) -> dict[str, Any]:
    path = "PaymentRequest"
    sale = _object(body, "SaleData", path)
    sale_tid = _object(sale, "SaleTransactionID", f"{path}.SaleData")
    tid = _string(sale_tid, "TransactionID", f"{path}.SaleData.SaleTransactionID")
    txn = _object(body, "PaymentTransaction", path)
    amounts = _object(txn, "AmountsReq", f"{path}.PaymentTransaction")
    where = f"{path}.PaymentTransaction.AmountsReq"
    currency = amounts.get("Currency")
    if not isinstance(currency, str):
        raise _format(f"{where}.Currency is required")
    return {
        "transactionId": tid,
        "amount": _amount(amounts.get("RequestedAmount"), f"{where}.RequestedAmount"),
        "currency": currency,
    }


def _reversal_request(body: dict[str, Any], header: Header) -> dict[str, Any]:
    path = "ReversalRequest"
    original = _object(body, "OriginalPOITransaction", path)
    poi_tid = _object(original, "POITransactionID", f"{path}.OriginalPOITransaction")
    original_tid = _string(
        poi_tid, "TransactionID", f"{path}.OriginalPOITransaction.POITransactionID"
    )
    tid = None
    sale = body.get("SaleData")
    if isinstance(sale, dict) and isinstance(sale.get("SaleTransactionID"), dict):
        tid = _string(
            sale["SaleTransactionID"], "TransactionID", f"{path}.SaleData.SaleTransactionID"
        )
    if tid is None:
        # No id of the POS's own: one derived from the message's key, the same on a retry.
        key = f"{header.sale_id}\n{header.service_id}\n{header.poi_id}".encode()
        tid = "reversal-" + hashlib.sha256(key).hexdigest()[:24]
    reversed_amount = body.get("ReversedAmount")
    return {
        "transactionId": tid,
        "originalTransactionId": original_tid,
        "amount": (
            None if reversed_amount is None else _amount(reversed_amount, f"{path}.ReversedAmount")
        ),
        "currency": None,
        "reason": str(body.get("ReversalReason") or "")[:200],
    }


def _reference(body: dict[str, Any], path: str, header: Header) -> tuple[str, str, str]:
    ref = _object(body, "MessageReference", path)
    where = f"{path}.MessageReference"
    sale_id = ref.get("SaleID", header.sale_id)
    service_id = ref.get("ServiceID")
    poi_id = ref.get("POIID", header.poi_id)
    for name, value, limit in (
        ("SaleID", sale_id, 64),
        ("ServiceID", service_id, MAX_SERVICE_ID),
        ("POIID", poi_id, 64),
    ):
        if not isinstance(value, str) or len(value) > limit or not _ID.fullmatch(value):
            raise _format(f"{where}.{name} must be 1-{limit} printable ASCII characters")
    category = ref.get("MessageCategory")
    if category is not None and category not in ("Payment", "Reversal"):
        raise _format(f"{where}.MessageCategory must be Payment or Reversal")
    return str(sale_id), str(service_id), str(poi_id)


# --- Answers ---------------------------------------------------------------------------------


def _iso(moment: dt.datetime | None) -> str:
    moment = moment or timezone.now()
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _response(result: str, condition: str = "", **additional: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"Result": result}
    if condition:
        response["ErrorCondition"] = condition
    shown = {k: v for k, v in additional.items() if v not in (None, "")}
    if shown:
        response["AdditionalResponse"] = urlencode(shown)
    return response


def _condition(txn: Transaction, aborted: bool) -> str:
    return {
        TransactionStatus.SUCCESS: "",
        TransactionStatus.DECLINED: "Refusal",
        TransactionStatus.CANCELLED: "Aborted" if aborted else "Cancel",
        TransactionStatus.FAILED: "UnavailableService",
        TransactionStatus.TIMEOUT: "UnreachableHost",
    }[TransactionStatus(txn.status)]


def _failure_condition(failure: dict[str, Any]) -> str:
    message = failure.get("message")
    if message == TERMINAL_BUSY:
        return "Busy"
    if message == TERMINAL_NOT_FOUND:
        return "UnreachableHost"  # the terminal exists (checked first): it is not connected
    if message == TRANSACTION_NOT_FOUND or failure.get("error") == "Not Found":
        return "NotFound"
    if failure.get("error") == "Conflict":
        return "NotAllowed"
    return "UnavailableService"


def _transaction_id(tid: str, moment: dt.datetime | None) -> dict[str, Any]:
    return {"TransactionID": tid, "TimeStamp": _iso(moment)}


def _body_for_transaction(
    message: TerminalApiMessage, txn: Transaction
) -> tuple[str, dict[str, Any]]:
    """(the response body's name, the body) of a finished transaction."""
    condition = _condition(txn, message.aborted)
    answer = txn.payment_response or {}
    extra = {
        "transactionId": txn.transaction_id,
        "status": txn.status,
        "authCode": txn.authorization_code,
        "message": answer.get("errorMessage") or txn.error_message,
    }
    response = _response("Failure" if condition else "Success", condition, **extra)
    poi = {"POITransactionID": _transaction_id(txn.transaction_id, txn.created_at)}
    if txn.is_refund:
        assert txn.original is not None
        body: dict[str, Any] = {
            "Response": response,
            "POIData": poi,
            "OriginalPOITransaction": {
                "POITransactionID": _transaction_id(
                    txn.original.transaction_id, txn.original.created_at
                )
            },
        }
        if not condition:
            body["ReversedAmount"] = Decimal(format_amount(txn.amount, txn.currency))
        return "ReversalResponse", body
    body = {
        "Response": response,
        "SaleData": {"SaleTransactionID": _transaction_id(txn.transaction_id, txn.created_at)},
        "POIData": poi,
    }
    if not condition:
        body["PaymentResult"] = {
            "AmountsResp": {
                "Currency": txn.currency,
                "AuthorizedAmount": Decimal(format_amount(txn.amount, txn.currency)),
            },
            "PaymentAcquirerData": {
                "AcquirerPOIID": message.poi_id,
                "MerchantID": message.group.slug,
                "ApprovalCode": txn.authorization_code,
            },
        }
    return "PaymentResponse", body


def _failure_body(category: str, condition: str, text: str, tid: str = "") -> dict[str, Any]:
    response = _response("Failure", condition, message=text)
    if category == "Reversal":
        return {"Response": response}
    body: dict[str, Any] = {"Response": response}
    if tid:
        body["SaleData"] = {"SaleTransactionID": _transaction_id(tid, None)}
        body["POIData"] = {"POITransactionID": _transaction_id(tid, None)}
    return body


def body_of(message: TerminalApiMessage) -> tuple[str, dict[str, Any]] | None:
    """(body name, body) of a message's outcome; None while its transaction is in flight."""
    name = f"{message.category}Response"
    if message.failure is not None:
        failure = message.failure
        return name, _failure_body(
            message.category,
            _failure_condition(failure),
            str(failure.get("message", "")),
            str(failure.get("transactionId", "")),
        )
    txn = message.transaction
    assert txn is not None
    if not txn.is_final:
        return None
    return _body_for_transaction(message, txn)


def _header_of(message: TerminalApiMessage) -> Header:
    return Header(message.category, message.sale_id, message.service_id, message.poi_id)


def response_of(message: TerminalApiMessage) -> dict[str, Any] | None:
    """The SaleToPOIResponse answering a message; None while it is in flight."""
    outcome = body_of(message)
    if outcome is None:
        return None
    name, body = outcome
    return {"SaleToPOIResponse": {"MessageHeader": _header_of(message).document(), name: body}}


def in_progress(message: TerminalApiMessage) -> dict[str, Any]:
    """The answer to a sync request given up on while its payment is still in flight."""
    body = _failure_body(
        message.category,
        "InProgress",
        "The terminal has not answered yet: ask with a TransactionStatusRequest",
        message.transaction.transaction_id if message.transaction else "",
    )
    return {
        "SaleToPOIResponse": {
            "MessageHeader": _header_of(message).document(),
            f"{message.category}Response": body,
        }
    }


def failure_document(header: dict[str, Any], category: str, failure: NexoFailure) -> dict[str, Any]:
    shown = {k: v for k, v in header.items() if isinstance(k, str) and isinstance(v, str)}
    shown["MessageType"] = "Response"
    body_name = "TransactionStatusResponse" if category == "TransactionStatus" else None
    if body_name is None:
        body_name = f"{category}Response"
    return {
        "SaleToPOIResponse": {
            "MessageHeader": shown,
            body_name: {"Response": _response("Failure", failure.condition, message=failure.text)},
        }
    }


# --- Requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a Terminal API payment message is answered: ``document`` now (``None`` with
    ``empty``: HTTP 200 with no body, as an AbortRequest is), or, ``message`` in flight, once
    its transaction (``group_id``, ``transaction_id``) finishes."""

    document: dict[str, Any] | None = None
    message: TerminalApiMessage | None = None
    empty: bool = False
    refused: bool = False  # a document refused as it is (MessageFormat, NotFound): nothing kept

    @property
    def waiting(self) -> bool:
        return self.document is None and not self.empty


def handle(
    *, desktop: Device, document: dict[str, Any], outbox: Outbox, desktop_connection_id: str = ""
) -> Answer:
    """Answer one Payment, Reversal, TransactionStatus or Abort request of ``desktop``."""
    request = document["SaleToPOIRequest"]
    raw_header = request.get("MessageHeader") or {}
    category = str(raw_header.get("MessageCategory"))
    try:
        header = _header(request)
        body = request.get(CATEGORIES[category])
        if not isinstance(body, dict):
            raise _format(
                f"SaleToPOIRequest.{CATEGORIES[category]} is required for MessageCategory "
                f"{category}"
            )
        others = [k for k in request if k.endswith("Request") and k != CATEGORIES[category]]
        if others:
            raise _format(f"SaleToPOIRequest.{others[0]} does not match MessageCategory {category}")
        if category in ("Payment", "Reversal"):
            return _start(desktop, header, body, outbox, desktop_connection_id)
        if category == "TransactionStatus":
            return Answer(_status(desktop, header, body))
        return _abort(desktop, header, body, outbox)
    except NexoFailure as failure:
        return Answer(failure_document(raw_header, category, failure), refused=True)


def _start(
    desktop: Device, header: Header, body: dict[str, Any], outbox: Outbox, connection_id: str
) -> Answer:
    if header.category == "Payment":
        request = _payment_request(body)
    else:
        request = _reversal_request(body, header)
    # An unknown POIID (or another store's) is refused before anything is kept.
    if resolve_terminal(
        group_id=desktop.group_id, terminal_id=header.poi_id, device_id_only=True
    ).error:
        raise NexoFailure("NotFound", f"No terminal with POIID {header.poi_id} in this store")
    try:
        message, _ = services.terminal_api_payment(
            desktop=desktop,
            sale_id=header.sale_id,
            service_id=header.service_id,
            poi_id=header.poi_id,
            category=header.category,
            request=request,
            outbox=outbox,
            desktop_connection_id=connection_id,
        )
    except BadRequest as exc:
        condition = "NotAllowed" if exc.message == REFUND_EXCEEDS_REFUNDABLE else "MessageFormat"
        text = exc.message
        if "refundableAmount" in exc.extra:
            text += f" (refundable: {exc.extra['refundableAmount']})"
        raise NexoFailure(condition, _nexo_paths(text)) from None
    return Answer(response_of(message), message)


def _nexo_paths(text: str) -> str:
    """Our field names in a services' message, as the POS wrote them."""
    return (
        text.replace("paymentRequest.amount", "AmountsReq.RequestedAmount")
        .replace("paymentRequest.currency", "AmountsReq.Currency")
        .replace("paymentRequest.transactionId", "SaleTransactionID.TransactionID")
        .replace("refundRequest.amount", "ReversalRequest.ReversedAmount")
    )


def _status(desktop: Device, header: Header, body: dict[str, Any]) -> dict[str, Any]:
    sale_id, service_id, poi_id = _reference(body, "TransactionStatusRequest", header)
    message = services.terminal_api_message(
        group_id=desktop.group_id, sale_id=sale_id, service_id=service_id, poi_id=poi_id
    )
    reference = {"SaleID": sale_id, "ServiceID": service_id, "POIID": poi_id}
    if message is None:
        response = _response("Failure", "NotFound", message="No such message in the last 48 h")
    else:
        reference["MessageCategory"] = message.category
        outcome = body_of(message)
        if outcome is None:
            response = _response("Failure", "InProgress", message="The terminal has not answered")
        else:
            name, repeated = outcome
            return {
                "SaleToPOIResponse": {
                    "MessageHeader": header.document(),
                    "TransactionStatusResponse": {
                        "Response": _response("Success"),
                        "MessageReference": reference,
                        "RepeatedMessageResponse": {
                            "MessageHeader": _header_of(message).document(),
                            "RepeatedResponseMessageBody": {name: repeated},
                        },
                    },
                }
            }
    return {
        "SaleToPOIResponse": {
            "MessageHeader": header.document(),
            "TransactionStatusResponse": {"Response": response, "MessageReference": reference},
        }
    }


def _abort(desktop: Device, header: Header, body: dict[str, Any], outbox: Outbox) -> Answer:
    sale_id, service_id, poi_id = _reference(body, "AbortRequest", header)
    message = services.terminal_api_message(
        group_id=desktop.group_id, sale_id=sale_id, service_id=service_id, poi_id=poi_id
    )
    if message is None:
        raise NexoFailure("NotFound", "No such message in the last 48 h")
    services.terminal_api_abort(message=message, outbox=outbox)
    return Answer(empty=True)


def reload(message_pk: int) -> TerminalApiMessage:
    return services.terminal_api_message_reload(pk=message_pk)


def pushed_responses(
    *,
    desktop: Device,
    message_pk: int | None = None,
    group_id: int | None = None,
    transaction_id: str | None = None,
) -> list[dict[str, Any]]:
    """The answers a desktop's socket is pushed (``terminalApiResponse``) for its message
    ``message_pk``, or for its newest message of a transaction that just finished."""
    if message_pk is not None:
        message = services.terminal_api_message_reload(pk=message_pk)
        messages = [message] if message.desktop_id == desktop.pk else []
    elif group_id == desktop.group_id and transaction_id is not None:
        messages = services.terminal_api_messages_of(
            desktop=desktop, group_id=group_id, transaction_id=transaction_id
        )[:1]
    else:
        messages = []
    return [doc for doc in map(response_of, messages) if doc is not None]
