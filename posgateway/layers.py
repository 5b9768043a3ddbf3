"""The channel layers: Channels' and channels-redis's own, each with one fix.

The embedded default's in-memory layer, without its O(n) sweep per message:

Channels' ``InMemoryChannelLayer`` runs ``_clean_expired`` on every ``receive`` and every
``group_send``: a walk over every channel with a queue (each socket waiting for a message has
one) and over every group member. With thousands of sockets open that walk is most of the cost
of a message (docs/performance.md). Expiry only needs to be roughly on time (messages live
``expiry`` seconds, 60 by default), so here the walk runs at most once per ``clean_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.exceptions
from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

logger = logging.getLogger("posgateway.layers")


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    def __init__(self, *, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clean_interval = clean_interval
        self._cleaned_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_interval:
            return
        self._cleaned_at = now
        super()._clean_expired()


# channels-redis's own script: backed-up messages go back to the front of the inbox.
_RESTORE_BACKUP = """
    local backed_up = redis.call('ZRANGE', ARGV[2], 0, -1, 'WITHSCORES')
    for i = #backed_up, 1, -2 do
        redis.call('ZADD', ARGV[1], backed_up[i], backed_up[i - 1])
    end
    redis.call('DEL', ARGV[2])
"""
# One message from the backup queue back into the inbox, if it is still in the backup.
_REQUEUE_ONE = """
    local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
    if score then
        redis.call('ZREM', KEYS[2], ARGV[1])
        redis.call('ZADD', KEYS[1], score, ARGV[1])
    end
"""


class RedisChannelLayer(ChannelsRedisChannelLayer):
    """channels-redis, with its blocking pop made safe against cancellation.

    All sockets of one process share one Redis inbox; whichever consumer holds the receive lock
    pops the next message with BZPOPMIN and hands it to its addressee. BZPOPMIN is destructive
    and the copy to the backup queue is a second command. A consumer that ends at that moment
    (its socket closed) is cancelled between the two, and the message it popped *for another
    socket of the process* was lost: a dashboard event, a terminalStatusUpdate, a request.

    Here the pop runs to completion whatever happens to its caller. When the caller is gone, a
    popped message goes straight back into the inbox (where the next receiver pops it), never
    into the backup queue: that queue's cleaner assumes one pop at a time per inbox and removes
    its oldest entry, which must be the message it just handled.
    """

    async def _brpop_with_clean(self, index, channel, timeout):
        backup_queue = self._backup_channel_name(channel)
        connection = self.connection(index)
        caller_gone = False

        async def pop():
            await connection.eval(_RESTORE_BACKUP, 0, channel, backup_queue)
            result = await connection.bzpopmin(channel, timeout=timeout)
            if result is None:
                return None
            _, member, timestamp = result
            if caller_gone:
                await connection.zadd(channel, {member: float(timestamp)})
                return None
            await connection.zadd(backup_queue, {member: float(timestamp)})
            return member

        task = asyncio.ensure_future(pop())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            caller_gone = True
            if task.done() and not task.cancelled() and task.exception() is None:
                member = task.result()
                if member is not None:  # popped and backed up, but nobody will handle it
                    requeue = connection.eval(_REQUEUE_ONE, 2, channel, backup_queue, member)
                    asyncio.ensure_future(requeue).add_done_callback(_consume_outcome)
            else:
                task.add_done_callback(_consume_outcome)
            raise

    async def _clean_receive_backup(self, index, channel):
        """channels-redis runs this in a task nobody awaits: with Redis gone right after a pop,
        its error was logged by asyncio as a traceback ("Task exception was never retrieved").
        The message was handled; its backup copy stays and is restored into the inbox by the
        next receive, so it may be delivered twice, which every receiver tolerates."""
        try:
            await super()._clean_receive_backup(index, channel)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            logger.warning("channel layer: backup of a handled message not cleared: %s", exc)


def _consume_outcome(task: asyncio.Future) -> None:
    """An orphaned pop's error (Redis gone) is the next receiver's to meet, not an 'exception
    was never retrieved' warning."""
    if not task.cancelled():
        task.exception()
