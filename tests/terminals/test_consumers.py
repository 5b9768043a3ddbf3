"""The WebSocket gateway through the real ASGI application, with Channels' communicator."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from payments.models import DesktopMessage, Transaction, TransactionEvent
from posgateway.core.events import Outbox
from posgateway.gateway.consumers import GatewayConsumer
from posgateway.gateway.heartbeat import write_local_activity
from terminals import services
from terminals.models import Connection, Device, DeviceType
from tests.factories import make_device, make_group

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TERMINAL_FIELDS = {"connectionId", "deviceId", "connectedAt", "lastActivity", "status", "metadata"}
ERROR_EXTRAS = {"requestAction", "transactionId", "inFlightTransactionId"}
VISA = "4111111111111111"


# --- helpers ---------------------------------------------------------------------------------


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


async def connect(
    ws_clients, key: str | None = None, *, path: str = "/ws/", headers=None
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """Open an authorised socket and return it with its ``connected`` frame."""
    comm = ws_clients(path, bearer(key) if key is not None else headers)
    accepted, _ = await comm.connect(timeout=TIMEOUT)
    assert accepted
    frame = await comm.receive_json_from(timeout=TIMEOUT)
    assert frame["action"] == "connected", frame
    return comm, frame


async def request(comm: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await comm.send_json_to(frame)
    return await comm.receive_json_from(timeout=TIMEOUT)


async def request_text(comm: WebsocketCommunicator, text: str) -> dict[str, Any]:
    await comm.send_to(text_data=text)
    return await comm.receive_json_from(timeout=TIMEOUT)


async def receive_close_code(comm: WebsocketCommunicator) -> int:
    message = await comm.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", message
    return message.get("code", 1000)


async def assert_still_open(comm: WebsocketCommunicator) -> None:
    reply = await request(comm, {"action": "ping"})
    assert reply["action"] == "pong"


def assert_error(frame: dict[str, Any], error: str, message: str, **extra: Any) -> None:
    assert frame["error"] == error, frame
    assert frame["message"] == message, frame
    assert set(frame) - {"error", "message"} <= ERROR_EXTRAS, frame
    for key, value in extra.items():
        assert frame.get(key) == value, frame


def payment(
    tid: str = "TXN-1",
    *,
    terminal: str = "TERM-1",
    amount: Any = "12.30",
    currency: str = "USD",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "action": "payment",
        "terminalId": terminal,
        "paymentRequest": {"transactionId": tid, "amount": amount, "currency": currency, **fields},
    }


def result(tid: str = "TXN-1", status: str = "SUCCESS", **fields: Any) -> dict[str, Any]:
    return {
        "action": "paymentResponse",
        "paymentResponse": {"transactionId": tid, "status": status, **fields},
    }


db = database_sync_to_async


def stored_state() -> dict[str, Any]:
    return {
        "transactions": Transaction.objects.count(),
        "events": TransactionEvent.objects.count(),
        "desktop_messages": DesktopMessage.objects.count(),
        "acked": DesktopMessage.objects.filter(acked_at__isnull=False).count(),
        "statuses": list(
            Transaction.objects.order_by("pk").values_list("transaction_id", "status", "amount")
        ),
    }


@pytest.fixture
def store():
    group = make_group("store-a")
    desktop, desktop_key = make_device(group, DeviceType.DESKTOP, "POS-1")
    terminal, terminal_key = make_device(group, DeviceType.TERMINAL, "TERM-1")
    return SimpleNamespace(
        group=group,
        desktop=desktop,
        desktop_key=desktop_key,
        terminal=terminal,
        terminal_key=terminal_key,
    )


@pytest.fixture
def other_store():
    group = make_group("store-b")
    desktop, desktop_key = make_device(group, DeviceType.DESKTOP, "POS-1")
    terminal, terminal_key = make_device(group, DeviceType.TERMINAL, "TERM-9")
    return SimpleNamespace(
        group=group,
        desktop=desktop,
        desktop_key=desktop_key,
        terminal=terminal,
        terminal_key=terminal_key,
    )


async def connect_pair(ws_clients, store):
    """Terminal first, then the desktop (so the desktop has no status update queued)."""
    terminal, terminal_hello = await connect(ws_clients, store.terminal_key)
    desktop, desktop_hello = await connect(ws_clients, store.desktop_key)
    return terminal, terminal_hello, desktop, desktop_hello


# --- connecting ------------------------------------------------------------------------------


async def test_header_key_connects_and_connected_frame_describes_the_device(ws_clients, store):
    comm, hello = await connect(ws_clients, store.desktop_key)

    assert set(hello) == {
        "action",
        "connectionId",
        "deviceId",
        "deviceType",
        "group",
        "timestamp",
    }
    assert hello["deviceId"] == "POS-1"
    assert hello["deviceType"] == "desktop"
    assert hello["group"] == "store-a"
    assert ISO_Z.match(hello["timestamp"])
    assert isinstance(hello["connectionId"], str)
    assert hello["connectionId"]
    conn = await db(Connection.objects.get)(connection_id=hello["connectionId"])
    assert conn.device_id == store.desktop.pk
    assert conn.closed_at is None
    await assert_still_open(comm)


@pytest.mark.parametrize("path", ["/ws/?key={key}", "/ws?key={key}"])
async def test_query_key_connects_with_and_without_trailing_slash(ws_clients, store, path):
    comm, hello = await connect(ws_clients, path=path.format(key=store.terminal_key))

    assert hello["deviceId"] == "TERM-1"
    assert hello["deviceType"] == "terminal"
    await assert_still_open(comm)


async def test_each_connection_gets_a_new_connection_id(ws_clients, store):
    first, first_hello = await connect(ws_clients, store.desktop_key)
    await first.disconnect(code=1000)
    _, second_hello = await connect(ws_clients, store.desktop_key)

    assert first_hello["connectionId"] != second_hello["connectionId"]


async def test_header_key_wins_over_query_key(ws_clients, store):
    good_header = ws_clients("/ws/?key=wrong-key", bearer(store.desktop_key))
    assert (await good_header.connect(timeout=TIMEOUT))[0]
    assert (await good_header.receive_json_from(timeout=TIMEOUT))["action"] == "connected"

    bad_header = ws_clients(f"/ws/?key={store.desktop_key}", bearer("wrong-key"))
    assert (await bad_header.connect(timeout=TIMEOUT))[0]
    assert_error(
        await bad_header.receive_json_from(timeout=TIMEOUT),
        "Unauthorized",
        "A valid API key is required",
    )
    assert await receive_close_code(bad_header) == 4401


async def test_device_without_device_id_reports_null(ws_clients, store):
    _, key = await db(make_device)(store.group, DeviceType.TERMINAL, None)

    _, hello = await connect(ws_clients, key)

    assert hello["deviceId"] is None


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Bearer not-a-key")],
        [(b"authorization", b"Bearer ")],
        [(b"authorization", b"Token something")],
    ],
    ids=["no-key", "wrong-key", "empty-bearer", "other-scheme"],
)
async def test_unauthorised_socket_gets_error_frame_and_close_4401(ws_clients, store, headers):
    comm = ws_clients("/ws/", headers)
    accepted, _ = await comm.connect(timeout=TIMEOUT)

    assert accepted
    assert await comm.receive_json_from(timeout=TIMEOUT) == {
        "error": "Unauthorized",
        "message": "A valid API key is required",
    }
    assert await receive_close_code(comm) == 4401
    assert await db(Connection.objects.count)() == 0


async def test_deactivated_device_is_unauthorised(ws_clients, store):
    await db(services.device_deactivate)(device=store.terminal, outbox=Outbox())
    comm = ws_clients("/ws/", bearer(store.terminal_key))
    await comm.connect(timeout=TIMEOUT)

    assert_error(
        await comm.receive_json_from(timeout=TIMEOUT),
        "Unauthorized",
        "A valid API key is required",
    )
    assert await receive_close_code(comm) == 4401


async def test_frames_from_an_unauthorised_socket_get_no_answer(ws_clients, store):
    comm = ws_clients("/ws/", [])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_json_from(timeout=TIMEOUT)
    assert await receive_close_code(comm) == 4401

    await comm.send_json_to({"action": "getTerminals"})

    assert await comm.receive_nothing(timeout=0.3)


# --- getTerminals and ping -------------------------------------------------------------------


async def test_get_terminals_lists_every_terminal_of_the_store_offline_ones_included(
    ws_clients, store, other_store
):
    await db(make_device)(store.group, DeviceType.TERMINAL, "TERM-2")
    await db(make_device)(store.group, DeviceType.TERMINAL, None)
    await db(Device.objects.filter(pk=store.terminal.pk).update)(metadata={"lane": 3})
    await connect(ws_clients, other_store.terminal_key)  # online, but another store's
    _, terminal_hello, desktop, _ = await connect_pair(ws_clients, store)

    reply = await request(desktop, {"action": "getTerminals"})

    assert set(reply) == {"action", "terminals", "timestamp"}
    assert reply["action"] == "terminalsResponse"
    assert ISO_Z.match(reply["timestamp"])
    assert all(set(t) == TERMINAL_FIELDS for t in reply["terminals"])
    by_id = {t["deviceId"]: t for t in reply["terminals"]}
    assert set(by_id) == {None, "TERM-1", "TERM-2"}
    assert len(reply["terminals"]) == 3
    online = by_id["TERM-1"]
    assert online["status"] == "online"
    assert online["connectionId"] == terminal_hello["connectionId"]
    assert ISO_Z.match(online["connectedAt"])
    assert ISO_Z.match(online["lastActivity"])
    assert online["metadata"] == {"lane": 3}
    for offline in (by_id["TERM-2"], by_id[None]):
        assert offline == {
            "connectionId": None,
            "deviceId": offline["deviceId"],
            "connectedAt": None,
            "lastActivity": None,
            "status": "offline",
            "metadata": {},
        }
    assert "TERM-9" not in by_id
    assert "POS-1" not in by_id


async def test_terminal_cannot_list_terminals(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)

    reply = await request(terminal, {"action": "getTerminals"})

    assert_error(
        reply,
        "Forbidden",
        "Only desktop devices can request terminal list",
        requestAction="getTerminals",
    )
    await assert_still_open(terminal)


@pytest.mark.parametrize("who", ["desktop_key", "terminal_key"])
async def test_ping_is_answered_with_pong(ws_clients, store, who):
    comm, _ = await connect(ws_clients, getattr(store, who))

    reply = await request(comm, {"action": "ping"})

    assert set(reply) == {"action", "timestamp"}
    assert reply["action"] == "pong"
    assert ISO_Z.match(reply["timestamp"])


# --- the seed's errors, and frames that are not what the protocol expects --------------------


async def test_malformed_json_is_invalid_json_in_message_body(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    for text in (
        "not json",
        "{",
        '{"action": "ping",}',
        '{"action": "ping", "x": NaN}',
        '{"action": "ping", "x": Infinity}',
        '{"action": "ping", "x": -Infinity}',
    ):
        reply = await request_text(desktop, text)

        assert_error(reply, "Bad Request", "Invalid JSON in message body")
    await assert_still_open(desktop)


@pytest.mark.parametrize("terminal_id", [None, ""])
async def test_payment_without_terminal_id_is_bad_request(ws_clients, store, terminal_id):
    _, _, desktop, _ = await connect_pair(ws_clients, store)
    frame = payment()
    if terminal_id is None:
        del frame["terminalId"]
    else:
        frame["terminalId"] = terminal_id

    reply = await request(desktop, frame)

    assert_error(reply, "Bad Request", "terminalId is required", requestAction="payment")


async def test_payment_without_payment_request_is_bad_request(ws_clients, store):
    _, _, desktop, _ = await connect_pair(ws_clients, store)

    reply = await request(desktop, {"action": "payment", "terminalId": "TERM-1"})

    assert_error(reply, "Bad Request", "paymentRequest is required", requestAction="payment")


@pytest.mark.parametrize(
    "terminal_id", ["NO-SUCH-TERMINAL", "TERM-2", "POS-1"], ids=["unknown", "offline", "desktop"]
)
async def test_payment_to_a_terminal_that_is_not_connected_is_not_found(
    ws_clients, store, terminal_id
):
    await db(make_device)(store.group, DeviceType.TERMINAL, "TERM-2")
    _, _, desktop, _ = await connect_pair(ws_clients, store)

    reply = await request(desktop, payment(terminal=terminal_id))

    assert_error(reply, "Not Found", "Terminal connection not found", requestAction="payment")
    assert await db(Transaction.objects.count)() == 0


async def test_payment_to_another_stores_connection_is_forbidden(ws_clients, store, other_store):
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    foreign, foreign_hello = await connect(ws_clients, other_store.terminal_key)

    reply = await request(desktop, payment(terminal=foreign_hello["connectionId"]))

    assert_error(
        reply,
        "Forbidden",
        "Cannot send message to connection in different group",
        requestAction="payment",
    )
    assert await foreign.receive_nothing(timeout=0.3)
    assert await terminal.receive_nothing(timeout=0.1)
    assert await db(Transaction.objects.count)() == 0


async def test_another_stores_device_id_is_not_found_not_forbidden(ws_clients, store, other_store):
    _, _, desktop, _ = await connect_pair(ws_clients, store)
    await connect(ws_clients, other_store.terminal_key)

    reply = await request(desktop, payment(terminal="TERM-9"))

    assert_error(reply, "Not Found", "Terminal connection not found")


async def test_server_side_failure_is_failed_to_process_message(ws_clients, store, monkeypatch):
    from payments import services as payment_services

    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(payment_services, "payment_status", explode)
    desktop, _ = await connect(ws_clients, store.desktop_key)

    reply = await request(desktop, {"action": "getTransactionStatus", "transactionId": "TXN-1"})

    assert_error(reply, "Internal Server Error", "Failed to process message")
    assert "secret" not in str(reply)
    await assert_still_open(desktop)


async def test_a_database_outage_is_service_unavailable(ws_clients, store, monkeypatch):
    from django.db import OperationalError

    from payments import services as payment_services

    def unreachable(**kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(payment_services, "payment_status", unreachable)
    desktop, _ = await connect(ws_clients, store.desktop_key)

    reply = await request(desktop, {"action": "getTransactionStatus", "transactionId": "TXN-1"})

    assert_error(
        reply,
        "Service Unavailable",
        "Database unavailable, try again shortly",
        requestAction="getTransactionStatus",
        transactionId="TXN-1",
    )
    assert "administrator" not in str(reply)
    await assert_still_open(desktop)


async def test_unknown_action_is_bad_request_naming_it(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    reply = await request(desktop, {"action": "close"})

    assert_error(reply, "Bad Request", "Unknown action: close", requestAction="close")
    await assert_still_open(desktop)


async def test_frame_without_an_action_is_bad_request(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    for frame in ({}, {"action": ""}, {"action": None}):
        reply = await request(desktop, frame)

        assert_error(reply, "Bad Request", "action is required")
    await assert_still_open(desktop)


async def test_an_action_that_is_not_a_string_is_bad_request_saying_so(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    for frame in (
        {"action": 5},
        {"action": ["ping"]},
        {"action": {"name": "ping"}},
        {"action": True},
    ):
        reply = await request(desktop, frame)

        assert_error(reply, "Bad Request", "action must be a string")
        assert "requestAction" not in reply
    await assert_still_open(desktop)


async def test_frame_over_max_message_bytes_is_payload_too_large(ws_clients, store, settings):
    settings.MAX_MESSAGE_BYTES = 200
    desktop, _ = await connect(ws_clients, store.desktop_key)

    def ping_of(size: int, pad: str = "x") -> str:
        head = '{"action":"ping","pad":"'
        count = (size - len(head) - 2) // len(pad.encode())
        text = head + pad * count + '"}'
        assert len(text.encode()) == size
        return text

    exactly = await request_text(desktop, ping_of(200))
    over = await request_text(desktop, ping_of(201))
    # 2-byte characters: far fewer than 200 characters, but more than 200 bytes
    over_in_bytes = await request_text(desktop, ping_of(202, "é"))

    assert exactly["action"] == "pong"
    for reply in (over, over_in_bytes):
        assert reply["error"] == "Payload Too Large"
        assert "200" in reply["message"]
    await assert_still_open(desktop)


async def test_binary_frame_is_bad_request(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)
    await desktop.send_to(bytes_data=b'{"action":"ping"}')

    reply = await desktop.receive_json_from(timeout=TIMEOUT)

    assert_error(reply, "Bad Request", "Binary frames are not supported")
    await assert_still_open(desktop)


async def test_json_that_is_not_an_object_is_bad_request(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    for text in ("[]", '[{"action":"ping"}]', "1", '"ping"', "null", "true"):
        reply = await request_text(desktop, text)

        assert_error(reply, "Bad Request", "Message must be a JSON object")
    await assert_still_open(desktop)


async def test_bad_frames_change_no_stored_data(ws_clients, store, other_store):
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    _, foreign_hello = await connect(ws_clients, other_store.terminal_key)
    assert (await request(desktop, payment("TXN-1")))["action"] == "paymentAccepted"
    assert (await terminal.receive_json_from(timeout=TIMEOUT))["action"] == "paymentRequest"
    before = await db(stored_state)()

    desktop_frames: list[tuple[Any, str]] = [
        ("not json", "Bad Request"),
        ('{"action":"payment","terminalId":"TERM-1","paymentRequest":NaN}', "Bad Request"),
        ({"action": "payment", "paymentRequest": {}}, "Bad Request"),
        ({"action": "payment", "terminalId": "TERM-1"}, "Bad Request"),
        (payment("TXN-2", amount="-1"), "Bad Request"),
        (payment("TXN-2", amount=12.5), "Bad Request"),
        (payment("TXN-2", amount="1.001"), "Bad Request"),
        (payment("TXN-2", currency="usd"), "Bad Request"),
        (payment("TXN-2", customerInfo={"note": f"card {VISA}"}), "Bad Request"),
        (payment("TXN-2", terminal="NOPE"), "Not Found"),
        (payment("TXN-2", terminal=foreign_hello["connectionId"]), "Forbidden"),
        (payment("TXN-1", amount="99.00"), "Conflict"),
        (payment("TXN-2"), "Conflict"),  # the terminal is busy with TXN-1
        ({"action": "getTransactionStatus", "transactionId": "NOPE"}, "Not Found"),
        ({"action": "cancelPayment", "transactionId": "NOPE"}, "Not Found"),
        ({"action": "ack", "seq": 99}, "Bad Request"),
        ({"action": "ack", "seq": "1"}, "Bad Request"),
        (result("TXN-1"), "Forbidden"),
        ({"action": "nope"}, "Bad Request"),
        ("[]", "Bad Request"),
        (b"\x00\x01", "Bad Request"),
    ]
    terminal_frames: list[tuple[Any, str]] = [
        (result("NOPE"), "Not Found"),
        (result("TXN-1", status="TIMEOUT"), "Bad Request"),
        (result("TXN-1", status="success"), "Bad Request"),
        ({"action": "paymentResponse"}, "Bad Request"),
        (payment("TXN-3"), "Forbidden"),
        ({"action": "getTerminals"}, "Forbidden"),
        ({"action": "cancelPayment", "transactionId": "TXN-1"}, "Forbidden"),
    ]
    for comm, frames in ((desktop, desktop_frames), (terminal, terminal_frames)):
        for frame, error in frames:
            if isinstance(frame, bytes):
                await comm.send_to(bytes_data=frame)
            elif isinstance(frame, str):
                await comm.send_to(text_data=frame)
            else:
                await comm.send_json_to(frame)
            reply = await comm.receive_json_from(timeout=TIMEOUT)
            assert reply.get("error") == error, (frame, reply)

    assert await db(stored_state)() == before
    assert await terminal.receive_nothing(timeout=0.3)  # nothing else was forwarded
    await assert_still_open(desktop)
    await assert_still_open(terminal)


# --- payments between two sockets ------------------------------------------------------------


async def test_payment_round_trip_between_desktop_and_terminal(ws_clients, store):
    terminal, terminal_hello, desktop, desktop_hello = await connect_pair(ws_clients, store)

    accepted = await request(
        desktop, payment("TXN-1", amount="12.3", metadata={"orderId": "ORD-1"})
    )
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)

    assert accepted == {
        "action": "paymentAccepted",
        "transactionId": "TXN-1",
        "terminalId": "TERM-1",
        "deviceId": "TERM-1",
        "connectionId": terminal_hello["connectionId"],
        "status": "IN_PROGRESS",
        "timestamp": accepted["timestamp"],
    }
    assert ISO_Z.match(accepted["timestamp"])
    assert forwarded["action"] == "paymentRequest"
    assert forwarded["desktopId"] == desktop_hello["connectionId"]
    assert ISO_Z.match(forwarded["timestamp"])
    assert "resent" not in forwarded
    assert forwarded["paymentRequest"]["transactionId"] == "TXN-1"
    assert forwarded["paymentRequest"]["amount"] == "12.30"  # normalised to USD's minor units
    assert forwarded["paymentRequest"]["currency"] == "USD"
    assert forwarded["paymentRequest"]["metadata"] == {"orderId": "ORD-1"}

    await terminal.send_json_to(
        result("TXN-1", "SUCCESS", authorizationCode="AUTH-1", cardNumber=VISA)
    )
    complete = await desktop.receive_json_from(timeout=TIMEOUT)

    assert complete["action"] == "paymentComplete"
    assert complete["seq"] == 1
    assert complete["late"] is False
    assert complete["paymentResponse"]["transactionId"] == "TXN-1"
    assert complete["paymentResponse"]["status"] == "SUCCESS"
    assert complete["paymentResponse"]["authorizationCode"] == "AUTH-1"
    assert complete["paymentResponse"]["cardNumber"] == "************1111"
    assert VISA not in str(complete)
    assert await terminal.receive_nothing(timeout=0.2)  # the terminal's answer needs no reply

    await desktop.send_json_to({"action": "ack", "seq": 1})
    status = await request(desktop, {"action": "getTransactionStatus", "transactionId": "TXN-1"})

    assert status["action"] == "transactionStatus"
    assert status["status"] == "SUCCESS"
    assert status["paymentResponse"]["authorizationCode"] == "AUTH-1"
    assert status["late"] is False
    txn = await db(Transaction.objects.get)(transaction_id="TXN-1")
    assert txn.status == "SUCCESS"
    assert VISA not in str(txn.payment_response)
    message = await db(DesktopMessage.objects.get)(transaction=txn)
    assert message.acked_at is not None


async def test_results_missed_while_the_desktop_was_away_are_sent_on_reconnect(ws_clients, store):
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    await request(desktop, payment("TXN-1"))
    await terminal.receive_json_from(timeout=TIMEOUT)
    await desktop.disconnect(code=1000)

    await terminal.send_json_to(result("TXN-1", "DECLINED", errorMessage="Insufficient funds"))
    assert await terminal.receive_nothing(timeout=0.3)
    desktop, _ = await connect(ws_clients, store.desktop_key)
    redelivered = await desktop.receive_json_from(timeout=TIMEOUT)

    assert redelivered["action"] == "paymentComplete"
    assert redelivered["seq"] == 1
    assert redelivered["paymentResponse"]["status"] == "DECLINED"

    await desktop.send_json_to({"action": "ack", "seq": 1})
    await assert_still_open(desktop)  # the ack has been processed: pings are answered in order
    await desktop.disconnect(code=1000)
    desktop, _ = await connect(ws_clients, store.desktop_key)

    assert await desktop.receive_nothing(timeout=0.3)


async def test_reconnecting_terminal_gets_the_payment_in_flight_again_marked_resent(
    ws_clients, store
):
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    await request(desktop, payment("TXN-1"))
    first = await terminal.receive_json_from(timeout=TIMEOUT)
    await terminal.disconnect(code=1006)

    terminal, _ = await connect(ws_clients, store.terminal_key)
    again = await terminal.receive_json_from(timeout=TIMEOUT)

    assert again["action"] == "paymentRequest"
    assert again["resent"] is True
    assert again["paymentRequest"] == first["paymentRequest"]


def live_channel(connection_id: str) -> str:
    return Connection.objects.get(connection_id=connection_id).channel_name


async def test_a_request_the_terminal_has_is_not_sent_again_when_the_channel_layer_is_back(
    ws_clients, store
):
    # The terminal's process lost the channel layer and caught up when it came back: the
    # payment its socket already had is not sent again (it was, marked resent).
    terminal, hello, desktop, _ = await connect_pair(ws_clients, store)
    await request(desktop, payment("TXN-1"))
    assert (await terminal.receive_json_from(timeout=TIMEOUT))["action"] == "paymentRequest"

    channel = await db(live_channel)(hello["connectionId"])
    await get_channel_layer().send(channel, {"type": "gateway.catch_up"})

    assert await terminal.receive_nothing(timeout=0.3)
    await assert_still_open(terminal)


async def test_the_first_send_held_up_in_an_outage_does_not_follow_the_recovery_resend(
    ws_clients, store, monkeypatch
):
    # Issue 20: the first send of a payment is held up in the channel layer (Redis
    # restarting) while the terminal's process catches up and re-sends it; then the first
    # send gets through too. The terminal gets the payment once.
    terminal, hello, desktop, _ = await connect_pair(ws_clients, store)
    layer = get_channel_layer()
    layer_send = layer.send
    held: list[tuple[str, dict[str, Any]]] = []

    async def held_up(channel: str, message: dict[str, Any]) -> None:
        if (message.get("frame") or {}).get("action") == "paymentRequest":
            held.append((channel, message))
            return
        await layer_send(channel, message)

    monkeypatch.setattr(layer, "send", held_up)
    accepted = await request(desktop, payment("TXN-1"))
    assert accepted["action"] == "paymentAccepted", accepted
    assert await terminal.receive_nothing(timeout=0.2)

    channel = await db(live_channel)(hello["connectionId"])
    await layer_send(channel, {"type": "gateway.catch_up"})
    resent = await terminal.receive_json_from(timeout=TIMEOUT)
    assert (resent["action"], resent["resent"]) == ("paymentRequest", True)
    [(to, first_send)] = held
    await layer_send(to, first_send)

    assert await terminal.receive_nothing(timeout=0.3)
    await terminal.send_json_to(result("TXN-1"))
    complete = await desktop.receive_json_from(timeout=TIMEOUT)
    assert complete["paymentResponse"]["status"] == "SUCCESS", complete


async def sweep_once() -> None:
    """One pass of a process's background sweep (timeouts, retried hand-offs)."""
    from posgateway.gateway import background, connections
    from posgateway.gateway.delivery import deliver

    outbox = Outbox()
    retries = await db(connections.sweep)(outbox=outbox)
    await deliver(outbox)
    await background.retry_forwards(retries)


