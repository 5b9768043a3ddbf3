"""The bundled Python client (``posgateway.client.GatewayClient``) against a real daphne: a result
is acknowledged only once the application has it, so none goes missing; ``wait_result`` of a
finished transaction answers at once (the README's snippet runs twice in a row).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from posgateway.client import GatewayClient, GatewayError, PaymentResult
from tests.e2e.conftest import DeviceClient, Gateway, Store, result
from tests.e2e.test_refunds import refund_result

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("close_clients")]


@contextlib.asynccontextmanager
async def pos_client(gw: Gateway, store: Store, **kw) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(gw.server.ws_url, store.desktop, heartbeat_interval=None, **kw) as pos:
        yield pos


async def answer(terminal: DeviceClient, tid: str, status: str = "SUCCESS") -> None:
    """The terminal takes the forwarded request and answers it."""
    forwarded = await terminal.recv_action("paymentRequest")
    assert forwarded["paymentRequest"]["transactionId"] == tid
    await terminal.send(result(tid, status))
    await terminal.ping()  # the result is stored once the terminal's next frame is answered


async def resent_on_connect(gw: Gateway, store: Store) -> list[tuple[str, str]]:
    """What the gateway re-sends a desktop on connect: the results not acknowledged."""
    desktop = await gw.connect(store.desktop)
    frames = await desktop.frames_until_pong()
    await desktop.close()
    return [(f["action"], f["transactionId"]) for f in frames]


async def a_completed_while_offline(gw: Gateway) -> tuple[Store, DeviceClient]:
    """Payment A is started, the POS goes offline, A completes: its result waits for the POS."""
    store = gw.store()
    terminal = await gw.connect(store.terminal)
    async with pos_client(gw, store) as pos:
        await pos.pay("TERM", transaction_id="A", amount="1.00", currency="EUR")
    await answer(terminal, "A")
    return store, terminal


async def test_waiting_for_one_result_does_not_acknowledge_an_earlier_one_not_received(
    gateway: Gateway,
):
    store, terminal = await a_completed_while_offline(gateway)

    async with pos_client(gateway, store) as pos:
        await pos.pay("TERM", transaction_id="B", amount="2.00", currency="EUR")
        await answer(terminal, "B")
        b = await pos.wait_result("B", timeout=10)
        await pos.ping()  # any ack went before the ping, so it is handled before the pong

    assert b.status == "SUCCESS"
    # A reached the client but not the application: it is still re-sent (and B after it).
    assert resent_tids(await resent_on_connect(gateway, store)) == ["A", "B"]


def resent_tids(frames: list[tuple[str, str]]) -> list[str]:
    assert {action for action, _ in frames} <= {"paymentComplete", "refundComplete"}
    return [tid for _, tid in frames]


async def test_a_result_nobody_waits_for_comes_through_results_and_is_then_acknowledged(
    gateway: Gateway,
):
    store, terminal = await a_completed_while_offline(gateway)

    async with pos_client(gateway, store) as pos:
        await pos.pay("TERM", transaction_id="B", amount="2.00", currency="EUR")
        await answer(terminal, "B")
        b = await pos.wait_result("B", timeout=10)
        other = await asyncio.wait_for(anext(aiter(pos.results())), 10)
        await pos.ping()

    assert (b.transaction_id, other.transaction_id, other.status) == ("B", "A", "SUCCESS")
    assert await resent_on_connect(gateway, store) == []


async def test_on_result_receives_what_nobody_waits_for(gateway: Gateway):
    store, _ = await a_completed_while_offline(gateway)
    received: list[PaymentResult] = []
    got = asyncio.Event()

    def on_result(r: PaymentResult) -> None:
        received.append(r)
        got.set()

    async with pos_client(gateway, store, on_result=on_result) as pos:
        await asyncio.wait_for(got.wait(), 10)
        await pos.ping()

    assert [(r.transaction_id, r.status) for r in received] == [("A", "SUCCESS")]
    assert await resent_on_connect(gateway, store) == []


async def test_the_readme_snippet_runs_twice_without_waiting(gateway: Gateway):
    """pay + wait_result, then the same again in a new process: the second run answers from
    the stored result at once instead of waiting for a push that never comes."""
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    async with pos_client(gateway, store) as pos:
        await pos.pay("TERM", transaction_id="TXN-1", amount="12.50", currency="EUR")
        await answer(terminal, "TXN-1")
        first = await pos.wait_result("TXN-1", timeout=10)

    async with pos_client(gateway, store) as pos:
        again = await pos.pay("TERM", transaction_id="TXN-1", amount="12.50", currency="EUR")
        second = await pos.wait_result("TXN-1", timeout=3)
        # Also without the pay() before it: from getTransactionStatus.
    async with pos_client(gateway, store) as pos:
        third = await pos.wait_result("TXN-1", timeout=3)

    assert again["action"] == "paymentComplete"
    assert (first.status, second.status, third.status) == ("SUCCESS",) * 3
    assert second.authorization_code == third.authorization_code == first.authorization_code
    assert await terminal.quiet_for(0.2) == []
    assert await resent_on_connect(gateway, store) == []


async def test_wait_result_of_an_unknown_transaction_is_not_found_at_once(gateway: Gateway):
    store = gateway.store()
    async with pos_client(gateway, store) as pos:
        with pytest.raises(GatewayError) as missing:
            await pos.wait_result("NEVER-STARTED", timeout=3)
    assert missing.value.message == "Transaction not found"


async def test_a_refund_result_is_never_lost_and_wait_result_of_a_finished_refund_answers(
    gateway: Gateway,
):
    store = gateway.store()
    terminal = await gateway.connect(store.terminal)
    async with pos_client(gateway, store) as pos:
        await pos.pay("TERM", transaction_id="P", amount="5.00", currency="EUR")
        await answer(terminal, "P")
        await pos.wait_result("P", timeout=10)
        await pos.refund("TERM", transaction_id="R", original_transaction_id="P")
    # The refund completes while the POS is offline.
    forwarded = await terminal.recv_action("refundRequest")
    assert forwarded["refundRequest"]["transactionId"] == "R"
    await terminal.send(refund_result("R"))
    await terminal.ping()

    async with pos_client(gateway, store) as pos:
        await pos.pay("TERM", transaction_id="B", amount="1.00", currency="EUR")
        await answer(terminal, "B")
        await pos.wait_result("B", timeout=10)
        await pos.ping()
    assert resent_tids(await resent_on_connect(gateway, store)) == ["R", "B"]

    async with pos_client(gateway, store) as pos:
        others = [r.transaction_id for r in pos.take_results()]
        while len(others) < 2:  # the re-sent results may still be on their way
            others.append((await asyncio.wait_for(anext(aiter(pos.results())), 10)).transaction_id)
        await pos.ping()
    async with pos_client(gateway, store) as pos:
        refund = await pos.wait_result("R", timeout=3)

    assert others == ["R", "B"]
    assert await resent_on_connect(gateway, store) == []
    assert (refund.status, refund.is_refund, refund.original_transaction_id) == (
        "SUCCESS",
        True,
        "P",
    )
