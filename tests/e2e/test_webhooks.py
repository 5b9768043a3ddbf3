"""Webhooks from a real server process (contract section 11, issue 15's "done when"): a manager
adds an endpoint with the REST API, a POS pays and refunds over real sockets, and a Standard
Webhooks receiver gets both events, verified, from the server's own in-process worker."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import Gateway, finish, pay
from tests.e2e.test_multiprocess import rest_post
from tests.e2e.test_refunds import refund_frame, refund_result
from tests.webhooks.receivers import Receiver

# server_dependent: the worker starts from daphne's reactor hook or uvicorn's lifespan events.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.usefixtures("close_clients"),
]


async def test_a_payment_and_its_refund_reach_a_verifying_receiver(gateway: Gateway):
    store = gateway.store()
    made = await asyncio.to_thread(
        gateway.deployment.manage, "create_staff", f"mgr-{store.slug}", "--group", store.slug
    )
    token = made.stdout.strip().splitlines()[-1]
    receiver = Receiver().start()
    try:
        status, endpoint = await asyncio.to_thread(
            rest_post,
            gateway.server,
            "/api/webhook-endpoints/",
            token,
            {
                "group": store.slug,
                "url": receiver.url,
                "events": ["payment.succeeded", "refund.succeeded"],
            },
        )
        assert status == 201, endpoint
        receiver.secret = endpoint["secret"]

        terminal = await gateway.connect(store.terminal)
        desktop = await gateway.connect(store.desktop)
        await pay(desktop, terminal, "TERM", "WH-PAY", amount="12.30", currency="EUR")
        await finish(desktop, terminal, "WH-PAY")
        await desktop.send(refund_frame("TERM", "WH-RFD", "WH-PAY", amount="2.30"))
        await terminal.recv_action("refundRequest")
        await terminal.send(refund_result("WH-RFD"))
        await desktop.recv_action("refundComplete")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(receiver.events()) < 2 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        events = sorted(receiver.events(), key=lambda e: e["type"])
        assert [(e["type"], e["data"]["transactionId"]) for e in events] == [
            ("payment.succeeded", "WH-PAY"),
            ("refund.succeeded", "WH-RFD"),
        ]
        assert all(r.error == "" for r in receiver.received)
        assert events[1]["data"]["amount"] == "2.30"
        assert events[0]["group"] == store.slug
    finally:
        receiver.stop()
