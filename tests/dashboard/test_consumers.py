"""The dashboard socket through the real ASGI application: login session, Origin, store scope."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client

from tests.dashboard.conftest import PASSWORD, staff

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
ORIGIN = b"http://127.0.0.1:8000"


def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def cookie_of(user) -> bytes:
    return await sync_to_async(_session_cookie)(user)


async def dashboard(ws_clients, cookie: bytes | None, origin: bytes | None = ORIGIN):
    """Open the dashboard socket; returns (communicator, accepted)."""
    headers = [(b"host", b"127.0.0.1:8000")]  # the page's own origin is ORIGIN
    if cookie:
        headers.append((b"cookie", cookie))
    if origin:
        headers.append((b"origin", origin))
    comm = ws_clients("/ws/dashboard/", headers)
    accepted, _ = await comm.connect(timeout=TIMEOUT)
    return comm, accepted


async def live_dashboard(ws_clients, user):
    comm, accepted = await dashboard(ws_clients, await cookie_of(user))
    assert accepted
    assert await comm.receive_json_from(timeout=TIMEOUT) == {"type": "ready", "stores": 1}
    return comm


async def device(ws_clients, key: str):
    """A device socket: key only, no Origin header (as POS and terminal clients connect)."""
    comm = ws_clients("/ws/", [(b"authorization", f"Bearer {key}".encode())])
    accepted, _ = await comm.connect(timeout=TIMEOUT)
    assert accepted
    frame = await comm.receive_json_from(timeout=TIMEOUT)
    assert frame["action"] == "connected", frame
    return comm


async def next_of_type(comm, kind: str, **match):
    """The next event of this type (and these fields), skipping others."""
    while True:
        event = await comm.receive_json_from(timeout=TIMEOUT)
        if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event


# --- Who may connect -------------------------------------------------------------------------


async def test_a_socket_without_a_login_is_refused(ws_clients):
    _, accepted = await dashboard(ws_clients, cookie=None)
    assert not accepted


async def test_a_made_up_session_cookie_is_refused(ws_clients):
    _, accepted = await dashboard(ws_clients, cookie=b"sessionid=not-a-session")
    assert not accepted


async def test_a_socket_from_another_origin_is_refused(ws_clients, alice):
    cookie = await cookie_of(alice)
    _, accepted = await dashboard(ws_clients, cookie, origin=b"https://evil.example")
    assert not accepted


async def test_a_socket_without_an_origin_is_refused(ws_clients, alice):
    _, accepted = await dashboard(ws_clients, await cookie_of(alice), origin=None)
    assert not accepted


async def test_a_user_who_is_not_staff_is_refused(ws_clients, db):
    user = await sync_to_async(get_user_model().objects.create_user)("mallory", password=PASSWORD)
    _, accepted = await dashboard(ws_clients, await cookie_of(user))
    assert not accepted


async def test_a_logged_out_session_is_refused(ws_clients, alice):
    def login_then_logout() -> bytes:
        client = Client()
        client.force_login(alice)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        client.post("/accounts/logout/")
        return cookie

    cookie = await sync_to_async(login_then_logout)()
    _, accepted = await dashboard(ws_clients, cookie)
    assert not accepted


async def test_device_sockets_still_need_no_origin(ws_clients, store_a):
    comm = await device(ws_clients, store_a.terminal_key)
    await comm.send_json_to({"action": "ping"})
    assert (await comm.receive_json_from(timeout=TIMEOUT))["action"] == "pong"


# --- What arrives ----------------------------------------------------------------------------


async def test_status_changes_of_the_users_store_arrive_and_other_stores_never(
    ws_clients, alice, bob, store_a, store_b
):
    watching_a = await live_dashboard(ws_clients, alice)
    watching_b = await live_dashboard(ws_clients, bob)

    # Store B's terminal first: had it leaked to Alice, it would be the first thing she gets.
    await device(ws_clients, store_b.terminal_key)
    assert await next_of_type(watching_b, "device", deviceId="TERM-1", status="online")
    await device(ws_clients, store_a.terminal_key)
    event = await watching_a.receive_json_from(timeout=TIMEOUT)
    assert event["type"] == "device"
    assert (event["deviceId"], event["deviceType"], event["status"]) == (
        "TERM-1",
        "terminal",
        "online",
    )
    assert event["timestamp"].endswith("Z")
    assert await watching_a.receive_nothing(timeout=0.3)
    assert await watching_b.receive_nothing(timeout=0.3)


async def test_a_payment_is_followed_live_from_request_to_delivery(ws_clients, alice, store_a):
    watching = await live_dashboard(ws_clients, alice)
    desk = await device(ws_clients, store_a.desktop_key)
    term = await device(ws_clients, store_a.terminal_key)

    await desk.send_json_to(
        {
            "action": "payment",
            "terminalId": "TERM-1",
            "paymentRequest": {"transactionId": "LIVE-1", "amount": "3.00", "currency": "EUR"},
        }
    )
    forwarded = await next_of_type(watching, "payment")
    assert forwarded["transactionId"] == "LIVE-1"
    assert (forwarded["status"], forwarded["step"]) == ("IN_PROGRESS", "forwarded")

    await term.receive_json_from(timeout=TIMEOUT)  # paymentRequest
    await term.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "LIVE-1", "status": "SUCCESS"},
        }
    )
    result = await next_of_type(watching, "payment")
    assert (result["status"], result["step"], result["late"]) == ("SUCCESS", "result", False)

    while (frame := await desk.receive_json_from(timeout=TIMEOUT))["action"] != "paymentComplete":
        pass
    await desk.send_json_to({"action": "ack", "seq": frame["seq"]})
    delivered = await next_of_type(watching, "payment", step="delivered")
    assert delivered["transactionIds"] == ["LIVE-1"]


async def test_a_superuser_hears_every_store(ws_clients, store_a, store_b):
    root = await sync_to_async(get_user_model().objects.create_superuser)(
        "root", "root@example.com", "pw-root-123"
    )
    comm, accepted = await dashboard(ws_clients, await cookie_of(root))
    assert accepted
    assert await comm.receive_json_from(timeout=TIMEOUT) == {"type": "ready", "stores": 2}
    for store in (store_a, store_b):
        await device(ws_clients, store.desktop_key)
        assert await next_of_type(comm, "device", deviceType="desktop", status="online")


async def test_a_member_of_two_stores_hears_both(ws_clients, store_a, store_b):
    carol = await sync_to_async(staff)("carol", store_a.slug, store_b.slug)
    comm, accepted = await dashboard(ws_clients, await cookie_of(carol))
    assert accepted
    assert (await comm.receive_json_from(timeout=TIMEOUT))["stores"] == 2


async def test_the_socket_answers_a_ping(ws_clients, alice):
    comm = await live_dashboard(ws_clients, alice)
    await comm.send_to(text_data='{"type":"ping"}')
    assert await comm.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await comm.send_to(text_data="anything else")
    assert await comm.receive_nothing(timeout=0.2)


# --- A login that ends, or loses a store, while its socket is open ----------------------------


async def _closed_with(comm) -> int:
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message.get("code")


def _logged_in_client(user) -> tuple[Client, bytes]:
    client = Client()
    client.force_login(user)
    return client, f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
def recheck_every_event(settings):
    settings.DASHBOARD_RECHECK_S = 0


async def test_a_member_removed_from_a_store_stops_hearing_it_at_once(
    ws_clients, recheck_every_event, alice, bob, store_a, store_b
):
    watching_a = await live_dashboard(ws_clients, alice)
    watching_b = await live_dashboard(ws_clients, bob)
    await sync_to_async(alice.stores.remove)(store_a.group)

    await device(ws_clients, store_a.terminal_key)
    assert await _closed_with(watching_a) == 4403  # and nothing of store A before it
    # Its reconnect joins what she belongs to now: no store, so it is refused.
    _, accepted = await dashboard(ws_clients, await cookie_of(alice))
    assert not accepted
    # Bob's login still holds: checked, and passed on.
    await device(ws_clients, store_b.terminal_key)
    assert await next_of_type(watching_b, "device", deviceId="TERM-1", status="online")


async def test_a_member_moved_to_another_store_reconnects_to_that_one(
    ws_clients, recheck_every_event, alice, store_a, store_b
):
    watching = await live_dashboard(ws_clients, alice)
    await sync_to_async(alice.stores.set)([store_b.group])
    await device(ws_clients, store_a.desktop_key)
    assert await _closed_with(watching) == 4403

    again = await live_dashboard(ws_clients, alice)
    await device(ws_clients, store_b.desktop_key)
    event = await again.receive_json_from(timeout=TIMEOUT)
    assert (event["type"], event["deviceType"], event["status"]) == ("device", "desktop", "online")


@pytest.mark.parametrize("ending", ["log out", "deactivated", "password changed"])
async def test_a_login_that_ended_closes_its_socket_before_the_next_event(
    ws_clients, recheck_every_event, alice, store_a, ending
):
    client, cookie = await sync_to_async(_logged_in_client)(alice)
    comm, accepted = await dashboard(ws_clients, cookie)
    assert accepted
    assert (await comm.receive_json_from(timeout=TIMEOUT))["type"] == "ready"

    def end_it() -> None:
        if ending == "log out":
            assert client.post("/accounts/logout/").status_code == 302
        elif ending == "deactivated":
            alice.is_active = False
            alice.save(update_fields=["is_active"])
        else:
            alice.set_password("a new password entirely")
            alice.save(update_fields=["password"])

    await sync_to_async(end_it)()
    await device(ws_clients, store_a.terminal_key)
    assert await _closed_with(comm) == 4401
    _, accepted = await dashboard(ws_clients, cookie)
    assert not accepted


async def test_the_check_is_kept_on_the_socket_for_a_while(ws_clients, settings, alice, store_a):
    """Not a session read per event: a check holds for DASHBOARD_RECHECK_S (2 s by default)."""
    settings.DASHBOARD_RECHECK_S = 3600
    watching = await live_dashboard(ws_clients, alice)
    await sync_to_async(alice.stores.remove)(store_a.group)
    await device(ws_clients, store_a.terminal_key)
    assert (await watching.receive_json_from(timeout=TIMEOUT))["type"] == "device"


# --- The channel layer fails (Redis down) -------------------------------------------------------


async def test_a_lost_channel_layer_closes_the_page_socket_with_one_warning(
    ws_clients, alice, monkeypatch, caplog
):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    down = asyncio.Event()

    async def receive_until_down(channel: str):
        await down.wait()
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(layer, "receive", receive_until_down)
    comm = await live_dashboard(ws_clients, alice)

    down.set()
    closed = await comm.receive_output(timeout=TIMEOUT)

    # The page sees the socket close (and shows "degraded", then reconnects by itself).
    assert closed == {"type": "websocket.close", "code": 4503}
    warnings = [r for r in caplog.records if "channel layer unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "dashboard receive" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_the_page_socket_closes_degraded_while_the_channel_layer_is_down(
    ws_clients, alice, monkeypatch, caplog
):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()

    async def group_add_fails(group: str, channel: str):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(layer, "group_add", group_add_fails)
    comm, accepted = await dashboard(ws_clients, await cookie_of(alice))

    # Accepted only to close with the code the page shows as "degraded"; no "ready".
    assert accepted
    closed = await comm.receive_output(timeout=TIMEOUT)
    assert closed == {"type": "websocket.close", "code": 4503}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
