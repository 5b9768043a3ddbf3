"""Two daphne processes sharing one PostgreSQL and one Redis behave as one gateway.

Always on PostgreSQL + Redis (the embedded default is one process by definition), in both CI
runs. Each test makes its own store.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.conftest import (
    TIMESTAMP,
    DeviceClient,
    Gateway,
    finish,
    pay,
    status_update,
    transaction_status,
)
from tests.e2e.harness import Server, production_deployment

# server_dependent: two server processes behind one database and Redis, one of them killed.
# production_pass_only: the cluster is its own PostgreSQL + Redis deployment whichever pass
# runs, so the embedded pass would run exactly what the PostgreSQL pass runs.
pytestmark = [
    pytest.mark.production_pass_only,
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.production,
    pytest.mark.usefixtures("close_clients"),
]


ANON_RATE = 10


@pytest.fixture(scope="module")
def cluster():
    """Processes A and B on one deployment, as behind a load balancer. A sync Terminal API
    request re-reads the database only after a minute: within a test it is answered only when
    the end of its payment, on whichever process, reaches it through Redis. A low anonymous
    REST rate for the shared-throttle test (the other tests' REST calls carry a token)."""
    with production_deployment(API_THROTTLE_ANON=f"{ANON_RATE}/min") as deployment:
        a = Gateway(deployment, deployment.server(TERMINAL_API_RECHECK_S="60"))
        b = Gateway(deployment, deployment.server(TERMINAL_API_RECHECK_S="60"))
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


# --- Terminal API (nexo) payments across processes --------------------------------------------


def nexo_request(category: str, service_id: str, body: dict[str, Any]) -> dict[str, Any]:
    header = {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": category,
        "MessageType": "Request",
        "SaleID": "POS-MP",
        "ServiceID": service_id,
        "POIID": "TERM",
    }
    return {"SaleToPOIRequest": {"MessageHeader": header, f"{category}Request": body}}


def nexo_payment(service_id: str, tid: str) -> bytes:
    """A PaymentRequest of 10.99 EUR, the amount a JSON number as a POS writes it."""
    body = {
        "SaleData": {"SaleTransactionID": {"TransactionID": tid, "TimeStamp": "2026-01-01T00:00Z"}},
        "PaymentTransaction": {"AmountsReq": {"Currency": "EUR", "RequestedAmount": "AMOUNT"}},
    }
    text = json.dumps(nexo_request("Payment", service_id, body))
    return text.replace('"AMOUNT"', "10.99").encode()


def nexo_status(service_id: str, of_service_id: str) -> bytes:
    reference = {"MessageCategory": "Payment", "SaleID": "POS-MP", "ServiceID": of_service_id}
    body = {"MessageReference": reference}
    return json.dumps(nexo_request("TransactionStatus", service_id, body)).encode()


def terminal_api_sync(server: Server, key: str, body: bytes) -> dict[str, Any]:
    """POST /terminal-api/sync; the answer with its numbers as exact decimals."""
    request = urllib.request.Request(
        f"{server.url}/terminal-api/sync",
        data=body,
        method="POST",
        headers={"x-api-key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read(), parse_float=Decimal)


async def approve(terminal: DeviceClient, tid: str) -> None:
    forwarded = await terminal.recv_action("paymentRequest")
    assert forwarded["paymentRequest"]["transactionId"] == tid
    assert forwarded["paymentRequest"]["amount"] == "10.99"
    response = {"transactionId": tid, "status": "SUCCESS", "authorizationCode": "AUTH-NX"}
    await terminal.send({"action": "paymentResponse", "paymentResponse": response})


async def test_a_sync_terminal_api_payment_waits_on_one_process_for_a_terminal_on_the_other(
    cluster,
):
    a, b = cluster
    store = a.store()
    terminal = await b.connect(store.terminal)

    call = asyncio.ensure_future(
        asyncio.to_thread(terminal_api_sync, a.server, store.desktop, nexo_payment("MP1", "NX-1"))
    )
    await approve(terminal, "NX-1")
    document = await call

    payment = document["SaleToPOIResponse"]["PaymentResponse"]
    assert payment["Response"]["Result"] == "Success"
    assert payment["PaymentResult"]["AmountsResp"] == {
        "Currency": "EUR",
        "AuthorizedAmount": Decimal("10.99"),
    }
    assert payment["PaymentResult"]["PaymentAcquirerData"]["ApprovalCode"] == "AUTH-NX"
    assert payment["POIData"]["POITransactionID"]["TransactionID"] == "NX-1"


async def test_a_client_gone_mid_wait_cancels_nothing_and_its_outcome_stays_for_status(cluster):
    a, b = cluster
    store = a.store()
    terminal = await b.connect(store.terminal)
    desktop = await b.connect(store.desktop)
    host, port = a.server.url.removeprefix("http://").split(":")
    body = nexo_payment("MP2", "NX-GONE")

    # The POS posts to A, then its connection drops while A waits for the terminal on B.
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /terminal-api/sync HTTP/1.1\r\nHost: gateway\r\n"
        + f"x-api-key: {store.desktop}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    forwarded = await terminal.recv_action("paymentRequest")
    writer.close()
    await writer.wait_closed()
    in_flight = await asyncio.to_thread(
        terminal_api_sync, b.server, store.desktop, nexo_status("MP2S1", "MP2")
    )
    status = in_flight["SaleToPOIResponse"]["TransactionStatusResponse"]["Response"]
    assert (status["Result"], status["ErrorCondition"]) == ("Failure", "InProgress")

    # The terminal answers after the POS has gone: the payment goes on, nothing is cancelled.
    assert forwarded["paymentRequest"]["transactionId"] == "NX-GONE"
    response = {"transactionId": "NX-GONE", "status": "SUCCESS", "authorizationCode": "AUTH-NX"}
    await terminal.send({"action": "paymentResponse", "paymentResponse": response})
    await desktop.recv_action("paymentComplete", transactionId="NX-GONE")
    assert await terminal.frames_until_pong() == []  # no cancelPayment

    # Asked again (on either process), the lost response is there.
    for server, service_id in ((b.server, "MP2S2"), (a.server, "MP2S3")):
        answer = await asyncio.to_thread(
            terminal_api_sync, server, store.desktop, nexo_status(service_id, "MP2")
        )
        status_response = answer["SaleToPOIResponse"]["TransactionStatusResponse"]
        assert status_response["Response"]["Result"] == "Success"
        repeated = status_response["RepeatedMessageResponse"]["RepeatedResponseMessageBody"]
        payment = repeated["PaymentResponse"]
        assert payment["Response"]["Result"] == "Success"
        assert payment["PaymentResult"]["AmountsResp"]["AuthorizedAmount"] == Decimal("10.99")
    assert (await transaction_status(desktop, "NX-GONE"))["status"] == "SUCCESS"


# --- Refunds of one payment racing from both processes ----------------------------------------

PAID = Decimal("10.00")
EXCEEDS = "amount exceeds the refundable amount"
# Each round: one payment of 10.00 EUR, then a refund per amount, all at once, together more
# than the payment (None: "the whole refundable amount", whatever is left when it is read).
ROUNDS: list[list[str | None]] = [
    ["3.00"] * 6,
    ["4.00", "3.50", "2.50", "2.00", "1.50", "5.00"],
    ["6.00", None, "3.00", "3.00", "0.01", "9.99"],
]


@dataclass
class Refund:
    """One refund of a round and what its starter got back."""

    tid: str
    terminal_id: str
    amount: str | None
    accepted: dict[str, Any] | None = None  # refundAccepted (REST: the 202 body)
    refused: dict[str, Any] | None = None  # the error frame (REST: the error body)
    results: list[dict[str, Any]] = field(default_factory=list)  # its refundComplete frames

    def request(self, original: str) -> dict[str, Any]:
        body = {"transactionId": self.tid, "originalTransactionId": original}
        if self.amount is not None:
            body["amount"] = self.amount
        return body


Racer = Callable[[], Awaitable[None]]


async def approve_refunds(terminal: DeviceClient, delay: float) -> None:
    """A terminal that approves every refund it is asked for, after ``delay`` seconds."""
    while True:
        request = await terminal.recv_action("refundRequest", timeout=3600)
        tid = request["refundRequest"]["transactionId"]
        await asyncio.sleep(delay)
        response = {"transactionId": tid, "status": "SUCCESS", "authorizationCode": f"R{tid}"}
        await terminal.send({"action": "refundResponse", "refundResponse": response})


def desktop_racer(desktop: DeviceClient, original: str, refund: Refund) -> Racer:
    """The desktop asks for the refund; accepted, it waits for the result and acks it."""

    async def race() -> None:
        frame = {"action": "refund", "terminalId": refund.terminal_id}
        await desktop.send({**frame, "refundRequest": refund.request(original)})
        while refund.accepted is None:
            answer = await desktop.recv(15)
            if answer.get("transactionId") != refund.tid:
                continue  # terminal status updates and the like
            if "error" in answer:
                refund.refused = answer
                return
            assert answer["action"] == "refundAccepted", answer
            refund.accepted = answer
        complete = await desktop.recv_action("refundComplete", 15, transactionId=refund.tid)
        refund.results.append(complete)
        await desktop.send({"action": "ack", "seq": complete["seq"]})

    return race


class RefundRace:
    """A store on both processes: desktops (one per refund of a round), a terminal for the
    payments (TERM-1) and one per refund (TERM-2 …), every other one on the other process,
    each approving its refunds after its own short delay."""

    def __init__(self, cluster: tuple[Gateway, Gateway], refunds: int, rest: int = 0) -> None:
        self.processes = cluster
        self.store = cluster[0].store(desktops=refunds, terminals=1 + refunds + rest)
        self.desktops: list[DeviceClient] = []
        self.terminals: list[DeviceClient] = []
        self.approving: list[asyncio.Task] = []

    async def connect(self) -> RefundRace:
        a, b = self.processes
        for n, key in enumerate(self.store.desktop_keys):
            self.desktops.append(await (a, b)[n % 2].connect(key))
        for n, key in enumerate(self.store.terminal_keys):
            self.terminals.append(await (b, a)[n % 2].connect(key))
        for n, terminal in enumerate(self.terminals[1:]):
            self.approving.append(asyncio.create_task(approve_refunds(terminal, 0.03 * n)))
        return self

    def stop(self) -> None:
        for task in self.approving:
            task.cancel()

    async def paid(self, tid: str) -> None:
        desktop, terminal = self.desktops[0], self.terminals[0]
        await pay(desktop, terminal, "TERM-1", tid, amount=str(PAID), currency="EUR")
        complete = await finish(desktop, terminal, tid)
        await desktop.send({"action": "ack", "seq": complete["seq"]})

    def refunds(self, round_: int, amounts: list[str | None], first_terminal: int = 2):
        return [
            Refund(f"RFD-{round_}-{n}", f"TERM-{first_terminal + n}", amount)
            for n, amount in enumerate(amounts)
        ]

    async def run(self, original: str, refunds: list[Refund], *others: Racer) -> None:
        """The desktops' refunds and the ``others`` all at once."""
        racers = [
            desktop_racer(d, original, r) for d, r in zip(self.desktops, refunds, strict=True)
        ]
        await asyncio.gather(*(race() for race in [*racers, *others]))

    async def settled(self, tid: str) -> dict[str, Any]:
        """getTransactionStatus of a transaction once it is final."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:
            status = await transaction_status(self.desktops[-1], tid)
            if status["status"] not in ("PENDING", "IN_PROGRESS") or loop.time() > deadline:
                return status
            await asyncio.sleep(0.1)


async def check_round(race: RefundRace, original: str, refunds: list[Refund]) -> None:
    """The accepted refunds fit in the payment, each refused one did not fit (and was told
    what did), each accepted one succeeded once, and the payment counts exactly those."""
    taken = sum((Decimal(str(r.accepted["amount"])) for r in refunds if r.accepted), Decimal(0))
    assert taken <= PAID, refunds
    for refund in refunds:
        assert (refund.accepted is None) != (refund.refused is None), refund
        if refund.refused is None:
            continue
        shown = Decimal(refund.refused.get("refundableAmount", "NaN"))
        # Nothing was refused that fitted: what was left then is at least what is left now.
        assert shown >= PAID - taken, (refund, refunds)
        assert shown < Decimal(refund.amount) if refund.amount else shown == 0, refund
        assert refund.results == [], refund
        await race.desktops[0].send({"action": "getTransactionStatus", "transactionId": refund.tid})
        status = await race.desktops[0].recv_error()
        assert status["message"] == "Transaction not found", status  # never stored
    for refund in refunds:
        if refund.accepted is None:
            continue
        if refund.accepted.get("action") == "refundAccepted":
            [result] = refund.results
            assert result["late"] is False
            assert result["refundResponse"]["status"] == "SUCCESS"
            assert result["refundResponse"]["amount"] == refund.accepted["amount"]
        else:  # started through the REST API: nobody is pushed its result
            assert (await race.settled(refund.tid))["status"] == "SUCCESS", refund
    payment = await transaction_status(race.desktops[0], original)
    assert payment["refundedAmount"] == f"{taken:.2f}"
    # Each result once: nothing more comes to any desktop.
    for desktop in race.desktops:
        assert [f for f in await desktop.frames_until_pong() if "seq" in f] == []


def refused_frame(refund: Refund) -> dict[str, Any]:
    assert refund.refused is not None
    return {
        "error": "Bad Request",
        "message": EXCEEDS,
        "requestAction": "refund",
        "transactionId": refund.tid,
        "refundableAmount": refund.refused.get("refundableAmount"),
    }


async def test_refunds_racing_from_desktops_on_both_processes_never_exceed_the_payment(cluster):
    race = await RefundRace(cluster, refunds=6).connect()
    try:
        # Each round twice: a race between the processes is a matter of milliseconds.
        for round_, amounts in enumerate(ROUNDS * 2):
            original = f"PAY-{round_}"
            await race.paid(original)
            refunds = race.refunds(round_, amounts)

            await race.run(original, refunds)

            await check_round(race, original, refunds)
            for refund in refunds:
                if refund.refused is not None:
                    assert refund.refused == refused_frame(refund)
            if amounts == ROUNDS[0]:  # 6 x 3.00 of 10.00: three fit, and 1.00 is left
                assert sum(r.accepted is not None for r in refunds) == 3, refunds
                assert {r.refused["refundableAmount"] for r in refunds if r.refused} == {"1.00"}
    finally:
        race.stop()


# Each round's refunds through the REST API, on top of the desktops' (one per process).
REST_ROUNDS: list[list[str | None]] = [["3.00", "3.00"], ["2.00", "4.50"], [None, "1.00"]]


def rest_post(server: Server, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw[:300]


def rest_racer(server: Server, token: str, original: str, refund: Refund) -> Racer:
    """A manager's refund through the REST API of one process (its result is not pushed)."""

    async def race() -> None:
        body: dict[str, Any] = {"transactionId": refund.tid, "terminal": refund.terminal_id}
        if refund.amount is not None:
            body["amount"] = refund.amount
        path = f"/api/transactions/{original}/refunds/"
        status, answer = await asyncio.to_thread(rest_post, server, path, token, body)
        if status == 202:
            refund.accepted = answer
        else:
            assert status == 400, (status, answer)
            refund.refused = answer

    return race


async def test_refunds_racing_from_desktops_and_the_rest_api_never_exceed_the_payment(cluster):
    a, b = cluster
    race = await RefundRace(cluster, refunds=6, rest=2).connect()
    try:
        made = await asyncio.to_thread(
            a.deployment.manage,
            "create_staff",
            f"mgr-{race.store.slug}",
            "--group",
            race.store.slug,
        )
        token = made.stdout.strip().splitlines()[-1]
        for round_, amounts in enumerate(ROUNDS):
            original = f"PAY-{round_}"
            await race.paid(original)
            if round_ == 0:
                # An empty body is refused for its missing fields (not 404/405: the endpoint
                # exists) and starts nothing.
                path = f"/api/transactions/{original}/refunds/"
                status, _ = await asyncio.to_thread(rest_post, a.server, path, token, {})
                assert status == 400
            refunds = race.refunds(round_, amounts)
            by_rest = race.refunds(round_ + 100, REST_ROUNDS[round_], first_terminal=8)
            others = [
                rest_racer(server, token, original, refund)
                for server, refund in zip((a.server, b.server), by_rest, strict=True)
            ]

            await race.run(original, refunds, *others)

            for refund in by_rest:
                if refund.refused is not None:
                    assert refund.refused["error"] == "Bad Request", refund
                    assert refund.refused["message"] == EXCEEDS, refund
            await check_round(race, original, [*refunds, *by_rest])
    finally:
        race.stop()


def anonymous_status(server: Server) -> int:
    try:
        with urllib.request.urlopen(f"{server.url}/api/groups/", timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_rest_throttle_counts_one_client_across_both_processes(cluster):
    """The counts are in Redis (Django's cache), not in each process's memory: a client spread
    over N processes by a load balancer gets the rate once, not N times."""
    a, b = cluster
    on_a = [anonymous_status(a.server) for _ in range(ANON_RATE // 2)]
    on_b = [anonymous_status(b.server) for _ in range(ANON_RATE - ANON_RATE // 2)]

    assert on_a + on_b == [401] * ANON_RATE
    assert anonymous_status(b.server) == 429
    assert anonymous_status(a.server) == 429
