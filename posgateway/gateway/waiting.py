"""Waiting for a transaction to finish without holding a thread (a sync Terminal API request).

The waiter joins the transaction's channel-layer group (``frames.transaction_group``), which
delivery notifies whenever a result, a late result, a timeout or a failure of that transaction
is committed, on whichever process it happened (channels-redis carries it across processes).
It reads the database only when told, and, because the layer is at-most-once (a notification
may be dropped), again at growing intervals (``TERMINAL_API_RECHECK_S``, 1 s by default, then
2, 4, 8 s, then every 8 s). Between reads it is
a coroutine awaiting a future on the event loop: no worker thread is held, so hundreds of sync
requests can wait in one process while its sockets are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from channels.layers import get_channel_layer
from django.conf import settings

from posgateway.gateway import frames

logger = logging.getLogger("posgateway.realtime")

T = TypeVar("T")


async def wait_until_finished(
    *,
    group_id: int,
    transaction_id: str,
    check: Callable[[], Awaitable[T | None]],
    timeout: float,
) -> T | None:
    """What ``check()`` returns once it is not None (it reads the database), or None after
    ``timeout`` seconds. ``check`` runs first once the group is joined, so a result committed
    before the join is not missed."""
    layer = get_channel_layer()
    assert layer is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    group = frames.transaction_group(group_id, transaction_id)
    channel = await layer.new_channel()
    joined = False
    try:
        await layer.group_add(group, channel)
        joined = True
    except Exception as exc:  # the layer is down: the polls alone still answer
        logger.info("waiting on %s without the channel layer (%s)", transaction_id, exc)
    receiver: asyncio.Future | None = None
    interval = settings.TERMINAL_API_RECHECK_S
    longest = 8 * interval
    try:
        while True:
            result = await check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            pause = min(interval, remaining)
            interval = min(interval * 2, longest)
            if not joined:
                await asyncio.sleep(pause)
                continue
            if receiver is None or receiver.done():
                receiver = asyncio.ensure_future(layer.receive(channel))
            await asyncio.wait({receiver}, timeout=pause)
            if receiver.done() and receiver.exception() is not None:
                await asyncio.sleep(pause)  # a failing layer: poll, do not spin
    finally:
        if receiver is not None and not receiver.done():
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
        if joined:
            with contextlib.suppress(Exception):
                await layer.group_discard(group, channel)
