"""The WebSocket protocol as a POS developer meets it: a real daphne, real `websockets` clients.

Every test makes its own store with ``manage.py create_device``; the servers are shared (see
conftest.py). With DATABASE_URL/REDIS_URL set, the same tests run on PostgreSQL + Redis.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from tests.e2e.conftest import (
    TIMESTAMP,
    DeviceClient,
    Gateway,
    finish,
    keep_alive,
    pay,
    payment_frame,
    result,
    status_update,
    transaction_status,
)

# server_dependent: the protocol over the server's own sockets, so `make test-uvicorn` runs it
# again: handshakes refused with close codes (4401), frames over MAX_MESSAGE_BYTES and binary
# frames, heartbeats and stale closes (4408), replaced connections (4409), sweeper timeouts.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.usefixtures("close_clients"),
]

UNAUTHORIZED = {"error": "Unauthorized", "message": "A valid API key is required"}
ERROR_EXTRAS = {"error", "message", "requestAction", "transactionId"}
TERMINAL_FIELDS = {"connectionId", "deviceId", "connectedAt", "lastActivity", "status", "metadata"}
ACCEPTED_FIELDS = {
    "action",
    "transactionId",
    "terminalId",
    "deviceId",
    "connectionId",
    "status",
    "timestamp",
}

# The seed's own example, letter for letter.
SEED_PAYMENT_REQUEST = {
    "transactionId": "TXN-20240115-001",
    "amount": "99.99",
    "currency": "USD",
    "paymentMethod": "CARD",
    "products": [{"id": "PROD-001", "name": "Widget", "price": "99.99", "quantity": 1}],
    "customerInfo": {"customerId": "CUST-123", "email": "customer@example.com"},
    "metadata": {"orderId": "ORD-12345"},
}


def assert_error(frame: dict[str, Any], error: str, message: str) -> None:
    assert (frame.get("error"), frame.get("message")) == (error, message), frame
    assert set(frame) <= ERROR_EXTRAS, frame


async def assert_open_and_not_stored(desktop: DeviceClient, tid: str) -> None:
    """The socket still answers, and the gateway has no transaction under this id."""
    await desktop.ping()
    await desktop.send({"action": "getTransactionStatus", "transactionId": tid})
    status = await desktop.recv_error()
    assert status == {
        "error": "Not Found",
        "message": "Transaction not found",
        "requestAction": "getTransactionStatus",
        "transactionId": tid,
    }


async def terminals_of(desktop: DeviceClient) -> dict[str | None, dict[str, Any]]:
    response = await desktop.request({"action": "getTerminals"}, "terminalsResponse")
    return {t["deviceId"]: t for t in response["terminals"]}


# --- Authentication and the connected frame -------------------------------------------------------


async def test_key_in_authorization_header_connects(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop, header=True)
    assert desktop.hello["deviceType"] == "desktop"
    assert desktop.hello["group"] == store.slug


async def test_key_in_query_string_connects(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal, header=False)
    assert terminal.hello["deviceType"] == "terminal"
    assert terminal.hello["deviceId"] == "TERM"


async def test_header_key_wins_over_query_key(gateway: Gateway):
    store = gateway.store()
    url = f"{gateway.server.ws_url}?key={store.terminal}"
    both = await gateway.connect(store.desktop, url=url)
    assert both.hello["deviceType"] == "desktop"

    # A wrong header key is not rescued by a right one in the query.
    refused = await DeviceClient.connect(url, "not-a-key")
    assert await refused.recv() == UNAUTHORIZED
    assert await refused.wait_closed() == 4401


async def test_missing_key_is_unauthorized_and_closed_with_4401(gateway: Gateway):
    client = await gateway.connect_raw(None)
    assert await client.drain_until_closed() == [UNAUTHORIZED]
    assert client.ws.close_code == 4401


async def test_wrong_key_is_unauthorized_and_closed_with_4401(gateway: Gateway):
    for header in (True, False):
        client = await gateway.connect_raw(
            "wrong-key-0123456789abcdefghijklmnopqrstuv", header=header
        )
        assert await client.drain_until_closed() == [UNAUTHORIZED]
        assert client.ws.close_code == 4401


async def test_socket_without_origin_header_is_accepted(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop)
    assert "Origin" not in desktop.ws.request.headers
    await desktop.ping()


async def test_connected_frame_describes_the_connection(gateway: Gateway):
    store = gateway.store(desktops=2)
    first = await gateway.connect(store.desktop_keys[0])
    second = await gateway.connect(store.desktop_keys[1])
    for client, device_id in ((first, "POS-1"), (second, "POS-2")):
        hello = client.hello
        assert set(hello) == {
            "action",
            "connectionId",
            "deviceId",
            "deviceType",
            "group",
            "timestamp",
        }
        assert hello["deviceId"] == device_id
        assert hello["deviceType"] == "desktop"
        assert hello["group"] == store.slug
        assert TIMESTAMP.match(hello["timestamp"]), hello["timestamp"]
        assert isinstance(hello["connectionId"], str)
        assert len(hello["connectionId"]) >= 12
    assert first.connection_id != second.connection_id

    # The same device again gets a new connectionId too.
    again = await gateway.connect(store.desktop_keys[0])
    assert again.connection_id not in {first.connection_id, second.connection_id}


async def test_device_without_device_id_reports_null(gateway: Gateway):
    store = gateway.store(desktop_id=None, terminal_id=None)
    desktop = await gateway.connect(store.desktop)
    terminal = await gateway.connect(store.terminal)
    assert "deviceId" in desktop.hello
    assert desktop.hello["deviceId"] is None
    assert terminal.hello["deviceId"] is None
    (listed,) = (await desktop.request({"action": "getTerminals"}, "terminalsResponse"))[
        "terminals"
    ]
    assert listed["deviceId"] is None
    assert listed["connectionId"] == terminal.connection_id


async def test_ws_path_without_trailing_slash_works(gateway: Gateway):
    store = gateway.store(terminals=0)
    url = gateway.server.ws_url.rstrip("/")
    assert url.endswith("/ws")
    desktop = await gateway.connect(store.desktop, url=url)
    assert desktop.hello["group"] == store.slug
    await desktop.ping()


async def test_ping_is_answered_with_pong(gateway: Gateway):
    store = gateway.store()
    for key in (store.desktop, store.terminal):
        client = await gateway.connect(key)
        pong = await client.request({"action": "ping"}, "pong")
        assert set(pong) == {"action", "timestamp"}
        assert TIMESTAMP.match(pong["timestamp"])


# --- getTerminals ---------------------------------------------------------------------------------


async def test_get_terminals_lists_every_terminal_of_the_store_and_no_other(gateway: Gateway):
    store, other = gateway.stores(2, terminals=3)
    online = await gateway.connect(store.terminal_keys[0])
    foreign = await gateway.connect(other.terminal_keys[0])
    desktop = await gateway.connect(store.desktop)

    response = await desktop.request({"action": "getTerminals"}, "terminalsResponse")
    assert TIMESTAMP.match(response["timestamp"])
    terminals = {t["deviceId"]: t for t in response["terminals"]}
    assert sorted(terminals) == ["TERM-1", "TERM-2", "TERM-3"]
    for terminal in response["terminals"]:
        assert set(terminal) == TERMINAL_FIELDS

    assert terminals["TERM-1"]["status"] == "online"
    assert terminals["TERM-1"]["connectionId"] == online.connection_id
    assert TIMESTAMP.match(terminals["TERM-1"]["connectedAt"])
    assert TIMESTAMP.match(terminals["TERM-1"]["lastActivity"])
    assert terminals["TERM-1"]["metadata"] == {}
    # Registered but never connected: listed, offline.
    for never in ("TERM-2", "TERM-3"):
        assert terminals[never]["status"] == "offline"
        assert terminals[never]["metadata"] == {}

    # The other store's online terminal is not listed.
    assert foreign.connection_id not in {t["connectionId"] for t in response["terminals"]}


async def test_get_terminals_shows_a_disconnected_terminal_as_offline(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    assert (await terminals_of(desktop))["TERM"]["status"] == "online"
    await terminal.close()
    update = await desktop.recv_action("terminalStatusUpdate")
    assert update["terminal"]["status"] == "offline"
    assert (await terminals_of(desktop))["TERM"]["status"] == "offline"


# --- The seed's errors, each in its exact form ----------------------------------------------------


async def test_invalid_json_is_bad_request_and_keeps_the_socket(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop)
    await desktop.send('{"action": "payment", "terminalId": "TERM", "paymentRequest": {')
    assert_error(await desktop.recv_error(), "Bad Request", "Invalid JSON in message body")
    await assert_open_and_not_stored(desktop, "TXN-1")


async def test_payment_without_terminal_id_is_bad_request(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    await gateway.connect(store.terminal)
    frame = payment_frame("TERM", "TXN-NO-TERMINAL")
    del frame["terminalId"]
    await desktop.send(frame)
    assert_error(await desktop.recv_error(), "Bad Request", "terminalId is required")
    await assert_open_and_not_stored(desktop, "TXN-NO-TERMINAL")


async def test_payment_without_payment_request_is_bad_request(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    await gateway.connect(store.terminal)
    await desktop.send({"action": "payment", "terminalId": "TERM"})
    assert_error(await desktop.recv_error(), "Bad Request", "paymentRequest is required")
    await desktop.ping()


async def test_payment_to_unknown_terminal_is_not_found(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    await gateway.connect(store.terminal)
    await desktop.send(payment_frame("NO-SUCH-TERMINAL", "TXN-UNKNOWN"))
    assert_error(await desktop.recv_error(), "Not Found", "Terminal connection not found")
    await assert_open_and_not_stored(desktop, "TXN-UNKNOWN")


async def test_payment_to_registered_but_disconnected_terminal_is_not_found(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    await desktop.send(payment_frame("TERM", "TXN-NEVER-CONNECTED"))
    assert_error(await desktop.recv_error(), "Not Found", "Terminal connection not found")
    await assert_open_and_not_stored(desktop, "TXN-NEVER-CONNECTED")

    # Connected once and gone again: the same answer.
    terminal = await gateway.connect(store.terminal)
    await terminal.close()
    await status_update(desktop, "offline")
    await desktop.send(payment_frame("TERM", "TXN-GONE"))
    assert_error(await desktop.recv_error(), "Not Found", "Terminal connection not found")
    await assert_open_and_not_stored(desktop, "TXN-GONE")


async def test_terminal_asking_for_terminal_list_is_forbidden(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    await terminal.send({"action": "getTerminals"})
    assert_error(
        await terminal.recv_error(), "Forbidden", "Only desktop devices can request terminal list"
    )
    await terminal.ping()


async def test_payment_to_another_stores_terminal_connection_is_forbidden(gateway: Gateway):
    store, other = gateway.stores(2)
    desktop = await gateway.connect(store.desktop)
    foreign = await gateway.connect(other.terminal)
    await desktop.send(payment_frame(foreign.connection_id, "TXN-FOREIGN"))
    assert_error(
        await desktop.recv_error(),
        "Forbidden",
        "Cannot send message to connection in different group",
    )
    await assert_open_and_not_stored(desktop, "TXN-FOREIGN")
    assert await foreign.frames_until_pong() == []


async def test_unknown_action_is_bad_request(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop)
    await desktop.send({"action": "foo"})
    assert_error(await desktop.recv_error(), "Bad Request", "Unknown action: foo")
    await desktop.ping()


def _padded_payment(tid: str, size: int) -> str:
    """A payment frame of exactly ``size`` bytes (padding in metadata)."""
    frame = payment_frame("TERM", tid, metadata={"note": ""})
    base = len(json.dumps(frame).encode())
    frame["paymentRequest"]["metadata"]["note"] = "x" * (size - base)
    text = json.dumps(frame)
    assert len(text.encode()) == size
    return text


async def test_frame_over_max_message_bytes_is_payload_too_large(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    terminal = await gateway.connect(store.terminal)
    await desktop.send(_padded_payment("TXN-TOO-BIG", 4097))
    error = await desktop.recv_error()
    assert error["error"] == "Payload Too Large"
    assert isinstance(error["message"], str)
    assert error["message"]
    await assert_open_and_not_stored(desktop, "TXN-TOO-BIG")
    assert await terminal.frames_until_pong() == []


async def test_frame_over_the_limit_in_bytes_but_not_in_characters_is_refused(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop)
    text = json.dumps({"action": "ping", "pad": "é" * 3000}, ensure_ascii=False)
    assert len(text) < 4096 < len(text.encode())
    await desktop.send(text)
    assert (await desktop.recv_error())["error"] == "Payload Too Large"
    await desktop.ping()


async def test_frame_of_exactly_max_message_bytes_is_accepted(gateway: Gateway):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    terminal = await gateway.connect(store.terminal)
    await desktop.send(_padded_payment("TXN-AT-LIMIT", 4096))
    accepted = await desktop.recv_action("paymentAccepted")
    assert accepted["transactionId"] == "TXN-AT-LIMIT"
    forwarded = await terminal.recv_action("paymentRequest")
    assert len(forwarded["paymentRequest"]["metadata"]["note"]) > 3900


async def test_binary_frame_is_bad_request(gateway: Gateway):
    store = gateway.store(terminals=0)
    desktop = await gateway.connect(store.desktop)
    await desktop.ws.send(json.dumps({"action": "ping"}).encode())
    assert_error(await desktop.recv_error(), "Bad Request", "Binary frames are not supported")
    await desktop.ping()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(lambda f: f.update(terminalId=12345), "terminalId", id="terminalId-number"),
        pytest.param(
            lambda f: f["paymentRequest"].update(amount=12.5), "amount", id="amount-number"
        ),
        pytest.param(
            lambda f: f["paymentRequest"].update(
                products=[{"id": "P", "name": "Widget", "price": "10.00", "quantity": "1"}]
            ),
            "quantity",
            id="quantity-string",
        ),
    ],
)
async def test_wrong_type_is_bad_request_naming_the_field(gateway: Gateway, change, field):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)
    terminal = await gateway.connect(store.terminal)
    frame = payment_frame("TERM", "TXN-WRONG-TYPE")
    change(frame)
    await desktop.send(frame)
    error = await desktop.recv_error()
    assert error["error"] == "Bad Request"
    assert field in error["message"], error
    await assert_open_and_not_stored(desktop, "TXN-WRONG-TYPE")
    assert await terminal.frames_until_pong() == []


# --- The payment round trip -----------------------------------------------------------------------


async def test_seed_payment_round_trip(gateway: Gateway):
    store = gateway.store(terminal_id="TERM-001")
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await desktop.send(
        {
            "action": "payment",
            "terminalId": "TERM-001",
            "paymentRequest": copy.deepcopy(SEED_PAYMENT_REQUEST),
        }
    )

    accepted = await desktop.recv_action("paymentAccepted")
    assert set(accepted) == ACCEPTED_FIELDS
    assert accepted["transactionId"] == "TXN-20240115-001"
    assert accepted["terminalId"] == "TERM-001"
    assert accepted["deviceId"] == "TERM-001"
    assert accepted["connectionId"] == terminal.connection_id
    assert accepted["status"] == "IN_PROGRESS"
    assert TIMESTAMP.match(accepted["timestamp"])

    forwarded = await terminal.recv_action("paymentRequest")
    assert set(forwarded) == {"action", "desktopId", "paymentRequest", "timestamp"}
    assert forwarded["desktopId"] == desktop.connection_id
    assert forwarded["paymentRequest"] == SEED_PAYMENT_REQUEST
    assert TIMESTAMP.match(forwarded["timestamp"])

    response = {
        "transactionId": "TXN-20240115-001",
        "status": "SUCCESS",
        "authorizationCode": "AUTH-998877",
        "errorMessage": None,
    }
    await terminal.send({"action": "paymentResponse", "paymentResponse": response})
    complete = await desktop.recv_action("paymentComplete")
    assert complete["paymentResponse"] == response
    assert isinstance(complete["seq"], int)
    assert complete["seq"] >= 1
    assert TIMESTAMP.match(complete["timestamp"])


async def test_declined_payment_reaches_the_desktop(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-DECLINED")
    complete = await finish(desktop, terminal, "TXN-DECLINED", "DECLINED")
    assert complete["paymentResponse"]["status"] == "DECLINED"
    assert complete["paymentResponse"]["errorMessage"] == "declined by the terminal"


async def test_terminal_id_may_be_the_terminals_connection_id(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    accepted, forwarded = await pay(desktop, terminal, terminal.connection_id, "TXN-BY-CONN")
    assert accepted["terminalId"] == terminal.connection_id
    assert accepted["deviceId"] == "TERM"
    assert accepted["connectionId"] == terminal.connection_id
    assert forwarded["desktopId"] == desktop.connection_id
    complete = await finish(desktop, terminal, "TXN-BY-CONN")
    assert complete["paymentResponse"]["status"] == "SUCCESS"


async def test_amount_is_forwarded_with_the_currencys_minor_units(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    _, forwarded = await pay(desktop, terminal, "TERM", "TXN-AMOUNT", amount="12.3")
    assert forwarded["paymentRequest"]["amount"] == "12.30"
    assert forwarded["paymentRequest"]["currency"] == "USD"
    assert forwarded["paymentRequest"]["paymentMethod"] == "CARD"


async def test_card_number_in_terminal_response_is_masked_before_the_desktop(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-CARD")
    await terminal.send(
        result("TXN-CARD", cardNumber="4111111111111111", receipt="VISA 4111111111111111 OK")
    )
    complete = await desktop.recv_action("paymentComplete")
    assert complete["paymentResponse"]["cardNumber"] == "************1111"
    assert complete["paymentResponse"]["receipt"] == "VISA ************1111 OK"
    status = await transaction_status(desktop, "TXN-CARD")
    for frame in (complete, status):
        assert "4111111111111111" not in json.dumps(frame)
        assert "411111" not in json.dumps(frame)


# --- Idempotency ----------------------------------------------------------------------------------


async def test_duplicate_payment_in_flight_is_not_forwarded_twice(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    first, _ = await pay(desktop, terminal, "TERM", "TXN-DUP")
    assert "duplicate" not in first

    again = await desktop.request(payment_frame("TERM", "TXN-DUP"), "paymentAccepted")
    assert again["duplicate"] is True
    assert again["transactionId"] == "TXN-DUP"
    assert again["status"] == "IN_PROGRESS"
    assert again["connectionId"] == terminal.connection_id
    assert await terminal.quiet_for(0.5) == []


async def test_repeated_payment_after_completion_returns_the_stored_result(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-REPEAT")
    complete = await finish(desktop, terminal, "TXN-REPEAT")

    again = await desktop.request(payment_frame("TERM", "TXN-REPEAT"), "paymentComplete")
    assert again["seq"] == complete["seq"]
    assert again["paymentResponse"] == complete["paymentResponse"]
    assert await terminal.quiet_for(0.5) == []


async def test_same_transaction_id_with_different_amount_is_conflict(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-CHANGED", amount="10.00")
    before = await transaction_status(desktop, "TXN-CHANGED")

    await desktop.send(payment_frame("TERM", "TXN-CHANGED", amount="11.00"))
    error = await desktop.recv_error()
    assert_error(error, "Conflict", "transactionId already used with different details")
    assert error["transactionId"] == "TXN-CHANGED"
    assert await terminal.quiet_for(0.5) == []
    after = await transaction_status(desktop, "TXN-CHANGED")
    assert after["status"] == "IN_PROGRESS"
    assert after["updatedAt"] == before["updatedAt"]

    # The original amount still goes through to the terminal's answer.
    complete = await finish(desktop, terminal, "TXN-CHANGED")
    assert complete["paymentResponse"]["status"] == "SUCCESS"


async def test_busy_terminal_is_conflict_naming_the_payment_in_flight(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-FIRST")

    await desktop.send(payment_frame("TERM", "TXN-SECOND"))
    error = await desktop.recv_error()
    assert error == {
        "error": "Conflict",
        "message": "Terminal is busy",
        "transactionId": "TXN-SECOND",
        "inFlightTransactionId": "TXN-FIRST",
        "requestAction": "payment",
    }
    assert await terminal.quiet_for(0.5) == []
    await assert_open_and_not_stored(desktop, "TXN-SECOND")

    # Once the first is done, the terminal takes the next one.
    await finish(desktop, terminal, "TXN-FIRST")
    await pay(desktop, terminal, "TERM", "TXN-SECOND")


async def test_another_store_may_use_the_same_transaction_id(gateway: Gateway):
    one, two = gateway.stores(2)
    terminal_one = await gateway.connect(one.terminal)
    terminal_two = await gateway.connect(two.terminal)
    desktop_one = await gateway.connect(one.desktop)
    desktop_two = await gateway.connect(two.desktop)

    accepted_one, req_one = await pay(
        desktop_one, terminal_one, "TERM", "TXN-SHARED", amount="1.00"
    )
    accepted_two, req_two = await pay(
        desktop_two, terminal_two, "TERM", "TXN-SHARED", amount="2.00"
    )
    assert "duplicate" not in accepted_one
    assert "duplicate" not in accepted_two
    assert req_one["paymentRequest"]["amount"] == "1.00"
    assert req_two["paymentRequest"]["amount"] == "2.00"

    await finish(desktop_two, terminal_two, "TXN-SHARED", "DECLINED")
    assert (await transaction_status(desktop_one, "TXN-SHARED"))["status"] == "IN_PROGRESS"
    complete = await finish(desktop_one, terminal_one, "TXN-SHARED")
    assert complete["paymentResponse"]["status"] == "SUCCESS"
    assert (await transaction_status(desktop_two, "TXN-SHARED"))["status"] == "DECLINED"


# --- Cancel and status ----------------------------------------------------------------------------


async def test_cancel_is_forwarded_and_the_terminal_decides_the_outcome(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-CANCEL")

    await desktop.send({"action": "cancelPayment", "transactionId": "TXN-CANCEL"})
    cancel = await terminal.recv_action("cancelPayment")
    assert cancel["transactionId"] == "TXN-CANCEL"
    # The gateway does not decide: still in progress until the terminal answers.
    assert (await transaction_status(desktop, "TXN-CANCEL"))["status"] == "IN_PROGRESS"

    complete = await finish(desktop, terminal, "TXN-CANCEL", "CANCELLED")
    assert complete["paymentResponse"]["status"] == "CANCELLED"
    assert (await transaction_status(desktop, "TXN-CANCEL"))["status"] == "CANCELLED"


async def test_get_transaction_status_reports_state_and_timestamps(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-STATUS")

    status = await transaction_status(desktop, "TXN-STATUS")
    assert {
        "action",
        "transactionId",
        "status",
        "paymentResponse",
        "late",
        "createdAt",
        "updatedAt",
    } <= set(status)
    assert status["transactionId"] == "TXN-STATUS"
    assert status["status"] == "IN_PROGRESS"
    assert status["paymentResponse"] is None
    assert status["late"] is False
    assert TIMESTAMP.match(status["createdAt"])
    assert TIMESTAMP.match(status["updatedAt"])

    complete = await finish(desktop, terminal, "TXN-STATUS")
    done = await transaction_status(desktop, "TXN-STATUS")
    assert done["status"] == "SUCCESS"
    assert done["paymentResponse"] == complete["paymentResponse"]
    assert done["late"] is False
    assert done["createdAt"] == status["createdAt"]
    assert done["updatedAt"] >= status["updatedAt"]


async def test_status_of_unknown_or_other_stores_transaction_is_not_found(gateway: Gateway):
    mine, other = gateway.stores(2)
    other_terminal = await gateway.connect(other.terminal)
    other_desktop = await gateway.connect(other.desktop)
    await pay(other_desktop, other_terminal, "TERM", "TXN-ONLY-OTHER")

    desktop = await gateway.connect(mine.desktop)
    for tid in ("TXN-NOBODY-HAS", "TXN-ONLY-OTHER"):
        await desktop.send({"action": "getTransactionStatus", "transactionId": tid})
        assert await desktop.recv_error() == {
            "error": "Not Found",
            "message": "Transaction not found",
            "requestAction": "getTransactionStatus",
            "transactionId": tid,
        }


# --- Timeout and late results ---------------------------------------------------------------------


async def test_payment_without_result_times_out_and_terminal_is_told_to_cancel(
    timeout_gateway: Gateway,
):
    gw = timeout_gateway
    store = gw.store()
    terminal = await gw.connect(store.terminal)
    desktop = await gw.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-TIMEOUT")

    complete = await desktop.recv_action("paymentComplete", timeout=10)
    assert complete["paymentResponse"]["transactionId"] == "TXN-TIMEOUT"
    assert complete["paymentResponse"]["status"] == "TIMEOUT"
    cancel = await terminal.recv_action("cancelPayment", timeout=5)
    assert cancel["transactionId"] == "TXN-TIMEOUT"
    status = await transaction_status(desktop, "TXN-TIMEOUT")
    assert status["status"] == "TIMEOUT"


async def test_late_success_after_timeout_is_recorded_and_pushed_again(timeout_gateway: Gateway):
    gw = timeout_gateway
    store = gw.store()
    terminal = await gw.connect(store.terminal)
    desktop = await gw.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-LATE")
    timed_out = await desktop.recv_action("paymentComplete", timeout=10)
    assert timed_out["paymentResponse"]["status"] == "TIMEOUT"
    await terminal.recv_action("cancelPayment", timeout=5)

    await terminal.send(result("TXN-LATE", "SUCCESS"))
    late = await desktop.recv_action("paymentComplete")
    assert late["transactionId"] == "TXN-LATE"
    assert late["paymentResponse"]["status"] == "SUCCESS"
    assert late["late"] is True
    assert late["seq"] == timed_out["seq"] + 1
    status = await transaction_status(desktop, "TXN-LATE")
    assert status["status"] == "SUCCESS"
    assert status["late"] is True


# --- Redelivery -----------------------------------------------------------------------------------


async def test_result_for_an_offline_desktop_is_pushed_when_it_reconnects(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-OFFLINE")
    await desktop.close()

    await terminal.send(result("TXN-OFFLINE"))
    await terminal.ping()  # the result is stored once the terminal's next frame is answered

    back = await gateway.connect(store.desktop)
    missed = await back.frames_until_pong()
    assert [f["action"] for f in missed] == ["paymentComplete"]
    assert missed[0]["transactionId"] == "TXN-OFFLINE"
    assert missed[0]["paymentResponse"]["status"] == "SUCCESS"


async def _two_results(gateway: Gateway) -> tuple[Any, list[dict[str, Any]]]:
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    completes = []
    for tid in ("TXN-R1", "TXN-R2"):
        await pay(desktop, terminal, "TERM", tid)
        completes.append(await finish(desktop, terminal, tid))
    assert completes[1]["seq"] == completes[0]["seq"] + 1
    await desktop.close()
    return store, completes


async def test_unacked_results_are_resent_in_seq_order_on_every_connect(gateway: Gateway):
    store, completes = await _two_results(gateway)
    for _ in range(2):
        desktop = await gateway.connect(store.desktop)
        resent = await desktop.frames_until_pong()
        assert [(f["action"], f["seq"], f["transactionId"]) for f in resent] == [
            ("paymentComplete", c["seq"], c["transactionId"]) for c in completes
        ]
        assert [f["paymentResponse"] for f in resent] == [c["paymentResponse"] for c in completes]
        await desktop.close()


async def test_acknowledged_results_are_not_resent(gateway: Gateway):
    store, completes = await _two_results(gateway)

    desktop = await gateway.connect(store.desktop)
    assert len(await desktop.frames_until_pong()) == 2
    await desktop.send({"action": "ack", "seq": completes[0]["seq"]})
    await desktop.close()

    desktop = await gateway.connect(store.desktop)
    resent = await desktop.frames_until_pong()
    assert [f["seq"] for f in resent] == [completes[1]["seq"]]
    await desktop.send({"action": "ack", "seq": completes[1]["seq"]})
    await desktop.close()

    desktop = await gateway.connect(store.desktop)
    assert await desktop.frames_until_pong() == []


@pytest.mark.parametrize("seq", ["9223372036854775808", "100000000000000000000", "1e20", "-1"])
async def test_ack_of_a_seq_beyond_64_bits_is_bad_request(gateway: Gateway, seq: str):
    store = gateway.store()
    desktop = await gateway.connect(store.desktop)

    await desktop.send(f'{{"action": "ack", "seq": {seq}}}')  # the number exactly as written

    error = await desktop.recv_error()
    assert_error(error, "Bad Request", "seq must be a non-negative integer")
    assert error.get("requestAction") == "ack"
    await desktop.ping()


# --- Terminal reconnect, replacement --------------------------------------------------------------


async def test_terminal_reconnecting_mid_payment_gets_the_request_again_marked_resent(
    gateway: Gateway,
):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    _, original = await pay(desktop, terminal, "TERM", "TXN-RESENT", amount="5")
    terminal.ws.transport.abort()  # the network drops: no close frame

    again = await gateway.connect(store.terminal)
    resent = await again.recv_action("paymentRequest")
    assert resent["resent"] is True
    assert resent["desktopId"] == desktop.connection_id
    assert resent["paymentRequest"] == original["paymentRequest"]
    assert resent["paymentRequest"]["amount"] == "5.00"

    complete = await finish(desktop, again, "TXN-RESENT")
    assert complete["paymentResponse"]["status"] == "SUCCESS"


async def test_newer_connection_of_the_same_device_replaces_the_older(gateway: Gateway):
    store = gateway.store()
    older = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    newer = await gateway.connect(store.terminal)

    assert await older.drain_until_closed() == [
        {"action": "forceDisconnect", "reason": "replaced by a newer connection"}
    ]
    assert older.ws.close_code == 4409
    listed = (await terminals_of(desktop))["TERM"]
    assert listed["connectionId"] == newer.connection_id
    assert listed["status"] == "online"
    await newer.ping()


# --- Heartbeat and live status --------------------------------------------------------------------


async def test_quiet_connection_receives_an_unasked_pong(heartbeat_gateway: Gateway):
    store = heartbeat_gateway.store()
    terminal = await heartbeat_gateway.connect(store.terminal)
    pong = await terminal.recv(timeout=5)  # nothing was sent
    assert pong["action"] == "pong"
    assert TIMESTAMP.match(pong["timestamp"])


async def test_terminal_closing_normally_goes_offline_at_once(heartbeat_gateway: Gateway):
    gw = heartbeat_gateway
    store = gw.store()
    desktop = await gw.connect(store.desktop)
    async with keep_alive(desktop):
        terminal = await gw.connect(store.terminal)
        online = await desktop.recv_action("terminalStatusUpdate")
        assert set(online["terminal"]) == TERMINAL_FIELDS
        assert online["terminal"]["status"] == "online"
        assert online["terminal"]["connectionId"] == terminal.connection_id
        assert online["terminal"]["deviceId"] == "TERM"

        await terminal.close(1000)
        offline = await desktop.recv_action("terminalStatusUpdate", timeout=5)
        # Straight to offline: no reconnecting in between.
        assert offline["terminal"]["status"] == "offline"
        assert offline["terminal"]["deviceId"] == "TERM"
        assert (await terminals_of(desktop))["TERM"]["status"] == "offline"


async def test_terminal_dropping_goes_reconnecting_then_offline_after_grace(
    heartbeat_gateway: Gateway,
):
    gw = heartbeat_gateway
    store = gw.store()
    desktop = await gw.connect(store.desktop)
    async with keep_alive(desktop):
        terminal = await gw.connect(store.terminal)
        await desktop.recv_action("terminalStatusUpdate")
        loop = asyncio.get_running_loop()
        dropped_at = loop.time()
        terminal.ws.transport.abort()

        reconnecting = await desktop.recv_action("terminalStatusUpdate", timeout=5)
        assert reconnecting["terminal"]["status"] == "reconnecting"
        assert reconnecting["terminal"]["deviceId"] == "TERM"
        assert (await terminals_of(desktop))["TERM"]["status"] == "reconnecting"
        offline = await desktop.recv_action("terminalStatusUpdate", timeout=10)
        assert offline["terminal"]["status"] == "offline"
        assert loop.time() - dropped_at >= 1.9  # not before RECONNECT_GRACE_S=2


async def test_silent_connection_is_closed_and_terminal_shows_reconnecting(
    heartbeat_gateway: Gateway,
):
    gw = heartbeat_gateway
    store = gw.store()
    desktop = await gw.connect(store.desktop)
    async with keep_alive(desktop):
        loop = asyncio.get_running_loop()
        started = loop.time()
        terminal = await gw.connect(store.terminal)
        await desktop.recv_action("terminalStatusUpdate")  # online

        frames = await terminal.drain_until_closed(timeout=10)  # the terminal never pings
        silent_for = loop.time() - started
        assert [f["action"] for f in frames] in (["pong"], [])  # at most an unasked pong
        assert terminal.ws.close_code not in (None, 1000)
        assert silent_for >= 1.9  # not before HEARTBEAT_INTERVAL_S + HEARTBEAT_TIMEOUT_S = 2

        update = await desktop.recv_action("terminalStatusUpdate", timeout=5)
        assert update["terminal"]["status"] == "reconnecting"
        assert update["terminal"]["connectionId"] == terminal.connection_id


async def test_last_activity_advances_with_pings(heartbeat_gateway: Gateway):
    gw = heartbeat_gateway
    store = gw.store()
    desktop = await gw.connect(store.desktop)
    terminal = await gw.connect(store.terminal)
    async with keep_alive(desktop, terminal):
        first = (await terminals_of(desktop))["TERM"]["lastActivity"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        latest = first
        # Writes are debounced (here every 0.5 s): poll until one lands, bounded.
        while latest <= first and loop.time() < deadline:
            await asyncio.sleep(0.25)
            latest = (await terminals_of(desktop))["TERM"]["lastActivity"]
        assert latest > first
        assert TIMESTAMP.match(latest)


async def test_healthz_reports_database_and_channel_layer(gateway: Gateway):
    assert await asyncio.to_thread(gateway.server.healthz) == (
        200,
        {"status": "ok", "database": "ok", "channelLayer": "ok"},
    )
