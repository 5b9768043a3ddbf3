"""Flood guards: frames per connection, live connections per store, handshakes per address."""

from __future__ import annotations

import asyncio

import pytest

from posgateway.core.ratelimit import AddressLimiter
from posgateway.gateway import consumers
from terminals.models import DeviceType
from tests.factories import make_device, make_group
from tests.terminals.test_consumers import (
    TIMEOUT,
    assert_error,
    assert_still_open,
    bearer,
    connect,
    db,
    receive_close_code,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_handshake_limiter(monkeypatch):
    monkeypatch.setattr(consumers, "HANDSHAKES", AddressLimiter())


async def test_a_frame_flood_gets_too_many_requests_and_the_socket_stays_open(ws_clients, settings):
    settings.WS_FRAMES_PER_S = 1
    settings.WS_FRAMES_BURST = 5
    _, key = await db(make_device)("store-a", DeviceType.DESKTOP, "POS-1")
    desktop, _ = await connect(ws_clients, key)

    for _ in range(12):
        await desktop.send_json_to({"action": "ping"})
    replies = [await desktop.receive_json_from(timeout=TIMEOUT) for _ in range(12)]

    assert [r.get("action") for r in replies[:5]] == ["pong"] * 5
    limited = [r for r in replies if "error" in r]
    assert len(limited) >= 6
    assert_error(
        limited[0],
        "Too Many Requests",
        "Rate limit exceeded: at most 1 frames/s",
        requestAction=None,
    )
    await asyncio.sleep(1.2)  # the bucket refills at 1 frame/s: the connection works again
    await assert_still_open(desktop)


async def test_a_store_full_of_live_connections_refuses_one_more_device(ws_clients, settings):
    settings.MAX_CONNECTIONS_PER_STORE = 2
    group = await db(make_group)("store-a")
    keys = [(await db(make_device)(group, DeviceType.TERMINAL, f"T-{n}"))[1] for n in range(3)]
    _, other_key = await db(make_device)("store-b", DeviceType.TERMINAL, "T-0")
    await connect(ws_clients, keys[0])
    await connect(ws_clients, keys[1])

    third = ws_clients("/ws/", bearer(keys[2]))
    accepted, _ = await third.connect(timeout=TIMEOUT)
    assert accepted
    assert_error(
        await third.receive_json_from(timeout=TIMEOUT),
        "Too Many Requests",
        "The store has reached 2 live connections",
    )
    assert await receive_close_code(third) == 4429
    # The same device reconnecting replaces its connection; other stores are unaffected.
    await connect(ws_clients, keys[0])
    await connect(ws_clients, other_key)


async def test_a_handshake_flood_from_one_address_is_refused_before_the_upgrade(
    ws_clients, settings
):
    settings.WS_HANDSHAKES_PER_S = 3
    _, key = await db(make_device)("store-a", DeviceType.DESKTOP, "POS-1")
    outcomes = []
    for _ in range(6):
        comm = ws_clients("/ws/", bearer(key))
        accepted, _ = await comm.connect(timeout=TIMEOUT)
        outcomes.append(accepted)
    assert outcomes[:3] == [True, True, True]
    assert False in outcomes[3:]