def retries_due_now() -> None:
    Transaction.objects.filter(forward_retry_at__isnull=False).update(
        forward_retry_at=timezone.now()
    )


async def test_a_payment_the_channel_layer_refuses_to_hand_off_is_accepted_and_retried(
    ws_clients, store, monkeypatch
):
    # Issue 20: Redis is down when the payment is handed to the terminal's process. The
    # desktop is answered paymentAccepted as usual; once the layer takes messages again, the
    # sweep hands the payment off and the terminal gets it, once; its answer is the result.
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    layer = get_channel_layer()
    layer_send = layer.send
    down = True

    async def outage(channel: str, message: dict[str, Any]) -> None:
        if down:
            raise ConnectionError("Error 111 connecting to redis")
        await layer_send(channel, message)

    monkeypatch.setattr(layer, "send", outage)
    accepted = await request(desktop, payment("TXN-1"))
    assert accepted["action"] == "paymentAccepted", accepted
    assert await terminal.receive_nothing(timeout=0.2)
    await db(retries_due_now)()
    await sweep_once()  # still down: refused again, nothing lost
    assert await terminal.receive_nothing(timeout=0.2)
    assert (await db(Transaction.objects.get)(transaction_id="TXN-1")).status == "IN_PROGRESS"

    down = False
    await db(retries_due_now)()
    await sweep_once()
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)
    assert (forwarded["action"], forwarded["resent"]) == ("paymentRequest", True)
    assert forwarded["paymentRequest"]["transactionId"] == "TXN-1"
    await db(retries_due_now)()
    await sweep_once()  # confirmed: not handed off again
    assert await terminal.receive_nothing(timeout=0.2)

    await terminal.send_json_to(result("TXN-1"))
    complete = await desktop.receive_json_from(timeout=TIMEOUT)
    assert complete["paymentResponse"]["status"] == "SUCCESS", complete


