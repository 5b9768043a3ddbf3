"""The base of the gateway's WebSocket consumers: the same behaviour on daphne and on uvicorn.

A send on a socket whose client has gone is dropped by daphne. uvicorn raises instead, as the
ASGI spec asks ("a server-specific subclass of OSError"): a result pushed, a pong or a close to
a socket that closed a moment before would crash the consumer and log a traceback. Here such a
send is dropped on both servers; the disconnect event that follows cleans up as always, and a
result the desktop did not get stays unacknowledged in the database and is sent again.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

logger = logging.getLogger("posgateway.websocket")


class _SendsToClosedSocketsDropped(AsyncConsumer):
    async def send(self, message: dict[str, Any]) -> None:
        try:
            await super().send(message)
        except OSError as exc:  # the client is gone (uvicorn's ClientDisconnected)
            logger.debug(
                "%s to a closed socket dropped (%s)", message.get("type"), type(exc).__name__
            )


class WebsocketConsumer(AsyncWebsocketConsumer, _SendsToClosedSocketsDropped):
    """``AsyncWebsocketConsumer`` whose sends to a closed socket are dropped on every server."""
