"""The base of the gateway's WebSocket consumers: the same behaviour on daphne and on uvicorn,
and a channel layer that fails without killing the consumer.

A send on a socket whose client has gone is dropped by daphne once it has seen the close, but
in the moment between the client's close frame and daphne's onClose, autobahn raises
``Disconnected`` ("Attempt to send on a closed protocol"; seen in the chaos test). uvicorn
raises too, as the ASGI spec asks ("a server-specific subclass of OSError"): a result pushed, a
pong or a close to a socket that closed a moment before would crash the consumer and log a
traceback. Here such a send is dropped on both servers; the disconnect event that follows
cleans up as always, and a result the desktop did not get stays unacknowledged in the database
and is sent again.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import AsyncConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

try:  # daphne's WebSocket implementation; absent where only uvicorn is installed
    from autobahn.exception import Disconnected
except ImportError:  # pragma: no cover
    Disconnected = OSError  # type: ignore[assignment,misc]

logger = logging.getLogger("posgateway.websocket")

# What a send to a socket whose client has gone raises: uvicorn's ClientDisconnected (an
# OSError), autobahn's Disconnected under daphne.
_GONE = (OSError, Disconnected)


class _SendsToClosedSocketsDropped(AsyncConsumer):
    async def send(self, message: dict[str, Any]) -> None:
        try:
            await super().send(message)
        except _GONE as exc:  # the client is gone
            logger.debug(
                "%s to a closed socket dropped (%s)", message.get("type"), type(exc).__name__
            )


# AsyncWebsocketConsumer.send(text_data=...) builds the message and passes it on with
# super().send(message), to the mixin's send below it in the MRO: Channels' own signature
# change (its stub ignores [override] too), so the two sends cannot agree.
class WebsocketConsumer(AsyncWebsocketConsumer, _SendsToClosedSocketsDropped):  # type: ignore[misc]
    """``AsyncWebsocketConsumer`` whose sends to a closed socket are dropped on every server,
    and whose failing channel layer is the subclass's to handle (:meth:`layer_failed`)."""

    # Channels sets channel_receive in __call__ (channels.consumer.AsyncConsumer, hence the
    # upper bound on channels in pyproject.toml). Left alone, a failing layer (Redis down) kills
    # the consumer at once with a traceback, and daphne drops the socket with the frames the
    # client had already sent. Here the failure goes to layer_failed, whose answer is handled
    # like any message the layer could have delivered.
    @property
    def channel_receive(self) -> Any:
        return self._receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive: Any) -> None:
        self._layer_receive = receive

    async def _receive_from_layer(self) -> dict[str, Any]:
        try:
            return await self._layer_receive()
        except Exception as exc:
            return await self.layer_failed(exc)

    async def layer_failed(self, exc: Exception) -> dict[str, Any]:
        """The channel layer failed to deliver: the message to handle instead (or raise)."""
        raise exc