# --- one connection per device, and live status pushed to desktops ---------------------------


async def test_second_connection_with_the_same_key_replaces_the_first_with_4409(ws_clients, store):
    first, first_hello = await connect(ws_clients, store.terminal_key)
    desktop, _ = await connect(ws_clients, store.desktop_key)

    second, second_hello = await connect(ws_clients, store.terminal_key)

    assert await first.receive_json_from(timeout=TIMEOUT) == {
        "action": "forceDisconnect",
        "reason": "replaced by a newer connection",
    }
    assert await receive_close_code(first) == 4409
    update = await desktop.receive_json_from(timeout=TIMEOUT)
    assert update["action"] == "terminalStatusUpdate"
    assert update["terminal"]["connectionId"] == second_hello["connectionId"]
    assert update["terminal"]["status"] == "online"

    await first.disconnect(code=4409)  # the old socket's close completes

    assert await desktop.receive_nothing(timeout=0.3)  # no offline blip for the old socket
    terminals = (await request(desktop, {"action": "getTerminals"}))["terminals"]
    assert [(t["connectionId"], t["status"]) for t in terminals] == [
        (second_hello["connectionId"], "online")
    ]
    old = await db(Connection.objects.get)(connection_id=first_hello["connectionId"])
    assert old.closed_at is not None
    assert old.close_code == 4409
    await assert_still_open(second)


