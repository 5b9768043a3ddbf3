import contextlib

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connections

from posgateway.asgi import application
from posgateway.gateway.layers import RedisChannelLayer


def _close_thread_connections() -> None:
    for conn in connections.all(initialized_only=True):
        conn.close()


@pytest.fixture
async def close_worker_db_connections():
    """Close the connections consumers opened in Channels' database worker thread.

    Left open, they outlive the test and block the PostgreSQL test database's flush and its
    teardown. ``database_sync_to_async`` runs on that same worker thread.
    """
    yield
    await database_sync_to_async(_close_thread_connections)()


@pytest.fixture
async def fresh_channel_layer(monkeypatch):
    """A new channel layer per test: each test runs on its own event loop.

    channels-redis binds its receive lock and connection pools to the loop that first used
    them; a layer shared across tests fails with "bound to a different event loop".

    A closed socket's blocking pop (BZPOPMIN) runs to its end (posgateway.gateway.layers), up to
    channels-redis's ``brpop_timeout`` of 5 s, and closing the pools waits for it: a short
    timeout here keeps each test's teardown under a second instead of five.
    """
    monkeypatch.setattr(RedisChannelLayer, "brpop_timeout", 0.2)
    channel_layers.backends.clear()
    yield
    for layer in list(channel_layers.backends.values()):
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            await close_pools()
    channel_layers.backends.clear()


@pytest.fixture
async def ws_clients(close_worker_db_connections, fresh_channel_layer):
    """Open gateway sockets through the real ASGI application; all are closed after the test."""
    opened: list[WebsocketCommunicator] = []

    def open_socket(path: str = "/ws/", headers=None) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, path, headers=headers or [])
        opened.append(communicator)
        return communicator

    yield open_socket
    for communicator in opened:
        if not communicator.future.done():
            # An application that failed has already failed its own test.
            with contextlib.suppress(Exception):
                await communicator.disconnect(code=1000, timeout=5)
