"""``manage.py simulate_terminal`` against a real daphne: each behaviour ends the payment (or the
refund) as its name says, seen by a POS through ``paymentComplete`` (``refundComplete``) and
``getTransactionStatus``; the refunds with the bundled client as the POS.

The server times payments out after 3 s, so ``timeout`` and ``late`` take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from posgateway.backoffice.management.commands.simulate_terminal import Simulator
from posgateway.client import GatewayClient, GatewayError
from tests.e2e.conftest import (
    DeviceClient,
    Gateway,
    Store,
    _gateway,
    keep_alive,
    payment_frame,
    status_update,
    transaction_status,
)
from tests.e2e.harness import PYTHON
from tests.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("close_clients")]

PAYMENT_TIMEOUT_S = 3


# Every store of this module in one Django start-up (through create_device's own service):
# a process start per device costs more than these tests on a busy machine.
_STORES = """
import json, uuid
from terminals import services
out = []
for _ in range({count}):
    group = services.group_get_or_create(slug="e2e-sim-" + uuid.uuid4().hex[:12])
    _, desktop = services.device_create(group=group, device_type="desktop", device_id="POS")
    _, terminal = services.device_create(group=group, device_type="terminal", device_id="TERM")
    out.append([group.slug, desktop, terminal])
print(json.dumps(out))
"""
STORES_NEEDED = 12  # one per test


@pytest.fixture(scope="module")
def sim_gateway():
    with _gateway(PAYMENT_TIMEOUT_S=str(PAYMENT_TIMEOUT_S)) as gw:
        code = _STORES.format(count=STORES_NEEDED)
        made = json.loads(gw.deployment.manage("shell", "-c", code).stdout.strip().splitlines()[-1])
        gw.sim_stores = [
            Store(slug, [desktop], [terminal], ["TERM"]) for slug, desktop, terminal in made
        ]
        yield gw


def new_store(gw: Gateway) -> Store:
    return gw.sim_stores.pop()


class Simulated:
    """A simulated terminal running in this test's event loop (the command's own Simulator:
    ``manage.py simulate_terminal`` only parses its options into one and runs it)."""

    def __init__(self, simulator: Simulator, task: asyncio.Task) -> None:
        self.simulator = simulator
        self.task = task
        self.lines: list[str] = []

    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, text: str, timeout: float = 10) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while text not in self.log():
            assert loop.time() < deadline, f"{text!r} not in the simulator's output:\n{self.log()}"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def simulated_terminal(
    gw: Gateway, key: str, behaviour: str, *, delay: float = 0.1, count: int = 0, seed: int = 0
) -> AsyncIterator[Simulated]:
    lines: list[str] = []
    simulator = Simulator(
        url=gw.server.ws_url,
        key=key,
        behaviour=behaviour,
        delay=delay,
        count=count,
        duration=60,
        heartbeat=30,
        rng=random.Random(seed),
        write=lines.append,
    )
    simulated = Simulated(simulator, asyncio.create_task(simulator.run()))
    simulated.lines = lines
    try:
        yield simulated
    finally:
        simulated.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await simulated.task


async def start_payment(desktop: DeviceClient, tid: str) -> None:
    await status_update(desktop, "online", timeout=30)  # the simulator is connected
    await desktop.send(payment_frame("TERM", tid))
    await desktop.recv_action("paymentAccepted", transactionId=tid)


async def complete(desktop: DeviceClient, tid: str, timeout: float = 20) -> dict[str, Any]:
    return await desktop.recv_action("paymentComplete", timeout=timeout, transactionId=tid)


def no_more_results(frames: list[dict[str, Any]]) -> bool:
    return not [f for f in frames if f.get("action") == "paymentComplete"]


async def test_the_command_approves_and_stops_after_count(sim_gateway: Gateway):
    """The real command in its own process, as a POS developer runs it."""
    store = new_store(sim_gateway)
    desktop = await sim_gateway.connect(store.desktop)
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "manage.py",
        "simulate_terminal",
        *("--key", store.terminal, "--url", sim_gateway.server.ws_url),
        *("--behaviour", "approve", "--delay", "0.1", "--count", "1"),
        cwd=ROOT,
        env=sim_gateway.deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with keep_alive(desktop):  # a Django start-up on a busy machine takes a while
            await start_payment(desktop, "SIM-cli")
            done = await complete(desktop, "SIM-cli")
            output, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError as exc:
        # What the command and the server said, to tell a slow start from a lost update.
        if proc.returncode is None:
            proc.kill()
        said, _ = await proc.communicate()
        server_log = await asyncio.to_thread(sim_gateway.server.log)
        raise AssertionError(
            f"timed out; the command said:\n{said.decode(errors='replace')}\n"
            f"the server's log ends:\n{server_log[-3000:]}"
        ) from exc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert proc.returncode == 0, output
    assert done["paymentResponse"]["status"] == "SUCCESS"
    assert done["paymentResponse"]["authorizationCode"]
    assert "done: 1 payment request(s) handled" in output.decode()


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        ("approve", "SUCCESS"),
        ("decline", "DECLINED"),
        ("drop", "SUCCESS"),  # drops mid-payment, reconnects, approves the resent request
        ("random", "DECLINED"),  # what seed 0 draws first, as checked below
    ],
)
async def test_a_behaviour_that_answers_ends_the_payment_with_its_status(
    sim_gateway: Gateway, behaviour: str, status: str
):
    if behaviour == "random":
        weights = [70, 15, 5, 5, 5]
        drawn = random.Random(0).choices(["approve", "decline", "timeout", "drop", "late"], weights)
        assert drawn == ["decline"]
    store = new_store(sim_gateway)
    desktop = await sim_gateway.connect(store.desktop)
    tid = f"SIM-{behaviour}"
    async with simulated_terminal(sim_gateway, store.terminal, behaviour, count=1, seed=0) as sim:
        await start_payment(desktop, tid)

        done = await complete(desktop, tid)
        await asyncio.wait_for(sim.task, 10)  # count=1: it stops by itself

    assert done["paymentResponse"]["status"] == status
    assert done["late"] is False
    assert (done["paymentResponse"]["authorizationCode"] is not None) == (status == "SUCCESS")
    stored = await transaction_status(desktop, tid)
    assert (stored["status"], stored["late"]) == (status, False)
    assert sim.simulator.handled == 1
    if behaviour == "drop":
        assert f"paymentRequest {tid}: 10.00 USD (resent)" in sim.log()


async def test_timeout_leaves_the_payment_timed_out_and_ignores_the_gateways_cancel(
    sim_gateway: Gateway,
):
    store = new_store(sim_gateway)
    desktop = await sim_gateway.connect(store.desktop)
    async with simulated_terminal(sim_gateway, store.terminal, "timeout") as sim:
        await start_payment(desktop, "SIM-timeout")

        done = await complete(desktop, "SIM-timeout", timeout=PAYMENT_TIMEOUT_S + 15)
        await sim.wait_for_line("SIM-timeout: cancel")  # the cancel reached the simulator
        assert no_more_results(await desktop.quiet_for(0.5))

    assert done["paymentResponse"]["status"] == "TIMEOUT"
    stored = await transaction_status(desktop, "SIM-timeout")
    assert (stored["status"], stored["late"]) == ("TIMEOUT", False)
    assert "answered" not in sim.log()
    assert "SIM-timeout: cancel ignored (not answering)" in sim.log()


async def test_late_answers_success_after_the_gateway_gave_up(sim_gateway: Gateway):
    store = new_store(sim_gateway)
    desktop = await sim_gateway.connect(store.desktop)
    async with simulated_terminal(sim_gateway, store.terminal, "late", count=1) as sim:
        await start_payment(desktop, "SIM-late")

        timed_out = await complete(desktop, "SIM-late", timeout=PAYMENT_TIMEOUT_S + 15)
        late = await complete(desktop, "SIM-late")
        await asyncio.wait_for(sim.task, 10)

    assert (timed_out["paymentResponse"]["status"], timed_out["late"]) == ("TIMEOUT", False)
    assert (late["paymentResponse"]["status"], late["late"]) == ("SUCCESS", True)
    stored = await transaction_status(desktop, "SIM-late")
    assert (stored["status"], stored["late"]) == ("SUCCESS", True)


async def test_a_pos_cancel_during_the_delay_is_answered_cancelled(sim_gateway: Gateway):
    """The simulator reads frames while it "processes" a payment (--delay), as a real terminal
    does: the POS's cancel ends the payment CANCELLED instead of waiting behind it."""
    store = new_store(sim_gateway)
    desktop = await sim_gateway.connect(store.desktop)
    async with simulated_terminal(sim_gateway, store.terminal, "approve", delay=30) as sim:
        await start_payment(desktop, "SIM-cancel")
        await sim.wait_for_line("paymentRequest SIM-cancel")
        reply = await desktop.request(
            {"action": "cancelPayment", "transactionId": "SIM-cancel"}, "cancelRequested"
        )
        assert reply["forwarded"] is True

        done = await complete(desktop, "SIM-cancel")
        assert no_more_results(await desktop.quiet_for(0.3))

    assert (done["paymentResponse"]["status"], done["late"]) == ("CANCELLED", False)
    stored = await transaction_status(desktop, "SIM-cancel")
    assert (stored["status"], stored["late"]) == ("CANCELLED", False)
    assert "SIM-cancel: answered CANCELLED" in sim.log()
    assert "answered SUCCESS" not in sim.log()
    assert "gateway error" not in sim.log()
    assert sim.simulator.handled == 1


