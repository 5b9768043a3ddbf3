"""A typed client for the gateway's Terminal API (nexo admin requests for sessions).

    api = TerminalApiClient("http://127.0.0.1:8000", desktop_key, sale_id="POS-001")
    api.begin_session(poi_id="TERM-001", session_id="table-12",
                      operations=[Operation("Payment", 5000), Operation("InputRequest", 5000)])
    ...  # payments, display and input requests over the WebSocket show the waiting screen
    api.end_session(session_id="table-12")

Standard library only (urllib), so a POS can vendor it. Failures raise
:class:`TerminalApiError` carrying the nexo ``ErrorCondition`` and ``AdditionalResponse``.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]


class TerminalApiError(Exception):
    def __init__(self, condition: str, text: str, response: Document | None = None) -> None:
        super().__init__(f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.response = response


@dataclass(frozen=True)
class Operation:
    """After which requests the terminal shows the waiting screen, and for how long."""

    type: str  # "Payment", "InputRequest" or "DisplayRequest"
    timeout_ms: int
    variant: str = "WaitingScreen"

    def to_nexo(self) -> Document:
        return {
            "Type": self.type,
            "Variant": self.variant,
            "UserInterfaceData": {"WaitingScreenTimeoutMs": self.timeout_ms},
        }


def service_identification(payload: Document) -> str:
    """Base64 of the JSON ServiceIdentification, as the Terminal API expects it."""
    return base64.b64encode(json.dumps(payload).encode("utf-8")).decode("ascii")


def admin_request(
    *,
    sale_id: str,
    poi_id: str | None,
    service_id: str,
    session_id: str,
    session_type: str,
    operations: list[Operation] | None = None,
) -> Document:
    """Build the SaleToPOIRequest document of a session Begin or End."""
    identification: Document = {"Session": {"Id": session_id, "Type": session_type}}
    if operations:
        identification["Operation"] = [op.to_nexo() for op in operations]
    header: Document = {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": "Admin",
        "MessageType": "Request",
        "ServiceID": service_id,
        "SaleID": sale_id,
    }
    if poi_id:
        header["POIID"] = poi_id
    return {
        "SaleToPOIRequest": {
            "MessageHeader": header,
            "AdminRequest": {"ServiceIdentification": service_identification(identification)},
        }
    }


def raise_for_failure(response: Document) -> Document:
    """Return a Success response; raise TerminalApiError for a Failure."""
    result = response["SaleToPOIResponse"]["AdminResponse"]["Response"]
    if result.get("Result") != "Success":
        raise TerminalApiError(
            result.get("ErrorCondition", ""), result.get("AdditionalResponse", ""), response
        )
    return response


class TerminalApiClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        sale_id: str = "POS",
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.sale_id = sale_id
        self.timeout = timeout
        self.ssl_context = ssl_context

    def send(self, document: Document, *, asynchronous: bool = False) -> Document | str:
        """POST a document to /terminal-api/sync (the response) or /async (``"ok"``)."""
        path = "/terminal-api/async" if asynchronous else "/terminal-api/sync"
        request = urllib.request.Request(  # noqa: S310 (the operator's own gateway URL)
            self.base_url + path,
            data=json.dumps(document).encode("utf-8"),
            headers={"x-api-key": self.key, "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.timeout, context=self.ssl_context
            ) as response:
                body = response.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise TerminalApiError(f"HTTP {exc.code}", detail) from None
        if body == "ok":
            return body
        return json.loads(body)

    def _session(
        self,
        session_type: str,
        *,
        session_id: str,
        poi_id: str | None,
        operations: list[Operation] | None,
        service_id: str | None,
        asynchronous: bool,
    ) -> Document | str:
        document = admin_request(
            sale_id=self.sale_id,
            poi_id=poi_id,
            service_id=service_id or uuid.uuid4().hex[:10],
            session_id=session_id,
            session_type=session_type,
            operations=operations,
        )
        response = self.send(document, asynchronous=asynchronous)
        return response if isinstance(response, str) else raise_for_failure(response)

    def begin_session(
        self,
        *,
        poi_id: str,
        session_id: str,
        operations: list[Operation],
        service_id: str | None = None,
        asynchronous: bool = False,
    ) -> Document | str:
        return self._session(
            "Begin",
            session_id=session_id,
            poi_id=poi_id,
            operations=operations,
            service_id=service_id,
            asynchronous=asynchronous,
        )

    def end_session(
        self,
        *,
        session_id: str,
        poi_id: str | None = None,
        service_id: str | None = None,
        asynchronous: bool = False,
    ) -> Document | str:
        return self._session(
            "End",
            session_id=session_id,
            poi_id=poi_id,
            operations=None,
            service_id=service_id,
            asynchronous=asynchronous,
        )
