"""Delivering what the domain published: events become channel-layer messages after commit.

Services publish events into an :class:`~posgateway.core.events.Outbox` (kept only if their
transaction commits); the caller (a consumer, a view, the sweeper, the admin) then calls
:func:`deliver` (or :func:`deliver_sync`), which turns each event into the frame for a device's
socket (``posgateway.gateway.frames``) or a message for a store's dashboards, and sends them:
the devices' first, then the dashboards'. A rolled-back service therefore sends nothing, and a
consumer sends without an extra thread hop.

A refused send is logged in one line, never with a traceback: the first refusal of an outage
also reports the channel layer down (one warning per process, see posgateway.core.health).
A refused hand-off of a request to a terminal (a payment, refund, display or input request)
schedules its retry (its ``on_fail``, run by the caller); the background sweep makes the
retries (posgateway.gateway.background, posgateway.core.forwarding).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from payments import services as payments
from payments.events import PaymentForwarded
from posgateway.core.events import Outbox
from posgateway.core.health import CHANNEL_LAYER, describe
from posgateway.gateway import frames
from sessions import services as sessions
from sessions.events import RequestForwarded
from terminals.events import ConnectionClosed, ConnectionReplaced

logger = logging.getLogger("posgateway.realtime")

OnFail = Callable[[Outbox], None]
Message = tuple[str, dict[str, Any], OnFail | None]
# (messages to devices' channels, messages to groups (dashboards, a transaction's waiters),
# channels joining groups (first of all))
Messages = tuple[list[Message], list[tuple[str, dict[str, Any]]], list[tuple[str, str]]]

# The message types the device consumer handles (GatewayConsumer.gateway_frame, ...).
FRAME = "gateway.frame"
CLOSE = "gateway.close"
FORCE_DISCONNECT = "gateway.force_disconnect"
REPLACED_REASON = "replaced by a newer connection"


@dataclass(frozen=True, slots=True)
class Push:
    """A frame an interface sends to a socket itself, after commit like the domain's events
    (the Terminal API's asynchronous answer)."""

    channel_name: str
    frame: dict[str, Any]
    # The frame as JSON already, when it holds what the layer cannot carry (a Terminal API
    # answer's amounts are Decimals, written exactly by posgateway.nexo.payments.dumps).
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Follow:
    """A device's socket joins a transaction's group (``frames.transaction_group``) to hear
    when it finishes: an asynchronous Terminal API payment answered on the desktop's socket.
    Joined before anything else of the outbox is sent, so before the terminal can answer."""

    group: str
    channel_name: str


def messages(events: list[Any]) -> Messages:
    """The channel-layer messages of ``events``: (to devices, to dashboard groups)."""
    to_devices: list[Message] = []
    to_groups: list[tuple[str, dict[str, Any]]] = []
    follows: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, Follow):
            follows.append((event.group, event.channel_name))
            continue
        if isinstance(event, Push):
            if event.text is None:
                message = {"type": FRAME, "frame": event.frame}
            else:
                message = {"type": FRAME, "frame": {"action": event.frame["action"]}}
                message["text"] = event.text
            to_devices.append((event.channel_name, message, None))
            continue
        if isinstance(event, ConnectionClosed):
            to_devices.append((event.channel_name, {"type": CLOSE, "code": event.code}, None))
            continue
        if isinstance(event, ConnectionReplaced):
            message = {"type": FORCE_DISCONNECT, "reason": REPLACED_REASON}
            to_devices.append((event.channel_name, message, None))
            continue
        channels = getattr(event, "desktop_channels", None) or [
            getattr(event, "channel_name", None)
        ]
        frame = frames.device_frame(event)
        if frame is not None:
            on_fail = _on_fail(event)
            for channel in channels:
                if channel is not None:
                    to_devices.append((channel, {"type": FRAME, "frame": frame}, on_fail))
        dashboard = frames.dashboard_event(event)
        if dashboard is not None:
            group_id, body = dashboard
            to_groups.append((frames.dashboard_group(group_id), frames.dashboard_message(body)))
        finished = frames.transaction_finished(event)
        if finished is not None:
            to_groups.append(finished)
    return to_devices, to_groups, follows


def _on_fail(event: Any) -> OnFail | None:
    """What follows a refused hand-over of this event: a request to a terminal is tried again
    (posgateway.core.forwarding); anything else is in the database for the next connect."""
    if isinstance(event, PaymentForwarded):
        return functools.partial(
            payments.payment_forward_failed,
            group_id=event.txn.group_id,
            transaction_id=event.txn.transaction_id,
        )
    if isinstance(event, RequestForwarded) and event.group_id:
        return functools.partial(
            sessions.request_forward_failed,
            group_id=event.group_id,
            request_id=event.request_id,
        )
    return None


def prepare(outbox: Outbox) -> Messages:
    """The messages of what ``outbox`` holds, taken from it. A consumer prepares them in the
    database thread hop that ran the service: the event loop, which serves every socket of
    the process, then only sends them (:func:`send`)."""
    return messages(outbox.take())


async def deliver(outbox: Outbox) -> list[OnFail]:
    """Send what ``outbox`` holds; returns the on_fail callbacks of the sends that failed."""
    return await send(prepare(outbox))


async def send(prepared: Messages) -> list[OnFail]:
    """Send prepared messages; returns the on_fail callbacks of the sends that failed.

    The layer is at-most-once: a send that "succeeds" may still be dropped, which is why
    every guarantee lives in the database and this is only the fast path.
    """
    to_devices, to_groups, follows = prepared
    failures: list[OnFail] = []
    if not to_devices and not to_groups and not follows:
        return failures
    layer = get_channel_layer()
    assert layer is not None  # settings.CHANNEL_LAYERS always has a default
    for group_name, channel_name in follows:
        try:
            await layer.group_add(group_name, channel_name)
        except Exception as exc:
            _refused(exc, f"join of {channel_name} to {group_name}", None)
    for channel_name, message, on_fail in to_devices:
        try:
            await layer.send(channel_name, message)
        except Exception as exc:
            _refused(exc, f"send of {_describe_message(message)} to {channel_name}", on_fail)
            if on_fail is not None:
                failures.append(on_fail)
        else:
            CHANNEL_LAYER.ok()
    for group_name, message in to_groups:
        try:
            await layer.group_send(group_name, message)
        except Exception as exc:
            _refused(exc, f"group send to {group_name}", None)
        else:
            CHANNEL_LAYER.ok()
    return failures


def deliver_sync(outbox: Outbox) -> list[OnFail]:
    """``deliver`` from synchronous code (views, admin, commands)."""
    return async_to_sync(deliver)(outbox)


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


async def run_failures(failures: list[OnFail]) -> None:
    """Run the on_fail callbacks of refused sends (in a database hop), then deliver what they
    published."""
    if not failures:
        return
    outbox = Outbox()

    def _run() -> None:
        for on_fail in failures:
            on_fail(outbox)

    await database_sync_to_async(_run)()
    await deliver(outbox)