# --- Refunds, with the bundled client as the POS ------------------------------------------------


@contextlib.asynccontextmanager
async def pos_client(gw: Gateway, store: Store) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(gw.server.ws_url, store.desktop, heartbeat_interval=None) as pos:
        yield pos


async def paid_by_simulator(gw: Gateway, store: Store, pos: GatewayClient, tid: str) -> None:
    """An approving simulator takes one payment of 10.00 USD and stops."""
    async with simulated_terminal(gw, store.terminal, "approve", count=1) as sim:
        await sim.wait_for_line("connected as TERM")
        await pos.pay("TERM", transaction_id=tid, amount="10.00", currency="USD")
        assert (await pos.wait_result(tid, timeout=20)).status == "SUCCESS"
        await asyncio.wait_for(sim.task, 10)


async def test_refunds_in_parts_until_nothing_is_left(sim_gateway: Gateway):
    store = new_store(sim_gateway)
    async with (
        pos_client(sim_gateway, store) as pos,
        simulated_terminal(sim_gateway, store.terminal, "approve") as sim,
    ):
        await sim.wait_for_line("connected as TERM")
        await pos.pay("TERM", transaction_id="SIM-paid", amount="10.00", currency="USD")
        assert (await pos.wait_result("SIM-paid", timeout=20)).status == "SUCCESS"

        accepted = await pos.refund(
            "TERM",
            transaction_id="SIM-refund-1",
            original_transaction_id="SIM-paid",
            amount="4.00",
            reason="damaged item",
        )
        first = await pos.wait_result("SIM-refund-1", timeout=20)
        # No amount: what is left of the payment.
        rest = await pos.refund(
            "TERM", transaction_id="SIM-refund-2", original_transaction_id="SIM-paid"
        )
        second = await pos.wait_result("SIM-refund-2", timeout=20)
        with pytest.raises(GatewayError) as nothing_left:
            await pos.refund(
                "TERM", transaction_id="SIM-refund-3", original_transaction_id="SIM-paid"
            )
        payment = await pos.status("SIM-paid")
        refund = await pos.status("SIM-refund-1")
        # The first refund again, once finished: its stored result, not a second refund.
        repeated = await pos.refund(
            "TERM",
            transaction_id="SIM-refund-1",
            original_transaction_id="SIM-paid",
            amount="4.00",
            reason="damaged item",
        )

    assert (accepted["action"], accepted["originalTransactionId"]) == ("refundAccepted", "SIM-paid")
    assert (accepted["amount"], accepted["currency"], accepted["status"]) == (
        "4.00",
        "USD",
        "IN_PROGRESS",
    )
    assert (first.status, first.original_transaction_id) == ("SUCCESS", "SIM-paid")
    assert first.authorization_code
    assert first.response["amount"] == "4.00"
    assert rest["amount"] == "6.00"
    assert (second.status, second.response["amount"]) == ("SUCCESS", "6.00")
    assert nothing_left.value.message == "amount exceeds the refundable amount"
    assert nothing_left.value.frame["refundableAmount"] == "0.00"
    assert (payment["type"], payment["status"], payment["refundedAmount"]) == (
        "PAYMENT",
        "SUCCESS",
        "10.00",
    )
    assert (refund["type"], refund["originalTransactionId"], refund["amount"]) == (
        "REFUND",
        "SIM-paid",
        "4.00",
    )
    assert refund["refundResponse"]["status"] == "SUCCESS"
    assert repeated["action"] == "refundComplete"
    assert repeated["refundResponse"]["authorizationCode"] == first.authorization_code
    assert "refundRequest SIM-refund-1: 4.00 USD of payment SIM-paid" in sim.log()
    assert "refundRequest SIM-refund-2: 6.00 USD of payment SIM-paid" in sim.log()
    assert f"refund SIM-refund-1: answered SUCCESS ({first.authorization_code})" in sim.log()
    assert "SIM-refund-3" not in sim.log()


