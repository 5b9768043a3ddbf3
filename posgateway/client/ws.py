"""Async client for the gateway's WebSocket protocol (``/ws/``), built on ``websockets``.

    async with GatewayClient("ws://127.0.0.1:8000/ws/", key) as pos:
        terminals = await pos.get_terminals()
        await pos.pay("TERM-001", transaction_id="TXN-1", amount="12.50", currency="EUR")
        result = await pos.wait_result("TXN-1")      # acknowledged for you
        print(result.status, result.authorization_code)
        await pos.refund("TERM-001", transaction_id="RFD-1", original_transaction_id="TXN-1",
                         amount="2.50", reason="damaged item")
        refunded = await pos.wait_result("RFD-1")    # refundComplete, acknowledged too
        for other in pos.take_results():             # results nobody waited for
            print("also:", other)

A reader task collects every frame; the request methods wait for the frame that answers them
and leave the others (pushes such as ``terminalStatusUpdate``) for :meth:`next_frame`.

Results (``paymentComplete``, ``refundComplete``) take their own way, so none is lost: each
reaches the application once, through :meth:`wait_result` for a given transaction, or else
through ``on_result`` (a callback given to the client), :meth:`results` (an async iterator)
or :meth:`take_results`. The client acknowledges a seq only when the application has received
that result and every earlier one the gateway sent; the rest are re-sent on the next connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import websockets

Frame = dict[str, Any]

# A final result, pushed with a seq and acknowledged alike: a payment's and a refund's.
RESULT_ACTIONS = ("paymentComplete", "refundComplete")
# A transaction in one of these has its result stored (getTransactionStatus returns it).
FINAL_STATUSES = ("SUCCESS", "DECLINED", "FAILED", "CANCELLED", "TIMEOUT")
# How many transactions' results the client keeps for wait_result (the latest each).
HELD_RESULTS = 10_000

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _result_response(frame: Frame) -> Frame:
    """The terminal's answer in a result frame: ``paymentResponse`` or ``refundResponse``."""
    return frame.get("paymentResponse") or frame.get("refundResponse") or {}


def _is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _given(frame: Frame, **optional: Any) -> Frame:
    """``frame`` and, in their order, the ``optional`` entries that are not None."""
    return {**frame, **{key: value for key, value in optional.items() if value is not None}}


def _discard(table: dict[str, list[Any]], key: str, item: Any) -> None:
    items = table.get(key, [])
    if item in items:
        items.remove(item)
    if not items:
        table.pop(key, None)


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
    # The frame it came in: the result frame, or the transactionStatus it was read from.
    frame: Frame = field(default_factory=dict, repr=False)

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
            frame=frame,
        )

    @classmethod
    def from_status(cls, frame: Frame) -> PaymentResult:
        """The stored result in a ``transactionStatus`` of a finished transaction (no seq)."""
        response = _result_response(frame)
        return cls(
            transaction_id=frame.get("transactionId", ""),
            status=frame.get("status", ""),
            authorization_code=response.get("authorizationCode"),
            error_message=response.get("errorMessage"),
            late=bool(frame.get("late")),
            seq=None,
            response=response,
            original_transaction_id=frame.get("originalTransactionId"),
            frame=frame,
        )


ResultCallback = Callable[[PaymentResult], Awaitable[None] | None]


