"""The one WebSocket consumer for desktops and terminals: transport only.

It authenticates by key, decodes frames, looks the action up in the action table
(posgateway.gateway.actions), runs the handler and encodes the reply or the error. Rules live
in the services; frames are built in posgateway.gateway.frames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pprint import pformat
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings

from posgateway.core.events import Outbox
from posgateway.core.health import CHANNEL_LAYER, DATABASE
from posgateway.core.protocol import (
    BINARY_NOT_SUPPORTED,
    INVALID_JSON,
    UNAUTHORIZED,
    UNSTORABLE_TEXT,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    ProtocolError,
    TooManyRequests,
    Unauthorized,
    error_frame,
    unstorable_text,
)
from posgateway.core.ratelimit import TokenBucket
from posgateway.gateway import connections, frames
from posgateway.gateway.actions import ACTIONS, Action, DeviceContext
from posgateway.gateway.delivery import Messages, deliver, prepare, run_failures, send
from posgateway.gateway.health import channel_layer_back
from posgateway.gateway.heartbeat import HANDSHAKES, LIVE, log_failure
from posgateway.gateway.websocket import WebsocketConsumer
from posgateway.nexo import payments as nexo_payments
from terminals.services import (
    CLOSE_REPLACED,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
)

if TYPE_CHECKING:
    from asgiref.typing import WebSocketDisconnectEvent, WebSocketReceiveEvent, WebSocketScope

logger = logging.getLogger("terminals.consumers")

# How many request keys a terminal's socket remembers. A terminal has one payment and one
# display/input request in flight at a time; a late duplicate send comes within seconds.
REQUESTS_REMEMBERED = 256


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def key_from_scope(scope: WebSocketScope) -> str:
    """``Authorization: Bearer <key>`` wins over ``?key=<key>``."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("key") or [""])[0]


