"""The one WebSocket consumer for desktops and terminals: transport only.

It authenticates by key, decodes frames, looks the action up in the dispatch table, runs the
handler and encodes the reply or the error. Rules live in the services.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from posgateway import gateway
from posgateway.dispatch import DeviceContext, build_actions
from posgateway.protocol import (
    BINARY_NOT_SUPPORTED,
    CONNECTION_NOT_FOUND,
    INVALID_JSON,
    UNAUTHORIZED,
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    TooManyRequests,
    Unauthorized,
    error_frame,
    now_iso,
)
from posgateway.ratelimit import AddressLimiter, TokenBucket
from posgateway.realtime import Outbox
from terminals.selectors import device_for_key
from terminals.services import (
    CLOSE_REPLACED,
    CLOSE_STALE,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    connection_touch,
)

logger = logging.getLogger("terminals.consumers")

ACTIONS = build_actions()

# Sockets of this process, for the heartbeat sweep. Only this process's own sockets are here:
# anything another process needs is in the database or goes through the channel layer.
LIVE: weakref.WeakSet[GatewayConsumer] = weakref.WeakSet()
HANDSHAKES = AddressLimiter()


class ConnectionClosedByGateway(Exception):
    """The gateway had already closed this connection; the frame is not processed."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def key_from_scope(scope: dict[str, Any]) -> str:
    """``Authorization: Bearer <key>`` wins over ``?key=<key>``."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("key") or [""])[0]


def activity_write_interval() -> float:
    """lastActivity is written at most this often per connection (it is read for staleness)."""
    return min(5.0, (settings.HEARTBEAT_INTERVAL_S + settings.HEARTBEAT_TIMEOUT_S) / 4)


class GatewayConsumer(AsyncWebsocketConsumer):
    ctx: DeviceContext | None = None
    # Highest seq re-sent on connect: a result committed while the connection opened is both
    # in that backlog and pushed live; the live copy is then dropped here.
    resent_seq = 0

    async def connect(self) -> None:
        gateway.ensure_sweeper()
        client = self.scope.get("client") or ("", 0)
        if not HANDSHAKES.allow(str(client[0]), settings.WS_HANDSHAKES_PER_S):
            await self.close()  # refused before the upgrade: HTTP 403, nothing else spent
            return
        await self.accept()
        self.frames = TokenBucket(settings.WS_FRAMES_PER_S, settings.WS_FRAMES_BURST)
        self.last_seen = time.monotonic()
        self.activity_written = self.last_seen
        self.unasked_pong_sent = False
        try:
            device = await database_sync_to_async(device_for_key)(key=key_from_scope(self.scope))
        except Exception:
            logger.exception("key lookup failed")
            await self.send_frame(InternalError().to_frame())
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        if device is None:
            await self.send_frame(Unauthorized(UNAUTHORIZED).to_frame())
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        outbox = Outbox()
        try:
            self.ctx, backlog = await database_sync_to_async(gateway.device_connected)(
                device=device,
                channel_name=self.channel_name,
                remote_addr=str(client[0]),
                outbox=outbox,
            )
        except TooManyRequests as exc:
            await self.send_frame(exc.to_frame())
            await self.close(code=CLOSE_TOO_MANY)
            return
        except Exception:
            logger.exception("registering the connection failed")
            await self.send_frame(InternalError().to_frame())
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await gateway.run_failures(await outbox.flush(), Outbox())
        LIVE.add(self)
        await self.send_frame(
            {
                "action": "connected",
                "connectionId": self.ctx.connection_id,
                "deviceId": device.device_id or None,
                "deviceType": device.device_type,
                "group": self.ctx.group_slug,
                "timestamp": now_iso(),
            }
        )
        for frame in backlog:
            await self.send_frame(frame)
            if frame.get("action") == "paymentComplete":
                self.resent_seq = max(self.resent_seq, frame["seq"])

    async def disconnect(self, code: int) -> None:
        LIVE.discard(self)
        if self.ctx is None:
            return
        outbox = Outbox()
        try:
            await database_sync_to_async(gateway.device_disconnected)(
                ctx=self.ctx, code=code, outbox=outbox
            )
            await outbox.flush()
        except Exception:
            logger.exception("recording the disconnect of %s failed", self.ctx.connection_id)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.ctx is None:
            return  # unauthenticated: already told and closing
        self.last_seen = time.monotonic()
        self.unasked_pong_sent = False
        action = None
        frame: dict[str, Any] | None = None
        try:
            if not self.frames.take():
                raise TooManyRequests(
                    f"Rate limit exceeded: at most {settings.WS_FRAMES_PER_S:g} frames/s"
                )
            frame = self.decode(message)
            action = frame.get("action")
            if not isinstance(action, str) or not action:
                raise BadRequest("action is required")
            spec = ACTIONS.get(action)
            if spec is None:
                raise BadRequest(f"Unknown action: {action[:64]}")
            if self.ctx.device_type not in spec.device_types:
                raise Forbidden(spec.forbidden_message)
            try:
                await self.note_activity()
            except ConnectionClosedByGateway:
                return
            outbox = Outbox()
            if spec.uses_database:
                reply = await database_sync_to_async(spec.handler)(self.ctx, frame, outbox)
            else:
                reply = spec.handler(self.ctx, frame, outbox)
            failures = await outbox.flush()
            if failures:
                await gateway.run_failures(failures, Outbox())
                raise InternalError()
        except Exception as exc:
            if not isinstance(exc, ProtocolError):
                logger.exception("action %s from %s failed", action, self.ctx.connection_id)
            reply = error_frame(
                exc,
                requestAction=action if isinstance(action, str) else None,
                transactionId=_transaction_id(frame),
            )
        if reply is not None:
            await self.send_frame(reply)

    def decode(self, message: dict[str, Any]) -> dict[str, Any]:
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
        return data

    async def note_activity(self) -> None:
        """Write lastActivity (debounced); a connection the gateway closed meanwhile ends here.

        That happens when a sweep found the socket silent or its process presumed dead while
        the close message was lost: the client is told and reconnects, which puts its device's
        status right again.
        """
        now = time.monotonic()
        if now - self.activity_written < activity_write_interval():
            return
        self.activity_written = now
        alive = await database_sync_to_async(connection_touch)(
            connection_pk=self.ctx.connection_pk, at=timezone.now()
        )
        if not alive:
            await self.send_frame(NotFound(CONNECTION_NOT_FOUND).to_frame())
            await self.close(code=CLOSE_STALE)
            raise ConnectionClosedByGateway

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    # --- Messages from the channel layer ---------------------------------------------------

    async def gateway_frame(self, event: dict[str, Any]) -> None:
        frame = event["frame"]
        if frame.get("action") == "paymentComplete" and frame.get("seq", 0) <= self.resent_seq:
            return
        await self.send_frame(frame)

    async def gateway_force_disconnect(self, event: dict[str, Any]) -> None:
        LIVE.discard(self)  # closing: no more heartbeat frames to it
        await self.send_frame({"action": "forceDisconnect", "reason": event["reason"]})
        await self.close(code=CLOSE_REPLACED)

    async def gateway_close(self, event: dict[str, Any]) -> None:
        LIVE.discard(self)
        await self.close(code=event.get("code", 1000))

    # Channels sets channel_receive in __call__. Left alone, a failing layer (Redis down) kills
    # the consumer at once and daphne drops the frames the client had already sent, a
    # terminal's result among them; instead those are still handled, then the socket closes.
    @property
    def channel_receive(self) -> Any:
        return self._receive_or_close

    @channel_receive.setter
    def channel_receive(self, receive: Any) -> None:
        self._layer_receive = receive

    async def _receive_or_close(self) -> dict[str, Any]:
        try:
            return await self._layer_receive()
        except Exception as exc:
            logger.warning("channel layer failed (%r): closing %s", exc, self.channel_name)
            self._layer_receive = asyncio.Future  # nothing more from it: wait forever
            return {"type": "gateway.close", "code": CLOSE_UNAVAILABLE}


def _transaction_id(frame: dict[str, Any] | None) -> str | None:
    if not frame:
        return None
    for candidate in (
        frame.get("transactionId"),
        (frame.get("paymentRequest") or {}).get("transactionId")
        if isinstance(frame.get("paymentRequest"), dict)
        else None,
        (frame.get("paymentResponse") or {}).get("transactionId")
        if isinstance(frame.get("paymentResponse"), dict)
        else None,
    ):
        if isinstance(candidate, str) and 0 < len(candidate) <= 64:
            return candidate
    return None


async def sweep_local_connections() -> None:
    """Heartbeat rules for this process's sockets: unasked pong when quiet, close when stale."""
    HANDSHAKES.prune()
    now = time.monotonic()
    interval = settings.HEARTBEAT_INTERVAL_S
    stale_after = interval + settings.HEARTBEAT_TIMEOUT_S
    for consumer in list(LIVE):
        quiet = now - consumer.last_seen
        try:
            if quiet > stale_after:
                LIVE.discard(consumer)
                logger.info(
                    "connection %s is stale after %.0f s", consumer.ctx.connection_id, quiet
                )
                await consumer.close(code=CLOSE_STALE)
                # The socket may never answer the close; record it now.
                outbox = Outbox()
                await database_sync_to_async(gateway.device_disconnected)(
                    ctx=consumer.ctx, code=CLOSE_STALE, outbox=outbox
                )
                await outbox.flush()
            elif quiet > interval and not consumer.unasked_pong_sent:
                consumer.unasked_pong_sent = True
                await consumer.send_frame({"action": "pong", "timestamp": now_iso()})
        except Exception:
            logger.exception("heartbeat sweep of a connection failed")
