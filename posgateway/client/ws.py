"""Async client for the gateway's WebSocket protocol (``/ws/``), built on ``websockets``.

    async with GatewayClient("ws://127.0.0.1:8000/ws/", key) as pos:
        terminals = await pos.get_terminals()
        await pos.pay("TERM-001", transaction_id="TXN-1", amount="12.50", currency="EUR")
        result = await pos.wait_result("TXN-1")      # acknowledged for you
        print(result.status, result.authorization_code)
        await pos.refund("TERM-001", transaction_id="RFD-1", original_transaction_id="TXN-1",
                         amount="2.50", reason="damaged item")
        refunded = await pos.wait_result("RFD-1")    # refundComplete, acknowledged too

A reader task collects every frame; the request methods wait for the frame that answers them
and leave the others (pushes such as ``terminalStatusUpdate``) for :meth:`next_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

Frame = dict[str, Any]

# A final result, pushed with a seq and acknowledged alike: a payment's and a refund's.
RESULT_ACTIONS = ("paymentComplete", "refundComplete")


def _result_response(frame: Frame) -> Frame:
    """The terminal's answer in a result frame: ``paymentResponse`` or ``refundResponse``."""
    return frame.get("paymentResponse") or frame.get("refundResponse") or {}


def _given(frame: Frame, **optional: Any) -> Frame:
    """``frame`` and, in their order, the ``optional`` entries that are not None."""
    return {**frame, **{key: value for key, value in optional.items() if value is not None}}


class GatewayError(Exception):
    """An error frame from the gateway: ``{"error": reason, "message": text, ...}``."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"{frame.get('error')}: {frame.get('message')}")
        self.frame = frame
        self.error: str = frame.get("error", "")
        self.message: str = frame.get("message", "")


@dataclass
class PaymentResult:
    """A ``paymentComplete`` or a ``refundComplete``; a refund's also names its payment."""

    transaction_id: str
    status: str
    authorization_code: str | None
    error_message: str | None
    late: bool
    seq: int | None
    response: Frame = field(repr=False)
    original_transaction_id: str | None = None

    @property
    def is_refund(self) -> bool:
        return self.original_transaction_id is not None

    @classmethod
    def from_frame(cls, frame: Frame) -> PaymentResult:
        response = _result_response(frame)
        return cls(
            transaction_id=response.get("transactionId") or frame.get("transactionId", ""),
            status=response.get("status", ""),
            authorization_code=response.get("authorizationCode"),
            error_message=response.get("errorMessage"),
            late=bool(frame.get("late")),
            seq=frame.get("seq"),
            response=response,
            original_transaction_id=response.get("originalTransactionId"),
        )


