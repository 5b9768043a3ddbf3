"""Publishing to sockets after commit.

Services never talk to the channel layer while their transaction is open: they put messages
in an :class:`Outbox` through ``transaction.on_commit``, and the caller (a consumer, a view,
the sweeper) flushes it once the service returned. A rolled-back service therefore sends
nothing, and a consumer sends without an extra thread hop.

A refused send is logged in one line, never with a traceback: the first refusal of an outage
also reports the channel layer down (one warning per process, see posgateway.health).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.db import transaction

from posgateway.health import CHANNEL_LAYER, describe

logger = logging.getLogger("posgateway.realtime")

OnFail = Callable[["Outbox"], None]


class Outbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], OnFail | None]] = []
        # Messages for channel-layer groups (the staff dashboards), kept apart: nothing waits
        # for them, and they are sent after the frames to the devices.
        self.group_messages: list[tuple[str, dict[str, Any]]] = []

    def send(
        self, channel_name: str, message: dict[str, Any], on_fail: OnFail | None = None
    ) -> None:
        """Queue a channel-layer message, released only if the current transaction commits.

        ``on_fail`` is a sync callable run by the caller (in a database hop) if the layer
        refuses the message, e.g. to fail a payment that could not be forwarded.
        """
        transaction.on_commit(lambda: self.messages.append((channel_name, message, on_fail)))

    def frame(
        self, channel_name: str, frame: dict[str, Any], on_fail: OnFail | None = None
    ) -> None:
        """Queue a JSON frame for the socket behind ``channel_name``."""
        self.send(channel_name, {"type": "gateway.frame", "frame": frame}, on_fail)

    def group(self, group_name: str, message: dict[str, Any]) -> None:
        """Queue a message for every socket in a channel-layer group, released on commit.

        Best effort like every layer message: a refused group send is logged, never retried.
        """
        transaction.on_commit(lambda: self.group_messages.append((group_name, message)))

    async def flush(self) -> list[OnFail]:
        """Send what was queued; returns the on_fail callbacks of the sends that failed.

        The layer is at-most-once: a send that "succeeds" may still be dropped, which is why
        every guarantee lives in the database and this is only the fast path.
        """
        messages, self.messages = self.messages, []
        groups, self.group_messages = self.group_messages, []
        failures: list[OnFail] = []
        if not messages and not groups:
            return failures
        layer = get_channel_layer()
        for channel_name, message, on_fail in messages:
            try:
                await layer.send(channel_name, message)
            except Exception as exc:
                _refused(exc, f"send of {_describe_message(message)} to {channel_name}", on_fail)
                if on_fail is not None:
                    failures.append(on_fail)
            else:
                CHANNEL_LAYER.ok()
        for group_name, message in groups:
            try:
                await layer.group_send(group_name, message)
            except Exception as exc:
                _refused(exc, f"group send to {group_name}", None)
            else:
                CHANNEL_LAYER.ok()
        return failures

    def flush_sync(self) -> list[OnFail]:
        """Flush from synchronous code (views, admin, commands)."""
        return async_to_sync(self.flush)()


def _describe_message(message: dict[str, Any]) -> str:
    """``paymentRequest transactionId=T-1``: what a message carried, for the log."""
    frame = message.get("frame")
    if not isinstance(frame, dict):
        return str(message.get("type", "message"))
    tid = frame.get("transactionId")
    for key in ("paymentRequest", "paymentResponse"):
        if tid is None and isinstance(frame.get(key), dict):
            tid = frame[key].get("transactionId")
    what = str(frame.get("action", "frame"))
    return f"{what} transactionId={tid}" if tid is not None else what


def _refused(exc: BaseException, what: str, on_fail: OnFail | None) -> None:
    """One line per refused send; the first of an outage also reports the layer down.

    A send with ``on_fail`` costs something (the caller fails a payment): that is a warning.
    The others are only the fast path: what they carried is in the database, and sockets get
    it again when the layer is back (dashboards on their next fetch).
    """
    if isinstance(exc, ChannelFull):  # the receiving process is behind, the layer is fine
        logger.warning("channel layer %s failed: the channel is full", what)
        return
    CHANNEL_LAYER.failed(exc, f"{what} failed")
    if on_fail is not None:
        logger.warning("channel layer %s failed (%s)", what, describe(exc))
    else:
        logger.info("channel layer %s failed (%s)", what, describe(exc))