@pytest.mark.parametrize(
    ("code", "status"),
    [(1000, "offline"), (1001, "offline"), (1006, "reconnecting"), (4000, "reconnecting")],
)
async def test_terminal_status_update_is_pushed_to_the_stores_desktops(
    ws_clients, store, other_store, code, status
):
    desktop, _ = await connect(ws_clients, store.desktop_key)
    other_desktop, _ = await connect(ws_clients, other_store.desktop_key)

    terminal, terminal_hello = await connect(ws_clients, store.terminal_key)
    online = await desktop.receive_json_from(timeout=TIMEOUT)
    await terminal.disconnect(code=code)
    after = await desktop.receive_json_from(timeout=TIMEOUT)

    assert set(online) == {"action", "terminal", "timestamp"}
    assert online["action"] == "terminalStatusUpdate"
    assert set(online["terminal"]) == TERMINAL_FIELDS
    assert online["terminal"]["deviceId"] == "TERM-1"
    assert online["terminal"]["connectionId"] == terminal_hello["connectionId"]
    assert online["terminal"]["status"] == "online"
    assert after["action"] == "terminalStatusUpdate"
    assert after["terminal"]["deviceId"] == "TERM-1"
    assert after["terminal"]["status"] == status
    assert await other_desktop.receive_nothing(timeout=0.3)
    terminals = (await request(desktop, {"action": "getTerminals"}))["terminals"]
    assert [t["status"] for t in terminals] == [status]


