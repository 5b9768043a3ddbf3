"""The channel layers: an in-process one for the embedded default, channels-redis's with one fix.

The embedded default's in-memory layer is the one of Channels, rewritten for many sockets
(docs/performance.md, step 3). Channels' ``InMemoryChannelLayer``:

- walks every channel and every group member (``_clean_expired``) on every ``receive`` and
  ``group_send``; with thousands of sockets open that walk was most of the cost of a message;
- builds a new ``asyncio.Queue`` on every ``send`` and ``receive`` (``setdefault``'s default is
  evaluated even when the queue exists), and keeps one per waiting socket (~3 KiB each);
- starts a task per member in ``group_send``, and draws 12 random letters one at a time for
  every ``new_channel``.

This one keeps its behaviour (messages copied, per-channel capacity and ``ChannelFull``,
expiry with removal from groups, group expiry, ``flush``) with O(1) sends and receives: a
channel is a deque of messages and the futures of the receivers waiting on it; expiry is swept
at most once per ``clean_interval`` (messages may live up to that much longer than ``expiry``);
a receiver cancelled after being woken passes the message on, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from copy import deepcopy

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisChannelLayer

logger = logging.getLogger("posgateway.layers")


class _Channel:
    """One channel's messages (oldest first) and the receivers waiting for one."""

    __slots__ = ("messages", "waiters")

    def __init__(self) -> None:
        self.messages: deque[tuple[float, dict]] = deque()
        self.waiters: list[asyncio.Future] = []

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class InMemoryChannelLayer(BaseChannelLayer):
    """Channels' in-memory layer (one process), O(1) per message; see the module's docstring."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict | None = None,
        clean_interval: float = 1.0,
        **kwargs,
    ) -> None:
        # The stub says int; BaseChannelLayer only stores it, _put adds it to time.time() (the
        # tests expire messages after 0.05 s).
        super().__init__(
            expiry=expiry,  # type: ignore[arg-type]
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self.channels: dict[str, _Channel] = {}
        self.groups: dict[str, dict[str, float]] = {}
        self.group_expiry = group_expiry
        self.clean_interval = clean_interval
        self._cleaned_at = float("-inf")
        self._names = itertools.count(1)
        self._token = secrets.token_hex(4)  # channel names are unique per layer, not guessable

    # --- channels ---

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    def _put(self, channel: str, message: dict) -> None:
        state = self.channels.get(channel)
        if state is None:
            state = self.channels[channel] = _Channel()
        if len(state.messages) >= self.get_capacity(channel):
            raise ChannelFull(channel)
        state.messages.append((time.time() + self.expiry, deepcopy(message)))
        state.wake_one()

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        state = self.channels.get(channel)
        if state is None:
            state = self.channels[channel] = _Channel()
        while not state.messages:
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in state.waiters:
                    state.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and state.messages:
                    state.wake_one()  # woken for a message it will not take: the next one takes it
                self._forget_if_idle(channel, state)
                raise
        _, message = state.messages.popleft()
        self._forget_if_idle(channel, state)
        return message

    def _forget_if_idle(self, channel: str, state: _Channel) -> None:
        if not state.messages and not state.waiters and self.channels.get(channel) is state:
            del self.channels[channel]

    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{prefix}.inmemory!{self._token}{next(self._names)}"

    # --- expiry ---

    def _clean_expired(self) -> None:
        """Drop expired messages (their channel leaves every group) and expired memberships;
        at most once per ``clean_interval``."""
        now = time.monotonic()
        if now - self._cleaned_at < self.clean_interval:
            return
        self._cleaned_at = now
        wall = time.time()
        for channel, state in list(self.channels.items()):
            if state.messages and state.messages[0][0] < wall:
                while state.messages and state.messages[0][0] < wall:
                    state.messages.popleft()
                self._remove_from_groups(channel)
                self._forget_if_idle(channel, state)
        oldest = int(wall) - self.group_expiry
        for members in self.groups.values():
            for channel, joined in list(members.items()):
                if joined and joined < oldest:
                    del members[channel]

    def _remove_from_groups(self, channel: str) -> None:
        for members in self.groups.values():
            members.pop(channel, None)

    # --- groups ---

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, {})[channel] = time.time()

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        members = self.groups.get(group)
        if members:
            members.pop(channel, None)
            if not members:
                del self.groups[group]

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)

    # --- flush extension ---

    async def flush(self) -> None:
        self.channels = {}
        self.groups = {}

    async def close(self) -> None:
        pass


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
