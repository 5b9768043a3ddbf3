"""Two daphne processes sharing one PostgreSQL and one Redis behave as one gateway.

Always on PostgreSQL + Redis (the embedded default is one process by definition), in both CI
runs. Each test makes its own store.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import TIMESTAMP, Gateway, finish, pay, status_update, transaction_status
from tests.e2e.harness import production_deployment

# server_dependent: two server processes behind one database and Redis, one of them killed.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.production,
    pytest.mark.usefixtures("close_clients"),
]


@pytest.fixture(scope="module")
def cluster():
    """Processes A and B on one deployment, as behind a load balancer."""
    with production_deployment() as deployment:
        a = Gateway(deployment, deployment.server())
        b = Gateway(deployment, deployment.server())
        try:
            yield a, b
        finally:
            a.close()
            b.close()


async def test_desktop_on_one_process_pays_on_a_terminal_connected_to_another(cluster):
    a, b = cluster
    store = a.store()
    terminal = await b.connect(store.terminal)
    desktop = await a.connect(store.desktop)

    accepted, forwarded = await pay(desktop, terminal, "TERM", "TXN-CROSS")
    assert accepted["connectionId"] == terminal.connection_id
    assert accepted["status"] == "IN_PROGRESS"
    assert forwarded["desktopId"] == desktop.connection_id

    complete = await finish(desktop, terminal, "TXN-CROSS")
    assert complete["paymentResponse"]["status"] == "SUCCESS"
    assert complete["paymentResponse"]["authorizationCode"] == "AUTH-1"

    # And back the other way: the desktop on B, the terminal on A.
    terminal_a = await a.connect(store.terminal)
    desktop_b = await b.connect(store.desktop)
    await pay(desktop_b, terminal_a, "TERM", "TXN-CROSS-BACK")
    complete = await finish(desktop_b, terminal_a, "TXN-CROSS-BACK", "DECLINED")
    assert complete["paymentResponse"]["status"] == "DECLINED"


async def test_get_terminals_answers_the_same_on_both_processes(cluster):
    a, b = cluster
    store = a.store(desktops=2, terminals=3)
    on_a = await a.connect(store.terminal_keys[0])
    on_b = await b.connect(store.terminal_keys[1])
    desktop_a = await a.connect(store.desktop_keys[0])
    desktop_b = await b.connect(store.desktop_keys[1])

    seen_on_a = await desktop_a.request({"action": "getTerminals"}, "terminalsResponse")
    seen_on_b = await desktop_b.request({"action": "getTerminals"}, "terminalsResponse")
    assert seen_on_a["terminals"] == seen_on_b["terminals"]
    terminals = {t["deviceId"]: t for t in seen_on_a["terminals"]}
    assert sorted(terminals) == ["TERM-1", "TERM-2", "TERM-3"]
    assert terminals["TERM-1"]["connectionId"] == on_a.connection_id
    assert terminals["TERM-2"]["connectionId"] == on_b.connection_id
    assert [terminals[t]["status"] for t in ("TERM-1", "TERM-2", "TERM-3")] == [
        "online",
        "online",
        "offline",
    ]


async def test_terminal_status_updates_cross_processes(cluster):
    a, b = cluster
    store = a.store()
    desktop = await a.connect(store.desktop)

    terminal = await b.connect(store.terminal)
    online = await status_update(desktop, "online")
    assert online["terminal"]["connectionId"] == terminal.connection_id
    assert TIMESTAMP.match(online["terminal"]["connectedAt"])

    await terminal.close(1000)
    offline = await desktop.recv_action("terminalStatusUpdate")
    assert offline["terminal"]["status"] == "offline"
    assert offline["terminal"]["deviceId"] == "TERM"

    dropped = await b.connect(store.terminal)
    await status_update(desktop, "online")
    dropped.ws.transport.abort()
    reconnecting = await desktop.recv_action("terminalStatusUpdate")
    assert reconnecting["terminal"]["status"] == "reconnecting"
    assert reconnecting["terminal"]["connectionId"] == dropped.connection_id


async def test_payment_started_on_a_killed_process_times_out_exactly_once(cluster):
    a, b = cluster
    doomed = Gateway(a.deployment, a.deployment.server(PAYMENT_TIMEOUT_S="2"))
    try:
        store = a.store()
        terminal = await b.connect(store.terminal)
        desktop = await doomed.connect(store.desktop)
        await pay(desktop, terminal, "TERM", "TXN-ORPHANED")
        doomed.server.kill()
    finally:
        doomed.close()

    # The POS reconnects through the load balancer and lands on B.
    back = await b.connect(store.desktop)
    timed_out = await back.recv_action("paymentComplete", timeout=20, transactionId="TXN-ORPHANED")
    assert timed_out["paymentResponse"]["status"] == "TIMEOUT"
    cancel = await terminal.recv_action("cancelPayment", timeout=10)
    assert cancel["transactionId"] == "TXN-ORPHANED"

    # Both surviving processes sweep: neither finishes it a second time.
    desktop_more, terminal_more = await asyncio.gather(back.quiet_for(2), terminal.quiet_for(2))
    assert desktop_more == []
    assert terminal_more == []
    status = await transaction_status(back, "TXN-ORPHANED")
    assert status["status"] == "TIMEOUT"
    assert status["late"] is False
    await back.close()

    # Unacknowledged, it is redelivered on the next connect: once, with the same seq.
    again = await a.connect(store.desktop)
    resent = await again.frames_until_pong()
    assert [(f["action"], f["transactionId"], f["seq"]) for f in resent] == [
        ("paymentComplete", "TXN-ORPHANED", timed_out["seq"])
    ]

    # No second result was numbered behind the desktop's back: the next one follows directly.
    await pay(again, terminal, "TERM", "TXN-AFTER")
    complete = await finish(again, terminal, "TXN-AFTER")
    assert complete["seq"] == timed_out["seq"] + 1
