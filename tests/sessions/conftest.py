"""Sockets through the real ASGI application for the session consumer tests."""

from tests.terminals.conftest import (  # noqa: F401 (fixtures)
    close_worker_db_connections,
    fresh_channel_layer,
    ws_clients,
)
from tests.terminals.test_consumers import other_store, store  # noqa: F401 (fixtures)