async def test_desktop_connecting_is_not_pushed_as_a_terminal_status(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    _, second_desktop_key = await db(make_device)(store.group, DeviceType.DESKTOP, "POS-2")
    await connect(ws_clients, second_desktop_key)

    assert await desktop.receive_nothing(timeout=0.3)


async def test_an_active_socket_the_gateway_already_closed_is_told_connection_not_found(
    ws_clients, store, monkeypatch
):
    # A sweep closed this connection in the database (its close message to the socket was
    # lost). The next bulk write of lastActivity finds it: the socket is told and closed, so
    # the client reconnects.
    monkeypatch.setattr("posgateway.gateway.heartbeat.activity_write_interval", lambda: 0.0)
    terminal, hello = await connect(ws_clients, store.terminal_key)
    await db(Connection.objects.filter(connection_id=hello["connectionId"]).update)(
        closed_at=timezone.now(), close_code=4408
    )
    reply = await request(terminal, {"action": "ping"})
    assert reply["action"] == "pong"

    await write_local_activity()

    assert_error(await terminal.receive_json_from(timeout=5), "Not Found", "Connection not found")
    assert await receive_close_code(terminal) == 4408
    again, _ = await connect(ws_clients, store.terminal_key)
    await assert_still_open(again)


async def test_a_result_both_resent_on_connect_and_pushed_live_reaches_the_desktop_once():
    # A result committed while the connection opened is in the backlog and pushed live: 4 and
    # 5 were sent on connect, 6 is new.
    consumer = GatewayConsumer()
    consumer.sent_seq = 5
    sent: list[dict[str, Any]] = []

    async def record(frame: dict[str, Any]) -> None:
        sent.append(frame)

    consumer.send_frame = record
    for seq in (4, 5, 6):
        await consumer.gateway_frame({"frame": {"action": "paymentComplete", "seq": seq}})
    await consumer.gateway_frame({"frame": {"action": "terminalStatusUpdate"}})

    assert [f.get("seq") for f in sent] == [6, None]


async def test_results_pushed_out_of_order_reach_the_desktop_in_seq_order_once(
    ws_clients, store, monkeypatch
):
    # Two results for one desktop are numbered 1 and 2, but the push of 1 is overtaken (two
    # processes, or a sweep, flush one after the other in either order). Sent as they come,
    # the desktop would see 2 first, and its ack of 2 would also acknowledge 1.
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    _, second_key = await db(make_device)(store.group, DeviceType.TERMINAL, "TERM-2")
    second, _ = await connect(ws_clients, second_key)
    assert (await desktop.receive_json_from(timeout=TIMEOUT))["action"] == "terminalStatusUpdate"
    layer = get_channel_layer()
    layer_send = layer.send
    held: list[tuple[str, dict[str, Any]]] = []

    async def overtaken(channel: str, message: dict[str, Any]) -> None:
        frame = message.get("frame") or {}
        if frame.get("action") == "paymentComplete" and frame.get("seq") == 1:
            held.append((channel, message))
            return
        await layer_send(channel, message)

    monkeypatch.setattr(layer, "send", overtaken)
    await request(desktop, payment("TXN-1"))
    await request(desktop, payment("TXN-2", terminal="TERM-2"))
    await terminal.receive_json_from(timeout=TIMEOUT)
    await second.receive_json_from(timeout=TIMEOUT)
    await terminal.send_json_to(result("TXN-1"))
    assert await desktop.receive_nothing(timeout=0.3)  # 1 is held back on its way
    await second.send_json_to(result("TXN-2"))

    first = await desktop.receive_json_from(timeout=TIMEOUT)
    then = await desktop.receive_json_from(timeout=TIMEOUT)
    assert [(f["seq"], f["transactionId"]) for f in (first, then)] == [(1, "TXN-1"), (2, "TXN-2")]
    await layer_send(*held[0])  # the overtaken push arrives at last: already sent
    assert await desktop.receive_nothing(timeout=0.3)


# --- NUL and lone surrogates (found by tests/e2e/test_fuzz.py) ---------------------------------

UNSTORABLE = "must not contain NUL characters or unpaired surrogates"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"action":"getTransactionStatus","transactionId":"T\\ud800"}', "transactionId"),
        ('{"action":"cancelPayment","transactionId":"T-\\u0000"}', "transactionId"),
        (
            '{"action":"payment","terminalId":"\\udc00TERM","paymentRequest":'
            '{"transactionId":"TXN-1","amount":"1.00","currency":"USD"}}',
            "terminalId",
        ),
        ('{"action":"ping","x":[{"\\ud83d":1}]}', "x[0] keys"),
    ],
)
async def test_nul_and_lone_surrogates_are_bad_request_naming_the_field(
    ws_clients, store, text, where
):
    # Before: the lookup raised (SQLite cannot encode a lone surrogate, PostgreSQL refuses
    # NUL) and the desktop got "Internal Server Error".
    desktop, _ = await connect(ws_clients, store.desktop_key)

    reply = await request_text(desktop, text)

    assert_error(reply, "Bad Request", f"{where} {UNSTORABLE}")
    await assert_still_open(desktop)


