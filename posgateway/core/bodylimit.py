"""Request bodies are bounded while they are read, before anything buffers them.

Without this, daphne reads a whole request body (into memory, then the application's queue)
before the application sees the request, and Django reads it again before any view can check a
key or a size: one anonymous ``POST /terminal-api/sync`` of 1 GiB cost a gigabyte of memory and
seconds of every other client's time (issue 18). So the limit is enforced at both places a body
is read:

- :class:`BodyLimit` wraps the ASGI application (``asgi.py``): a ``Content-Length`` over the
  limit is answered 413 before a byte of the body is read; a body without one (chunked) is
  counted as it arrives and answered 413 at the limit. uvicorn hands the body over as it comes,
  with back-pressure, so under uvicorn this is the whole guard.
- :func:`install` hooks daphne's request object (Twisted's ``Request.gotLength`` and
  ``handleContentChunk``): the same limit and the same answer, while Twisted reads the body,
  before daphne buffers it; the connection is read no further and closed a second later. A body
  still arriving ``REQUEST_BODY_TIMEOUT_S`` after its headers is cut off the same way
  (uvicorn's and daphne's own idle timeouts cut off a client that sends nothing).

The answer is the error form of every endpoint: ``{"error": "Payload Too Large", "message":
"The body exceeds N bytes"}``, status 413. The limit is ``MAX_MESSAGE_BYTES`` on the Terminal
API (the same as a WebSocket frame) and ``MAX_REQUEST_BODY_BYTES`` everywhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from posgateway.core.protocol import error_body

logger = logging.getLogger("posgateway.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TERMINAL_API_PREFIX = "/terminal-api/"
# How long daphne keeps a refused connection open, unread, for the answer to reach the client.
LINGER_S = 1.0


def limit_for(path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    if path.startswith(TERMINAL_API_PREFIX):
        return int(settings.MAX_MESSAGE_BYTES)
    return int(settings.MAX_REQUEST_BODY_BYTES)


def too_large_body(limit: int) -> bytes:
    return json.dumps(error_body(413, f"The body exceeds {limit} bytes")).encode()


class BodyLimit:
    """ASGI middleware: HTTP request bodies over :func:`limit_for` are answered 413 unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._refuse(send, limit)
                    return
        # Read the body here, counting; at most ``limit`` bytes are ever held.
        chunks: list[bytes] = []
        size = 0
        seconds = float(settings.REQUEST_BODY_TIMEOUT_S)
        try:
            async with asyncio.timeout(seconds):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        # The client left before the body was complete: the app sees just that.
                        await self.app(scope, _replay([message], receive), send)
                        return
                    body = message.get("body", b"")
                    size += len(body)
                    if size > limit:
                        await self._refuse(send, limit)
                        return
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message_text = f"The body took longer than {seconds:g} s"
            await _answer(send, 408, json.dumps(error_body(408, message_text)).encode())
            return
        first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([first], receive), send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        await _answer(send, 413, too_large_body(limit))


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def install() -> None:
    """Bound request bodies inside daphne, while Twisted reads them (idempotent; no daphne,
    no-op)."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return
    if getattr(WebRequest, "_posgw_body_limit", False):
        return
    original_got_length = WebRequest.gotLength
    original_chunk = WebRequest.handleContentChunk

    def got_length(self: Any, length: int | None) -> None:
        path = getattr(self.channel, "_path", b"") or b""
        self._posgw_limit = limit_for(path.split(b"?", 1)[0].decode("latin-1"))
        self._posgw_size = 0
        self._posgw_refused = False
        if length is not None and length > self._posgw_limit:
            original_got_length(self, 0)  # nothing of it is kept
            # Twisted would answer "100 Continue" next, after the 413 is on its way.
            self.requestHeaders.removeHeader(b"Expect")
            _refuse_daphne(self)
            return
        original_got_length(self, length)
        if length != 0:
            self._posgw_deadline = _call_later(
                settings.REQUEST_BODY_TIMEOUT_S, _body_too_slow, self
            )

    def handle_chunk(self: Any, data: bytes) -> None:
        if getattr(self, "_posgw_refused", False):
            return
        self._posgw_size = getattr(self, "_posgw_size", 0) + len(data)
        if self._posgw_size > getattr(self, "_posgw_limit", limit_for("")):
            _refuse_daphne(self)
            return
        original_chunk(self, data)

    WebRequest.gotLength = got_length
    WebRequest.handleContentChunk = handle_chunk
    original_all_content = WebRequest.requestReceived

    def request_received(self: Any, *args: Any, **kw: Any) -> Any:
        _cancel_deadline(self)
        if getattr(self, "_posgw_refused", False):
            return None
        return original_all_content(self, *args, **kw)

    WebRequest.requestReceived = request_received
    WebRequest._posgw_body_limit = True


def _cancel_deadline(request: Any) -> None:
    deadline = getattr(request, "_posgw_deadline", None)
    if deadline is not None and deadline.active():
        deadline.cancel()
    request._posgw_deadline = None


def _refuse_daphne(request: Any) -> None:
    """Answer 413 on the raw connection and close it: the rest of the body is never read."""
    _cancel_deadline(request)
    request._posgw_refused = True
    limit = request._posgw_limit
    _write_and_close(request, 413, "Payload Too Large", too_large_body(limit))
    logger.warning("Refused a request body over %d bytes (413)", limit)


def _body_too_slow(request: Any) -> None:
    request._posgw_deadline = None
    if getattr(request, "_posgw_refused", False):
        return
    request._posgw_refused = True
    seconds = settings.REQUEST_BODY_TIMEOUT_S
    body = json.dumps(error_body(408, f"The body took longer than {seconds:g} s")).encode()
    _write_and_close(request, 408, "Request Timeout", body)
    logger.warning("Cut off a request body still arriving after %g s (408)", seconds)


def _write_and_close(request: Any, status: int, reason: str, body: bytes) -> None:
    transport = getattr(request.channel, "transport", None)
    if transport is None:
        return
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    transport.write(head + body)
    # Read no more, and close a moment later: closed at once with the client's data unread,
    # the connection would be reset and the client might lose the answer.
    transport.pauseProducing()
    _call_later(LINGER_S, transport.loseConnection)


def _call_later(seconds: float, function: Callable[..., Any], *args: Any) -> Any:
    from twisted.internet import reactor

    scheduler: Any = reactor  # Twisted's stubs type the reactor as a module
    return scheduler.callLater(seconds, function, *args)
