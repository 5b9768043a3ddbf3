"""A gateway process restarted after a crash finishes what the dead one left, by itself.

The sweeper must start with the server, not with the first request (daphne sends no ASGI lifespan
events, uvicorn does): here nobody connects and nothing asks /healthz until the overdue payment
is already TIMEOUT in the database.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.e2e.conftest import Gateway, pay
from tests.e2e.harness import Server, deployment_for_this_run

# server_dependent: how the sweeper starts with no traffic is the server's (daphne's reactor
# hook in posgateway/asgi.py, uvicorn's ASGI lifespan events).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.usefixtures("close_clients"),
]

STATUS = (
    "from payments.models import Transaction; "
    "print(Transaction.objects.get(transaction_id='TXN-CRASHED').status)"
)


def stored_status(gw: Gateway) -> str:
    return gw.deployment.manage("shell", "-c", STATUS).stdout.strip().splitlines()[-1]


async def test_a_restarted_process_times_out_the_payment_of_the_one_that_died():
    with deployment_for_this_run(PAYMENT_TIMEOUT_S="2") as deployment:
        gw = Gateway(deployment, deployment.server())
        try:
            store = gw.store()
            desktop = await gw.connect(store.desktop)
            terminal = await gw.connect(store.terminal)
            await pay(desktop, terminal, "TERM", "TXN-CRASHED")
            await asyncio.to_thread(gw.server.kill)
            assert await asyncio.to_thread(stored_status, gw) == "IN_PROGRESS"

            # Restarted on the same port; no device and no health check comes.
            deployment.servers.remove(gw.server)
            restarted = Server(deployment, port=gw.server.port)
            deployment.servers.append(restarted)
            await asyncio.to_thread(restarted.start_listening)
            deadline = time.monotonic() + 30
            status = "IN_PROGRESS"
            while status == "IN_PROGRESS" and time.monotonic() < deadline:
                await asyncio.sleep(1)
                status = await asyncio.to_thread(stored_status, gw)
            assert status == "TIMEOUT", restarted.log()
            assert "/healthz" not in restarted.log()
            assert "WSCONNECT" not in restarted.log()

            # The POS comes back and gets the result it missed.
            gw.server = restarted
            back = await gw.connect(store.desktop)
            complete = await back.recv_action("paymentComplete", transactionId="TXN-CRASHED")
            assert complete["paymentResponse"]["status"] == "TIMEOUT"
        finally:
            gw.close()
