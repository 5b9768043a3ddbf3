"""``POST /terminal-api/sync`` and ``/terminal-api/async``: the nexo requests over HTTP.

An ASGI HTTP consumer rather than a Django view: a sync payment waits for the terminal for up
to ``PAYMENT_TIMEOUT_S``, and a Django request behind a synchronous middleware (WhiteNoise) or
in a thread-sensitive context holds a thread for as long as it runs. Here the wait is a
coroutine (``posgateway.gateway.waiting``): only the short database steps hop to the database
thread, as the WebSocket consumer's do.

Authenticated by a desktop's key in ``x-api-key``. ``sync`` answers with the
``SaleToPOIResponse`` (a payment or a reversal once the terminal has answered); ``async``
checks the key (401) and the document (a Failure body, HTTP 200, as Adyen's cloud does) and
otherwise answers ``ok`` and pushes the response to the desktop device's socket as
``terminalApiResponse``. An ``AbortRequest`` is answered HTTP 200 with an empty body. A client
that goes away while its sync payment waits cancels nothing: the payment goes on, and its
outcome is kept for a ``TransactionStatusRequest``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from posgateway import nexo
from posgateway.core.events import Outbox
from posgateway.core.protocol import error_body
from posgateway.gateway import frames
from posgateway.gateway.delivery import Follow, Messages, Push, prepare, run_failures, send
from posgateway.gateway.waiting import wait_until_finished
from posgateway.nexo import payments as nexo_payments
from terminals.models import Device, DeviceType
from terminals.selectors import device_for_key, live_connection

logger = logging.getLogger("sessions.terminal_api")

JSON = b"application/json"


class TerminalApiConsumer(AsyncHttpConsumer):
    # No channel of its own: a waiting request listens on a channel it makes for the wait.
    channel_layer_alias = "__none__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = 0
        self.too_large = False

    async def http_request(self, message: Any) -> None:
        """Read the body, refusing one over the message limit without keeping it."""
        chunk = message.get("body", b"")
        self.size += len(chunk)
        if self.size > settings.MAX_MESSAGE_BYTES:
            self.too_large = True
            self.body = []
        elif chunk:
            self.body.append(chunk)
        if not message.get("more_body"):
            try:
                await self.handle(b"".join(self.body))
            finally:
                await self.disconnect()
            raise StopConsumer()

    async def _json(self, status: int, document: Any, headers: list | None = None) -> None:
        body = json.dumps(document).encode()
        await self.send_response(status, body, headers=[(b"Content-Type", JSON), *(headers or [])])

    async def _error(self, status: int, message: str, headers: list | None = None) -> None:
        await self._json(status, error_body(status, message), headers)

    async def handle(self, body: bytes) -> None:
        if self.scope["method"] != "POST":
            await self._error(405, "Use POST", [(b"Allow", b"POST")])
            return
        push = self.scope["path"].rstrip("/").endswith("/async")
        key = ""
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"x-api-key":
                key = value.decode("latin-1")
        desktop = await database_sync_to_async(device_for_key)(key=key)
        if desktop is None or desktop.device_type != DeviceType.DESKTOP:
            await self._error(401, "A valid desktop API key is required in x-api-key")
            return
        if self.too_large:
            limit = settings.MAX_MESSAGE_BYTES  # the same limit as a WebSocket frame
            await self._error(413, f"The body exceeds {limit} bytes")
            return
        try:
            document = nexo_payments.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            failure = nexo.message_format("The body is not JSON")
            await self._json(200, nexo.failure_document({}, failure))
            return
        if nexo_payments.category_of(document) is None:
            response, prepared = await database_sync_to_async(_admin)(desktop, document, push)
            await run_failures(await send(prepared))
            if response is None:
                await self._text("ok")
            else:
                await self._json(200, response)
            return
        # Shielded: a client that goes away while its payment is being started does not stop
        # the forward to the terminal (the payment is committed by then); only the wait for
        # the answer may end with the request.
        answer = await asyncio.shield(_start_payment(desktop, document, push))
        if answer.empty:
            await self.send_response(200, b"", headers=[(b"Content-Type", JSON)])
        elif answer.refused or not push:
            document = answer.document
            if document is None:
                assert answer.message is not None
                document = await self._wait(answer.message)
            await self.send_response(
                200, nexo_payments.dumps(document).encode(), headers=[(b"Content-Type", JSON)]
            )
        else:
            await self._text("ok")

    async def _text(self, text: str) -> None:
        await self.send_response(200, text.encode(), headers=[(b"Content-Type", b"text/plain")])

    async def _wait(self, message: Any) -> dict[str, Any]:
        """The message's answer once its transaction finishes (or InProgress if it outlasts
        the payment timeout and the sweeps that end it)."""
        pk = message.pk
        txn = message.transaction

        async def check() -> dict[str, Any] | None:
            return await database_sync_to_async(_response_now)(pk)

        timeout = settings.PAYMENT_TIMEOUT_S + 2 * settings.SWEEP_INTERVAL_S + 5
        document = await wait_until_finished(
            group_id=txn.group_id, transaction_id=txn.transaction_id, check=check, timeout=timeout
        )
        if document is None:
            reloaded = await database_sync_to_async(nexo_payments.reload)(pk)
            return nexo_payments.in_progress(reloaded)
        return document


async def _start_payment(
    desktop: Device, document: dict[str, Any], push: bool
) -> nexo_payments.Answer:
    answer, prepared = await database_sync_to_async(_payment)(desktop, document, push)
    await run_failures(await send(prepared))
    return answer


def _response_now(pk: int) -> dict[str, Any] | None:
    return nexo_payments.response_of(nexo_payments.reload(pk))


def _admin(desktop: Device, document: Any, push: bool) -> tuple[dict[str, Any] | None, Messages]:
    """An Admin request (sessions), in one database hop: (the body, or None for ``ok``; the
    messages to send)."""
    outbox = Outbox()
    response, _ = nexo.terminal_api_request(desktop=desktop, document=document, outbox=outbox)
    ok = nexo.is_success(response)
    if ok and push:
        live = live_connection(device_id=desktop.pk)
        if live is not None:
            outbox.publish(Push(live.channel_name, frames.terminal_api_response(response)))
        return None, prepare(outbox)
    return response, prepare(outbox)


def _payment(
    desktop: Device, document: dict[str, Any], push: bool
) -> tuple[nexo_payments.Answer, Messages]:
    """A Payment, Reversal, TransactionStatus or Abort request, in one database hop. Over
    ``async`` the desktop's socket gets the answer: now, or (``Follow``) when the transaction
    finishes."""
    outbox = Outbox()
    answer = nexo_payments.handle(desktop=desktop, document=document, outbox=outbox)
    if push and not answer.refused and not answer.empty:
        live = live_connection(device_id=desktop.pk)
        if live is not None:
            if answer.document is not None:
                frame = frames.terminal_api_response(answer.document)
                outbox.publish(Push(live.channel_name, frame, nexo_payments.dumps(frame)))
            elif answer.message is not None and answer.message.transaction is not None:
                txn = answer.message.transaction
                group = frames.transaction_group(txn.group_id, txn.transaction_id)
                outbox.publish(Follow(group, live.channel_name))
    return answer, prepare(outbox)
