"""Refunds over a real socket (contract section 9): a result pushed to a desktop that dropped
comes back on reconnect until acknowledged, and a refund the gateway refuses is answered with the
contract's error and leaves nothing stored. The simulator and the bundled client's refunds are in
test_simulate_terminal.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from posgateway.client import GatewayClient
from tests.e2e.conftest import (
    DeviceClient,
    Gateway,
    finish,
    pay,
    transaction_status,
)

# server_dependent as test_protocol.py: redelivery on reconnect after a dropped socket, and
# error frames, are the server's sockets at work, so `make test-uvicorn` runs them again.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.usefixtures("close_clients"),
]


def refund_frame(terminal_id: str, tid: str, original: str, **request: Any) -> dict[str, Any]:
    return {
        "action": "refund",
        "terminalId": terminal_id,
        "refundRequest": {"transactionId": tid, "originalTransactionId": original, **request},
    }


def refund_result(tid: str, status: str = "SUCCESS") -> dict[str, Any]:
    response = {
        "transactionId": tid,
        "status": status,
        "authorizationCode": "RFD-AUTH-1" if status == "SUCCESS" else None,
        "errorMessage": None if status == "SUCCESS" else f"{status.lower()} by the terminal",
    }
    return {"action": "refundResponse", "refundResponse": response}


async def paid(gateway: Gateway, tid: str, **kw: Any) -> tuple[Any, DeviceClient, DeviceClient]:
    """A store whose desktop has paid ``tid`` (10.00 USD unless told) on its terminal and
    acknowledged the result."""
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", tid, **kw)
    complete = await finish(desktop, terminal, tid)
    await desktop.send({"action": "ack", "seq": complete["seq"]})
    return store, desktop, terminal


# --- Redelivery -----------------------------------------------------------------------------------


async def test_refund_result_for_a_desktop_that_dropped_comes_on_reconnect_until_acked(
    gateway: Gateway,
):
    store, desktop, terminal = await paid(gateway, "TXN-PAID")
    await desktop.close()

    # The bundled client as the POS: refundAccepted, then the network drops.
    pos = GatewayClient(gateway.server.ws_url, store.desktop, heartbeat_interval=None)
    await pos.connect()
    accepted = await pos.refund(
        "TERM", transaction_id="RFD-DROP", original_transaction_id="TXN-PAID", amount="3.00"
    )
    assert (accepted["action"], accepted["status"]) == ("refundAccepted", "IN_PROGRESS")
    pos.abort()
    await pos.close()

    forwarded = await terminal.recv_action("refundRequest")
    assert forwarded["refundRequest"]["transactionId"] == "RFD-DROP"
    await terminal.send(refund_result("RFD-DROP"))
    await terminal.ping()  # the result is stored once the terminal's next frame is answered

    # Re-sent on every connect while not acknowledged.
    for _ in range(2):
        back = await gateway.connect(store.desktop)
        missed = await back.frames_until_pong()
        assert [(f["action"], f["transactionId"]) for f in missed] == [
            ("refundComplete", "RFD-DROP")
        ]
        assert missed[0]["refundResponse"]["status"] == "SUCCESS"
        assert missed[0]["refundResponse"]["originalTransactionId"] == "TXN-PAID"
        await back.close()

    # The bundled client takes it as a result and acknowledges it: not sent again.
    async with GatewayClient(gateway.server.ws_url, store.desktop, heartbeat_interval=None) as pos:
        result = await pos.wait_result("RFD-DROP", timeout=10)
        await pos.ping()  # the ack went before the ping, so it is handled before the pong
    assert (result.status, result.is_refund, result.original_transaction_id) == (
        "SUCCESS",
        True,
        "TXN-PAID",
    )
    assert result.seq == missed[0]["seq"]
    again = await gateway.connect(store.desktop)
    assert await again.frames_until_pong() == []


# --- Refused refunds ----------------------------------------------------------------------------


async def assert_refused(
    desktop: DeviceClient, frame: dict[str, Any], error: str, message: str
) -> dict[str, Any]:
    """The refund is answered with this error naming it, and no refund is stored."""
    tid = frame["refundRequest"]["transactionId"]
    await desktop.send(frame)
    refused = await desktop.recv_error()
    assert (refused["error"], refused["message"]) == (error, message), refused
    assert (refused.get("requestAction"), refused.get("transactionId")) == ("refund", tid), refused
    await desktop.send({"action": "getTransactionStatus", "transactionId": tid})
    assert (await desktop.recv_error())["message"] == "Transaction not found"
    return refused


async def test_refund_of_an_unknown_payment_is_not_found(gateway: Gateway):
    _, desktop, terminal = await paid(gateway, "TXN-KNOWN")
    await assert_refused(
        desktop, refund_frame("TERM", "RFD-1", "TXN-UNKNOWN"), "Not Found", "Transaction not found"
    )
    # A refund is not a payment to refund either.
    await desktop.send(refund_frame("TERM", "RFD-2", "TXN-KNOWN", amount="1.00"))
    await desktop.recv_action("refundAccepted")
    await terminal.recv_action("refundRequest")
    await terminal.send(refund_result("RFD-2"))
    await desktop.recv_action("refundComplete")
    await assert_refused(
        desktop, refund_frame("TERM", "RFD-3", "RFD-2"), "Not Found", "Transaction not found"
    )
    assert await terminal.frames_until_pong() == [], "nothing more reached the terminal"


async def test_refund_of_a_declined_payment_is_conflict(gateway: Gateway):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    desktop = await gateway.connect(store.desktop)
    await pay(desktop, terminal, "TERM", "TXN-DECLINED")
    await finish(desktop, terminal, "TXN-DECLINED", "DECLINED")

    refused = await assert_refused(
        desktop,
        refund_frame("TERM", "RFD-OF-DECLINED", "TXN-DECLINED"),
        "Conflict",
        "Only a successful payment can be refunded",
    )
    assert refused["status"] == "DECLINED"
    assert (await transaction_status(desktop, "TXN-DECLINED"))["refundedAmount"] == "0.00"
    assert await terminal.frames_until_pong() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"currency": "EUR"}, "currency does not match the original payment"),
        ({"reason": "x" * 201}, "refundRequest.reason must be a string of at most 200 characters"),
        ({"amount": "10.01"}, "amount exceeds the refundable amount"),
    ],
    ids=["other-currency", "reason-too-long", "over-the-payment"],
)
async def test_refund_with_bad_details_is_bad_request_and_not_stored(
    gateway: Gateway, change: dict[str, str], message: str
):
    _, desktop, terminal = await paid(gateway, "TXN-PAID")
    await assert_refused(
        desktop, refund_frame("TERM", "RFD-BAD", "TXN-PAID", **change), "Bad Request", message
    )
    status = await transaction_status(desktop, "TXN-PAID")
    assert (status["status"], status["refundedAmount"]) == ("SUCCESS", "0.00")
    assert await terminal.frames_until_pong() == []

    # Nothing was reserved either: the whole payment can still be refunded.
    await desktop.send(refund_frame("TERM", "RFD-GOOD", "TXN-PAID"))
    accepted = await desktop.recv_action("refundAccepted")
    assert accepted["amount"] == "10.00"