async def test_a_payment_with_nul_in_its_metadata_is_refused_and_not_stored(ws_clients, store):
    # Stored on SQLite but refused by PostgreSQL's jsonb: the same answer on both now.
    _, _, desktop, _ = await connect_pair(ws_clients, store)
    frame = payment("TXN-NUL", metadata={"note": "table\u00004"})

    reply = await request(desktop, frame)

    assert_error(reply, "Bad Request", f"paymentRequest.metadata.note {UNSTORABLE}")
    assert await db(Transaction.objects.count)() == 0
    await assert_still_open(desktop)


async def test_escaped_surrogate_pairs_and_other_escapes_are_accepted(ws_clients, store):
    desktop, _ = await connect(ws_clients, store.desktop_key)

    reply = await request_text(desktop, '{"action":"ping","note":"\\ud83d\\ude00 \\u00e9 \\u0001"}')

    assert reply["action"] == "pong"


async def test_activity_of_every_active_socket_is_written_in_one_sweep(
    ws_clients, store, monkeypatch
):
    monkeypatch.setattr("posgateway.gateway.heartbeat.activity_write_interval", lambda: 0.0)
    terminal, t_hello = await connect(ws_clients, store.terminal_key)
    desktop, d_hello = await connect(ws_clients, store.desktop_key)
    await write_local_activity()  # what connecting marked
    before = {
        c.connection_id: c.last_activity
        for c in await db(list)(Connection.objects.filter(closed_at__isnull=True))
    }
    assert (await request(terminal, {"action": "ping"}))["action"] == "pong"
    assert (await request(desktop, {"action": "ping"}))["action"] == "pong"

    await write_local_activity()

    after = {
        c.connection_id: c.last_activity
        for c in await db(list)(Connection.objects.filter(closed_at__isnull=True))
    }
    assert after[t_hello["connectionId"]] > before[t_hello["connectionId"]]
    assert after[d_hello["connectionId"]] > before[d_hello["connectionId"]]
    await assert_still_open(terminal)