class GatewayClient:
    """One device's connection to the gateway (desktop or terminal, as its key says).

    ``on_result`` is called (awaited if it is a coroutine function) with each result nobody
    is waiting for with :meth:`wait_result`, in seq order; without it, take them with
    :meth:`results` or :meth:`take_results`. With ``auto_ack`` off the client acknowledges
    nothing: call :meth:`ack` yourself.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        heartbeat_interval: float | None = 30.0,
        auto_ack: bool = True,
        open_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        on_result: ResultCallback | None = None,
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
        self.on_result = on_result
        # Results, by seq: those that arrived and the application has not received yet; the
        # seqs it received that are not acknowledged yet; the highest seq that arrived; the
        # highest acknowledged (on this connection; ever).
        self._unreceived: dict[int, PaymentResult] = {}
        self._received: set[int] = set()
        self._top_seq = 0
        self._ack_sent = 0
        self._acked_ever = 0
        self._ack_wanted = asyncio.Event()
        # The latest result of each transaction the application received (for wait_result).
        self._held: OrderedDict[str, PaymentResult] = OrderedDict()
        # wait_result's waiters take a result; a request's (pay of a finished id) only peeks.
        self._waiters: dict[str, list[asyncio.Future[PaymentResult]]] = {}
        self._peekers: dict[str, list[asyncio.Future[PaymentResult]]] = {}
        self._callback_failed: set[int] = set()

    # --- Connection --------------------------------------------------------------------------

    async def connect(self) -> Frame:
        """Open the socket and return the gateway's ``connected`` frame."""
        self._frames.clear()
        self._closed = None
        self._ack_sent = 0  # acks are per connection: one lost with the last is sent again
        self._ws = await websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.key}"},
            open_timeout=self.open_timeout,
            max_size=None,
            **({"ssl": self.ssl_context} if self.ssl_context is not None else {}),
        )
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._acker())]
        if self.heartbeat_interval:
            self._tasks.append(asyncio.create_task(self._heartbeat()))
        if self.on_result is not None:
            self._tasks.append(asyncio.create_task(self._dispatch()))
        self.connected = await self.wait_for("connected", timeout=self.open_timeout)
        return self.connected

    async def close(self, code: int = 1000) -> None:
        with contextlib.suppress(Exception):
            await self._flush_ack()
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
                frame = json.loads(raw)
                if frame.get("action") in RESULT_ACTIONS and _is_seq(frame.get("seq")):
                    self._result_arrived(PaymentResult.from_frame(frame))
                else:
                    self._frames.append(frame)
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
        Results are not frames here: they come through :meth:`wait_result`, ``on_result``,
        :meth:`results` or :meth:`take_results`.
        """

        def take() -> Frame | None:
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
            return None

        return await self._until(take, timeout, f"no {action or 'frame'} within {timeout} s")

    async def _until(self, take: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait until ``take()`` (called again on each arrival) returns something."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = take()
            if found is not None:
                return found
            if self._closed is not None:
                raise ConnectionError(f"connection closed: {self._closed}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(what)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def next_frame(self, timeout: float = 30.0) -> Frame:
        """The oldest frame not yet taken (pushes, errors, anything)."""
        return await self.wait_for(None, timeout=timeout)

    async def _request(
        self,
        frame: Frame,
        expect: str | tuple[str, ...],
        timeout: float,
        *,
        or_result_of: str | None = None,
    ) -> Frame:
        """Send ``frame`` and return the frame that answers it (an error raises). With
        ``or_result_of``, a result of that transaction arriving first also answers (a payment
        or refund repeated once finished is answered with its stored result): it is then
        received by the application, as the method's return value."""
        await self._flush_ack()  # what the application received is acknowledged first
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

        peek: asyncio.Future[PaymentResult] | None = None
        if or_result_of is not None:
            peek = asyncio.get_running_loop().create_future()
            self._peekers.setdefault(or_result_of, []).append(peek)

        def take() -> Frame | PaymentResult | None:
            for index, f in enumerate(self._frames):
                if answers(f):
                    del self._frames[index]
                    return f
            return peek.result() if peek is not None and peek.done() else None

        try:
            await self.send(frame)
            found = await self._until(take, timeout, f"no answer to {frame['action']}")
        finally:
            if peek is not None and or_result_of is not None:
                _discard(self._peekers, or_result_of, peek)
        if isinstance(found, PaymentResult):
            self._receive(found)
            return found.frame
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
            "paymentAccepted",
            timeout,
            or_result_of=transaction_id,
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
            "refundAccepted",
            timeout,
            or_result_of=transaction_id,
        )

    async def wait_result(self, transaction_id: str, timeout: float = 180.0) -> PaymentResult:
        """The result of a payment (``paymentComplete``) or a refund (``refundComplete``).

        A result the client holds is returned at once (the oldest the application has not
        received, else the latest it has); otherwise the gateway is asked
        (``getTransactionStatus``): a finished transaction's stored result is returned, one in
        flight is waited for, an unknown id raises :class:`GatewayError` (``Not Found``). The
        result is acknowledged (unless ``auto_ack`` is off) once every earlier one has been
        received too.
        """
        found = self._take_unreceived(transaction_id) or self._held.get(transaction_id)
        if found is None:
            waiter: asyncio.Future[PaymentResult] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(transaction_id, []).append(waiter)
            try:
                status = await self.status(transaction_id, timeout=min(timeout, 10.0))
                if not waiter.done() and status.get("status") in FINAL_STATUSES:
                    found = PaymentResult.from_status(status)
                    self._receive(found)
                else:
                    found = await self._until(
                        lambda: waiter.result() if waiter.done() else None,
                        timeout,
                        f"no result of {transaction_id} within {timeout} s",
                    )
            finally:
                _discard(self._waiters, transaction_id, waiter)
        await self._flush_ack()
        return found

    async def results(self) -> AsyncIterator[PaymentResult]:
        """Every result nobody waits for with :meth:`wait_result`, in seq order, as it arrives;
        ends when the connection closes (those not received yet are sent again on the next
        connect)."""
        while True:
            found = self._next_unreceived()
            if found is not None:
                self._receive(found)
                yield found
                continue
            if self._closed is not None:
                return
            self._arrived.clear()
            await self._arrived.wait()

    def take_results(self) -> list[PaymentResult]:
        """The results nobody waited for that have arrived so far, in seq order (received:
        acknowledged with the next request, or when the client closes)."""
        taken = []
        while (found := self._next_unreceived()) is not None:
            self._receive(found)
            taken.append(found)
        return taken

    async def cancel(self, transaction_id: str, timeout: float = 10.0) -> Frame:
        return await self._request(
            {"action": "cancelPayment", "transactionId": transaction_id},
            "cancelRequested",
            timeout,
            or_result_of=transaction_id,
        )

    async def status(self, transaction_id: str, timeout: float = 10.0) -> Frame:
        return await self._request(
            {"action": "getTransactionStatus", "transactionId": transaction_id},
            "transactionStatus",
            timeout,
        )

    async def ack(self, seq: int) -> None:
        """Acknowledge every result up to ``seq`` (done for you unless ``auto_ack`` is off)."""
        await self.send({"action": "ack", "seq": seq})

    # --- Results: received once, acknowledged only when received ---------------------------------

    def _result_arrived(self, result: PaymentResult) -> None:
        seq, tid = result.seq, result.transaction_id
        assert seq is not None
        self._top_seq = max(self._top_seq, seq)
        for peek in self._peekers.get(tid, []):
            if not peek.done():
                peek.set_result(result)
        waiters = [w for w in self._waiters.get(tid, []) if not w.done()]
        if waiters:
            for waiter in waiters:
                waiter.set_result(result)
            self._receive(result)
            return
        if seq in self._unreceived:
            return  # sent again (a reconnect, a repeated request): still not received
        held = self._held.get(tid)
        if (
            seq in self._received
            or seq <= self._acked_ever
            or (held is not None and held.seq == seq)
            # received already from getTransactionStatus: the same status, late or not
            or (
                held is not None
                and held.seq is None
                and (held.status, held.late)
                == (
                    result.status,
                    result.late,
                )
            )
        ):
            self._receive(result)
            return
        self._unreceived[seq] = result

    def _receive(self, result: PaymentResult) -> None:
        """The application has this result: hold it for wait_result, let its seq be acked."""
        seq, tid = result.seq, result.transaction_id
        if seq is not None:
            self._unreceived.pop(seq, None)
            self._callback_failed.discard(seq)
            if seq > self._acked_ever:
                self._received.add(seq)
            self._ack_wanted.set()
        held = self._held.get(tid)
        if held is None or held.seq is None or (seq is not None and seq >= held.seq):
            self._held[tid] = result
            self._held.move_to_end(tid)
            while len(self._held) > HELD_RESULTS:
                self._held.popitem(last=False)

    def _next_unreceived(self, *, skip: set[int] | None = None) -> PaymentResult | None:
        seqs = [seq for seq in self._unreceived if not skip or seq not in skip]
        return self._unreceived[min(seqs)] if seqs else None

    def _take_unreceived(self, tid: str) -> PaymentResult | None:
        for seq in sorted(self._unreceived):
            if self._unreceived[seq].transaction_id == tid:
                found = self._unreceived[seq]
                self._receive(found)
                return found
        return None

    def _ack_target(self) -> int:
        """The end of the run of seqs the application has received: every result up to it
        that arrived was received (the gateway sends a socket its results in seq order,
        without gaps, so none up to it is still to come)."""
        if self._unreceived:
            return min(self._unreceived) - 1
        return self._top_seq

    async def _flush_ack(self) -> None:
        if not self.auto_ack or not self.is_open:
            return
        target = self._ack_target()
        if target <= self._ack_sent:
            return
        self._ack_sent = target
        self._acked_ever = max(self._acked_ever, target)
        self._received = {seq for seq in self._received if seq > target}
        with contextlib.suppress(ConnectionError, websockets.ConnectionClosed):
            await self.ack(target)

    async def _acker(self) -> None:
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._flush_ack()

    async def _dispatch(self) -> None:
        """Hand each result nobody waits for to ``on_result``, in seq order. One whose callback
        raised stays for :meth:`results`, :meth:`take_results` and :meth:`wait_result`."""
        assert self.on_result is not None
        while self._closed is None:
            found = self._next_unreceived(skip=self._callback_failed)
            if found is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            try:
                outcome = self.on_result(found)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("on_result failed for %s", found.transaction_id)
                assert found.seq is not None
                self._callback_failed.add(found.seq)
            else:
                self._receive(found)

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