class _LazyPformat:
    """``pformat(obj)``, computed only when formatted."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __str__(self) -> str:
        return pformat(self.obj)


def _lazy_autobahn_config_log() -> None:
    """autobahn (daphne's WebSocket layer) pretty-prints its whole configuration for a debug
    line on every new socket, whether debug logging is on or not: ~10 % of the event loop in a
    reconnect storm (docs/performance.md). The text is now built only if the line is logged."""
    try:
        from autobahn.websocket import protocol
    except ImportError:  # not served by daphne
        return
    if getattr(protocol, "pformat", None) is pformat:
        # A stand-in, not a str: autobahn's log lines only format it (its Timings.__str__
        # would return it, but only with trackTimings, which daphne leaves off).
        protocol.pformat = _LazyPformat  # type: ignore[assignment]


_lazy_autobahn_config_log()


class GatewayConsumer(WebsocketConsumer):
    ctx: DeviceContext | None = None
    # Highest seq of the results this desktop socket has been sent (or that were acknowledged
    # before it connected). Results reach the desktop in seq order, each once: a live push
    # already sent (a result committed while the connection opened is both in the connect's
    # backlog and pushed live) is dropped, and a push that skips a seq (pushes committed one
    # after the other can arrive the other way round, from two processes or a sweep) is
    # preceded by the missing results, read from the database. Without that, an ack of the
    # later seq would also acknowledge an earlier result the desktop never saw.
    sent_seq = 0
    # The code the gateway closed this socket with (a revoked key): it, not the client's echo
    # of it, decides the device's status.
    gateway_close_code: int | None = None
    # The requests (frames.request_key) written on this socket, oldest first: a terminal gets
    # each request once per connection, however many sends of it reach the socket (the first,
    # a catch-up re-send after a channel-layer outage, a retried hand-off, from any process).
    # The socket is the one place all of them pass, and this consumer its only writer.
    requests_sent: dict[str, None]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its ``aclose_old_connections`` before every message.

        That is a hop to the database thread per frame, per layer message and per connect,
        queued behind the database work of every other socket. This consumer reaches the
        database only through ``database_sync_to_async``, which closes old connections around
        each call itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: WebSocketDisconnectEvent) -> None:
        # As Channels' own, without the aclose_old_connections hop (see dispatch).
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer

    async def connect(self) -> None:
        client = self.scope.get("client") or ("", 0)
        if not HANDSHAKES.allow(str(client[0]), settings.WS_HANDSHAKES_PER_S):
            await self.close()  # refused before the upgrade: HTTP 403, nothing else spent
            return
        await self.accept()
        self.requests_sent = {}
        self.frame_budget = TokenBucket(settings.WS_FRAMES_PER_S, settings.WS_FRAMES_BURST)
        self.last_seen = time.monotonic()
        self.activity_pending = False
        self.unasked_pong_sent = False
        outbox = Outbox()
        try:
            # The key lookup, the connection and the backlog: one thread hop.
            connected = await database_sync_to_async(connections.device_connected_by_key)(
                key=key_from_scope(self.scope),
                channel_name=self.channel_name,
                remote_addr=str(client[0]),
                outbox=outbox,
            )
        except TooManyRequests as exc:
            await self.send_frame(exc.to_frame())
            await self.close(code=CLOSE_TOO_MANY)
            return
        except Exception as exc:
            log_failure(exc, "registering the connection failed")
            await self.send_frame(error_frame(exc))  # Service Unavailable in a database outage
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        if connected is None:
            await self.send_frame(Unauthorized(UNAUTHORIZED).to_frame())
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.ctx, backlog = connected
        device = self.ctx.device
        self.sent_seq = device.last_seq  # read with the backlog: later results are pushed
        await run_failures(await deliver(outbox))
        LIVE.add(self)
        await self.send_frame(
            frames.connected(
                connection_id=self.ctx.connection_id,
                device_id=device.device_id or None,
                device_type=device.device_type,
                group=self.ctx.group_slug,
            )
        )
        await self._send_stored(backlog)

    async def disconnect(self, code: int) -> None:
        LIVE.discard(self)
        if self.ctx is None:
            return
        outbox = Outbox()
        try:
            await database_sync_to_async(connections.device_disconnected)(
                ctx=self.ctx, code=self.gateway_close_code or code, outbox=outbox
            )
            await deliver(outbox)
        except Exception as exc:
            log_failure(exc, f"recording the disconnect of {self.ctx.connection_id} failed")

    async def websocket_receive(self, message: WebSocketReceiveEvent) -> None:
        if self.ctx is None:
            return  # unauthenticated: already told and closing
        self.last_seen = time.monotonic()
        self.unasked_pong_sent = False
        action = None
        frame: dict[str, Any] | None = None
        try:
            if not self.frame_budget.take():
                raise TooManyRequests(
                    f"Rate limit exceeded: at most {settings.WS_FRAMES_PER_S:g} frames/s"
                )
            frame = self.decode(message)
            action = frame.get("action")
            if action is None or action == "":
                raise BadRequest("action is required")
            if not isinstance(action, str):
                raise BadRequest("action must be a string")
            spec = ACTIONS.get(action)
            if spec is None:
                raise BadRequest(f"Unknown action: {action[:64]}")
            if self.ctx.device_type not in spec.device_types:
                raise Forbidden(spec.forbidden_message)
            # lastActivity is written by the sweeper, for all active sockets at once.
            self.activity_pending = True
            if spec.uses_database:
                reply, prepared = await database_sync_to_async(_handle)(spec, self.ctx, frame)
                DATABASE.ok()
            else:
                reply, prepared = _handle(spec, self.ctx, frame)
            # A refused hand-off to a terminal is retried (posgateway.core.forwarding): the
            # request is stored, and the reply (paymentAccepted) stands.
            await run_failures(await send(prepared))
        except Exception as exc:
            if not isinstance(exc, ProtocolError):
                log_failure(exc, f"action {action} from {self.ctx.connection_id} failed")
            reply = error_frame(
                exc,
                requestAction=action if isinstance(action, str) else None,
                transactionId=_transaction_id(frame),
            )
        if reply is not None:
            await self.send_frame(reply)

    def decode(self, message: WebSocketReceiveEvent) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise BadRequest(BINARY_NOT_SUPPORTED)
        limit = settings.MAX_MESSAGE_BYTES
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8")) > limit):
            raise PayloadTooLarge(f"Message exceeds the limit of {limit} bytes")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise BadRequest(INVALID_JSON) from None
        if not isinstance(data, dict):
            raise BadRequest("Message must be a JSON object")
        if data.get("action") == "terminalApi":
            # nexo amounts are JSON numbers: read exactly, never through a float.
            data = nexo_payments.loads(text)
        # NUL and lone surrogates come only as \u escapes; no database can store or match them.
        if "\\u" in text and (where := unstorable_text(data)) is not None:
            raise BadRequest(f"{where} {UNSTORABLE_TEXT}")
        return data

    async def send_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("action") == "terminalApiResponse":
            await self.send(text_data=nexo_payments.dumps(frame))  # its amounts are Decimals
            return
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    # --- Messages from the channel layer ---------------------------------------------------

    async def gateway_frame(self, event: dict[str, Any]) -> None:
        if event.get("text") is not None:  # written already (a Terminal API answer)
            await self.send(text_data=event["text"])
            return
        frame = event["frame"]
        if not self._first_send_of(frame):
            return
        if frame.get("action") in frames.RESULT_ACTIONS:
            seq = frame.get("seq", 0)
            if seq <= self.sent_seq:
                return
            if seq > self.sent_seq + 1:
                # The stored results from the gap on, this one included, in order.
                await self._send_results_after(self.sent_seq)
                return
            self.sent_seq = seq
        await self.send_frame(frame)

    async def _send_results_after(self, seq: int) -> None:
        """Send the stored results above ``seq`` in order (a gap in the live pushes)."""
        # Pushes reach only a channel connect() registered, and it set ctx from that registration.
        assert self.ctx is not None
        try:
            missing = await database_sync_to_async(connections.results_after)(ctx=self.ctx, seq=seq)
        except Exception as exc:
            # Held back rather than sent out of order: they stay unacknowledged in the
            # database, and the next push or the next connect sends them.
            log_failure(exc, f"reading the results before a push to {self.ctx.connection_id}")
            return
        await self._send_stored(missing)

    async def _send_stored(self, events: list[Any]) -> None:
        """What was read from the database (a backlog, missed results), as frames, noting the
        results' seq."""
        for event in events:
            frame = frames.device_frame(event)
            assert frame is not None  # what is read back (results, requests, sessions) has one
            if not self._first_send_of(frame):
                continue
            await self.send_frame(frame)
            if frame.get("action") in frames.RESULT_ACTIONS:
                self.sent_seq = max(self.sent_seq, frame["seq"])

    def _first_send_of(self, frame: dict[str, Any]) -> bool:
        """Whether ``frame`` may be written on this socket: anything but a request this
        socket was already sent (then it is dropped, with a line in the log)."""
        key = frames.request_key(frame)
        if key is None:
            return True
        if key in self.requests_sent:
            logger.info(
                "%s not sent again on connection %s: it already has it",
                key,
                self.ctx.connection_id if self.ctx else "-",
            )
            return False
        self.requests_sent[key] = None
        if len(self.requests_sent) > REQUESTS_REMEMBERED:
            del self.requests_sent[next(iter(self.requests_sent))]
        return True

    async def terminal_api_result(self, event: dict[str, Any]) -> None:
        """A transaction this desktop asked for over the async Terminal API (or the
        terminalApi action) finished: push its nexo answer as ``terminalApiResponse``."""
        if self.ctx is None:
            return
        ctx = self.ctx
        try:
            documents = await database_sync_to_async(nexo_payments.pushed_responses)(
                desktop=ctx.device,
                group_id=event.get("groupId"),
                transaction_id=event.get("transactionId"),
            )
        except Exception as exc:
            log_failure(exc, f"the Terminal API answer for {ctx.connection_id} failed")
            return
        for document in documents:
            await self.send_frame(frames.terminal_api_response(document))
        if documents and self.channel_layer is not None:
            group = frames.transaction_group(event["groupId"], event["transactionId"])
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)

    async def gateway_force_disconnect(self, event: dict[str, Any]) -> None:
        LIVE.discard(self)  # closing: no more heartbeat frames to it
        await self.send_frame(frames.force_disconnect(event["reason"]))
        await self.close(code=CLOSE_REPLACED)

    async def gateway_close(self, event: dict[str, Any]) -> None:
        LIVE.discard(self)
        self.gateway_close_code = event.get("code", 1000)
        await self.close(code=self.gateway_close_code)

    async def gateway_catch_up(self, event: dict[str, Any]) -> None:
        """The channel layer is back: send what a reconnect would have (pushes were lost)."""
        if self.ctx is None:  # not connected: nothing to catch up on
            return
        outbox = Outbox()
        try:
            backlog = await database_sync_to_async(connections.device_catch_up)(
                ctx=self.ctx, outbox=outbox
            )
            await run_failures(await deliver(outbox))
        except Exception as exc:
            log_failure(exc, f"catching up {self.ctx.connection_id} failed")
            return
        await self._send_stored(backlog)

    async def layer_failed(self, exc: Exception) -> dict[str, Any]:
        """The channel layer failed (Redis down). The socket stays open (pings answered,
        actions that need the layer answered "Failed to process message"), one probe per
        process waits for the layer, and then the socket reads on and catches up on what it
        missed: a terminal's result the client had already sent is not dropped with it."""
        CHANNEL_LAYER.failed(exc, "receive")
        await channel_layer_back()
        return {"type": "gateway.catch_up"}


def _handle(
    spec: Action, ctx: DeviceContext, frame: dict[str, Any]
) -> tuple[dict[str, Any] | None, Messages]:
    """Run an action's handler, and prepare the messages of what it published, in one call:
    for the actions that use the database, both happen in its thread hop."""
    outbox = Outbox()
    reply = spec.handler(ctx, frame, outbox)
    return reply, prepare(outbox)


def _transaction_id(frame: dict[str, Any] | None) -> str | None:
    if not frame:
        return None
    bodies = ("paymentRequest", "paymentResponse", "refundRequest", "refundResponse")
    for candidate in (
        frame.get("transactionId"),
        *(frame[key].get("transactionId") for key in bodies if isinstance(frame.get(key), dict)),
    ):
        if isinstance(candidate, str) and 0 < len(candidate) <= 64:
            return candidate
    return None