async def test_a_declining_simulator_declines_the_refund(sim_gateway: Gateway):
    store = new_store(sim_gateway)
    async with pos_client(sim_gateway, store) as pos:
        await paid_by_simulator(sim_gateway, store, pos, "SIM-paid")
        async with simulated_terminal(sim_gateway, store.terminal, "decline", count=1) as sim:
            await sim.wait_for_line("connected as TERM")
            await pos.refund("TERM", transaction_id="SIM-rd", original_transaction_id="SIM-paid")
            declined = await pos.wait_result("SIM-rd", timeout=20)
            await asyncio.wait_for(sim.task, 10)
        payment = await pos.status("SIM-paid")

    assert (declined.status, declined.error_message) == ("DECLINED", "Refund declined")
    assert (declined.is_refund, declined.authorization_code) == (True, None)
    assert payment["refundedAmount"] == "0.00"
    assert "refund SIM-rd: answered DECLINED" in sim.log()
    assert (sim.simulator.handled, sim.simulator.refunds_handled) == (1, 1)


async def test_a_refund_the_simulator_never_answers_times_out(sim_gateway: Gateway):
    store = new_store(sim_gateway)
    async with pos_client(sim_gateway, store) as pos:
        await paid_by_simulator(sim_gateway, store, pos, "SIM-paid")
        async with simulated_terminal(sim_gateway, store.terminal, "timeout") as sim:
            await sim.wait_for_line("connected as TERM")
            await pos.refund("TERM", transaction_id="SIM-rt", original_transaction_id="SIM-paid")
            timed_out = await pos.wait_result("SIM-rt", timeout=PAYMENT_TIMEOUT_S + 15)
            await sim.wait_for_line("refund SIM-rt: cancel")  # the cancel reached the simulator
        refund = await pos.status("SIM-rt")
        payment = await pos.status("SIM-paid")

    assert (timed_out.status, timed_out.late, timed_out.is_refund) == ("TIMEOUT", False, True)
    assert (refund["type"], refund["status"]) == ("REFUND", "TIMEOUT")
    assert payment["refundedAmount"] == "0.00"
    assert "refund SIM-rt: not answering" in sim.log()
    assert "refund SIM-rt: cancel ignored (not answering)" in sim.log()
    assert "answered" not in sim.log()


async def test_a_pos_cancel_of_a_refund_during_the_delay_is_answered_cancelled(
    sim_gateway: Gateway,
):
    store = new_store(sim_gateway)
    async with pos_client(sim_gateway, store) as pos:
        await paid_by_simulator(sim_gateway, store, pos, "SIM-paid")
        async with simulated_terminal(sim_gateway, store.terminal, "approve", delay=30) as sim:
            await sim.wait_for_line("connected as TERM")
            await pos.refund("TERM", transaction_id="SIM-rc", original_transaction_id="SIM-paid")
            await sim.wait_for_line("refundRequest SIM-rc")
            requested = await pos.cancel("SIM-rc")
            cancelled = await pos.wait_result("SIM-rc", timeout=10)
        payment = await pos.status("SIM-paid")

    assert (requested["action"], requested["forwarded"]) == ("cancelRequested", True)
    assert (cancelled.status, cancelled.is_refund) == ("CANCELLED", True)
    assert payment["refundedAmount"] == "0.00"
    assert "refund SIM-rc: answered CANCELLED" in sim.log()
    assert (sim.simulator.handled, sim.simulator.refunds_handled) == (1, 1)