class GatewayClient:
    """One device's connection to the gateway (desktop or terminal, as its key says)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        heartbeat_interval: float | None = 30.0,
        auto_ack: bool = True,
        open_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.ssl_context = ssl_context  # for wss:// with a private CA; None: the system's
        self.key = key
        self.heartbeat_interval = heartbeat_interval
        self.auto_ack = auto_ack
        self.open_timeout = open_timeout
        self.connected: Frame | None = None
        self._ws: websockets.ClientConnection | None = None
        self._frames: list[Frame] = []
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closed: BaseException | None = None

    # --- Connection --------------------------------------------------------------------------

    async def connect(self) -> Frame:
        """Open the socket and return the gateway's ``connected`` frame."""
        self._frames.clear()
        self._closed = None
        self._ws = await websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.key}"},
            open_timeout=self.open_timeout,
            max_size=None,
            **({"ssl": self.ssl_context} if self.ssl_context is not None else {}),
        )
        self._tasks = [asyncio.create_task(self._read())]
        if self.heartbeat_interval:
            self._tasks.append(asyncio.create_task(self._heartbeat()))
        self.connected = await self.wait_for("connected", timeout=self.open_timeout)
        return self.connected

    async def close(self, code: int = 1000) -> None:
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            await self._ws.close(code)
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []

    def abort(self) -> None:
        """Drop the TCP connection without a close frame, as a network failure does."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def __aenter__(self) -> GatewayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connection_id(self) -> str | None:
        return (self.connected or {}).get("connectionId")

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._closed is None

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    continue
                self._frames.append(json.loads(raw))
                self._arrived.set()
        except websockets.ConnectionClosed as exc:
            self._closed = exc
        except Exception as exc:  # pragma: no cover - surfaced to waiters
            self._closed = exc
        finally:
            if self._closed is None:
                self._closed = ConnectionError("connection closed")
            self._arrived.set()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval or 30)
            with contextlib.suppress(Exception):
                await self.send({"action": "ping"})

    # --- Frames ------------------------------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(json.dumps(frame))

    async def wait_for(
        self,
        action: str | None = None,
        *,
        timeout: float = 30.0,
        where: Callable[[Frame], bool] | None = None,
        errors_for: str | None = None,
    ) -> Frame:
        """The first frame with this action (and matching ``where``), taken out of the backlog.

        An error frame whose ``requestAction`` is ``errors_for`` raises :class:`GatewayError`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, frame in enumerate(self._frames):
                if (
                    errors_for
                    and "error" in frame
                    and frame.get("requestAction") == errors_for
                    and (where is None or where(frame))
                ):
                    del self._frames[index]
                    raise GatewayError(frame)
                if action is not None and frame.get("action") != action:
                    continue
                if action is None and "action" not in frame and "error" not in frame:
                    continue
                if where is not None and not where(frame):
                    continue
                del self._frames[index]
                return frame
            if self._closed is not None:
                raise ConnectionError(f"connection closed: {self._closed}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {action or 'frame'} within {timeout} s")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def next_frame(self, timeout: float = 30.0) -> Frame:
        """The oldest frame not yet taken (pushes, errors, anything)."""
        return await self.wait_for(None, timeout=timeout)

    async def _request(self, frame: Frame, expect: str | tuple[str, ...], timeout: float) -> Frame:
        await self.send(frame)
        expected = (expect,) if isinstance(expect, str) else expect
        tid = (
            frame.get("transactionId")
            or (frame.get("paymentRequest") or {}).get("transactionId")
            or (frame.get("refundRequest") or {}).get("transactionId")
        )

        def answers(f: Frame) -> bool:
            if "error" in f:
                return f.get("requestAction") == frame["action"] and (
                    tid is None or f.get("transactionId") in (None, tid)
                )
            return f.get("action") in expected and (
                tid is None or f.get("transactionId") in (None, tid)
            )

        found = await self.wait_for(None, timeout=timeout, where=answers)
        if "error" in found:
            raise GatewayError(found)
        return found

    # --- Any device ----------------------------------------------------------------------------

    async def ping(self, timeout: float = 10.0) -> Frame:
        return await self._request({"action": "ping"}, "pong", timeout)

    # --- Desktop (POS) -------------------------------------------------------------------------

    async def get_terminals(self, timeout: float = 10.0) -> list[Frame]:
        return (await self._request({"action": "getTerminals"}, "terminalsResponse", timeout))[
            "terminals"
        ]

    async def pay(
        self,
        terminal_id: str,
        *,
        transaction_id: str,
        amount: str,
        currency: str,
        payment_method: str = "CARD",
        products: list[Frame] | None = None,
        customer_info: Frame | None = None,
        metadata: Frame | None = None,
        timeout: float = 10.0,
    ) -> Frame:
        """Start a payment; returns ``paymentAccepted`` (or, for a finished id, its result)."""
        request = {
            "transactionId": transaction_id,
            "amount": amount,
            "currency": currency,
            "paymentMethod": payment_method,
            "products": products or [],
            "customerInfo": customer_info or {},
            "metadata": metadata or {},
        }
        return await self._request(
            {"action": "payment", "terminalId": terminal_id, "paymentRequest": request},
            ("paymentAccepted", "paymentComplete"),
            timeout,
        )

    async def refund(
        self,
        terminal_id: str,
        *,
        transaction_id: str,
        original_transaction_id: str,
        amount: str | None = None,
        currency: str | None = None,
        reason: str | None = None,
        timeout: float = 10.0,
    ) -> Frame:
        """Refund (part of) a successful payment on a terminal of the store, under a new
        ``transaction_id``; without ``amount``, all that is left of the payment. Returns
        ``refundAccepted`` (or, for a finished id, its ``refundComplete``); the result arrives
        as ``refundComplete``, which :meth:`wait_result` waits for like a payment's."""
        request = _given(
            {"transactionId": transaction_id, "originalTransactionId": original_transaction_id},
            amount=amount,
            currency=currency,
            reason=reason,
        )
        return await self._request(
            {"action": "refund", "terminalId": terminal_id, "refundRequest": request},
            ("refundAccepted", "refundComplete"),
            timeout,
        )

    async def wait_result(self, transaction_id: str, timeout: float = 180.0) -> PaymentResult:
        """Wait for the transaction's ``paymentComplete`` (a refund's ``refundComplete``);
        acknowledges it unless auto_ack off."""
        frame = await self.wait_for(
            None,
            timeout=timeout,
            where=lambda f: (
                f.get("action") in RESULT_ACTIONS
                and (
                    _result_response(f).get("transactionId") == transaction_id
                    or f.get("transactionId") == transaction_id
                )
            ),
        )
        if self.auto_ack and isinstance(frame.get("seq"), int):
            await self.ack(frame["seq"])
        return PaymentResult.from_frame(frame)

    async def cancel(self, transaction_id: str, timeout: float = 10.0) -> Frame:
        return await self._request(
            {"action": "cancelPayment", "transactionId": transaction_id},
            ("cancelRequested", *RESULT_ACTIONS),
            timeout,
        )

    async def status(self, transaction_id: str, timeout: float = 10.0) -> Frame:
        return await self._request(
            {"action": "getTransactionStatus", "transactionId": transaction_id},
            "transactionStatus",
            timeout,
        )

    async def ack(self, seq: int) -> None:
        await self.send({"action": "ack", "seq": seq})

    async def display(
        self,
        terminal_id: str,
        *,
        lines: list[str] | None = None,
        cart: Frame | None = None,
        duration_ms: int | None = None,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Frame:
        """Show lines (and a cart) on a terminal; returns ``displayAccepted``."""
        body = _given({}, lines=lines, cart=cart, durationMs=duration_ms, requestId=request_id)
        return await self._request(
            {"action": "display", "terminalId": terminal_id, "displayRequest": body},
            "displayAccepted",
            timeout,
        )

    async def ask(
        self,
        terminal_id: str,
        *,
        input_type: str,
        prompt: str,
        options: list[Any] | None = None,
        max_input_time_ms: int | None = None,
        request_id: str | None = None,
        timeout: float = 10.0,
    ) -> Frame:
        """Ask the customer for input (confirmation, text, number, email, phone, menu,
        signature); returns ``inputAccepted``; the answer arrives as ``inputComplete``."""
        body = _given(
            {"type": input_type, "prompt": prompt},
            options=options,
            maxInputTimeMs=max_input_time_ms,
            requestId=request_id,
        )
        return await self._request(
            {"action": "input", "terminalId": terminal_id, "inputRequest": body},
            "inputAccepted",
            timeout,
        )

    async def wait_request_result(self, request_id: str, timeout: float = 660.0) -> Frame:
        """The ``displayComplete`` or ``inputComplete`` of a request."""
        return await self.wait_for(
            None,
            timeout=timeout,
            where=lambda f: (
                f.get("action") in ("displayComplete", "inputComplete")
                and f.get("requestId") == request_id
            ),
        )

    async def terminal_api(self, document: Frame, timeout: float = 10.0) -> Frame:
        """Send a Terminal API document (SaleToPOIRequest) over the socket; returns the
        ``terminalApiResponse`` frame."""
        await self.send({"action": "terminalApi", **document})
        return await self.wait_for("terminalApiResponse", timeout=timeout)

    # --- Terminal ----------------------------------------------------------------------------

    async def next_payment_request(self, timeout: float = 3600.0) -> Frame:
        return await self.wait_for("paymentRequest", timeout=timeout)

    async def next_refund_request(self, timeout: float = 3600.0) -> Frame:
        return await self.wait_for("refundRequest", timeout=timeout)

    async def answer_display(self, request_id: str, status: str = "SUCCESS") -> None:
        await self.send(
            {
                "action": "displayResponse",
                "displayResponse": {"requestId": request_id, "status": status},
            }
        )

    async def answer_input(
        self, request_id: str, status: str = "SUCCESS", value: Any = None
    ) -> None:
        response = _given({"requestId": request_id, "status": status}, value=value)
        await self.send({"action": "inputResponse", "inputResponse": response})

    async def respond(
        self,
        transaction_id: str,
        status: str,
        *,
        authorization_code: str | None = None,
        error_message: str | None = None,
        **extra: Any,
    ) -> None:
        """Report a payment's result (SUCCESS, DECLINED, FAILED or CANCELLED)."""
        await self.send(
            {
                "action": "paymentResponse",
                "paymentResponse": {
                    "transactionId": transaction_id,
                    "status": status,
                    "authorizationCode": authorization_code,
                    "errorMessage": error_message,
                    **extra,
                },
            }
        )

    async def respond_refund(
        self,
        transaction_id: str,
        status: str,
        *,
        authorization_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Report a refund's result (SUCCESS, DECLINED, FAILED or CANCELLED)."""
        await self.send(
            {
                "action": "refundResponse",
                "refundResponse": {
                    "transactionId": transaction_id,
                    "status": status,
                    "authorizationCode": authorization_code,
                    "errorMessage": error_message,
                },
            }
        )
