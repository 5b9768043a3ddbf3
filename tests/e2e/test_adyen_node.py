"""Adyen's own Node library (npm ``@adyen/api-library``, ``TerminalCloudAPI``) against the gateway.

A POS that already talks to Adyen's cloud Terminal API points the library's
``terminalApiCloudEndpoint`` at the gateway and uses its desktop key as ``apiKey``. The library
speaks only HTTPS and sends chunked bodies, so daphne serves TLS itself here with a throwaway CA
(tests/e2e/tls.py) that Node trusts through ``NODE_EXTRA_CA_CERTS``; the terminal and desktop
sockets use ``wss://`` trusting the same CA. tests/node/adyen_session.js reports, per step, what
the library returned and what Node actually put on the wire; tests/node/adyen_payments.js takes
payments, reversals, statuses and aborts through the library while playing the terminal on a
real socket (contract section 10), and the gateway's REST API then shows what was stored. The
last test runs our own Python client (posgateway.client) over the same TLS server, as
docs/terminal-api.md shows it.

Adyen's Python library (PyPI ``Adyen``, up to 16.0.0) has no cloud Terminal API service (no
``/terminal-api/sync`` call, no nexo models): there is nothing of it to run here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from posgateway.client import GatewayClient, Operation, TerminalApiClient, TerminalApiError
from tests.e2e.conftest import DeviceClient as Device
from tests.e2e.harness import deployment_for_this_run
from tests.e2e.tls import tls_server
from tests.services import ROOT, missing, node_with_ws

pytestmark = [pytest.mark.e2e]

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "adyen_session.js"
PAYMENTS_SCRIPT = NODE_DIR / "adyen_payments.js"
SESSION_ACTIONS = ("sessionBegin", "sessionEnd")


@pytest.fixture(scope="module")
def node() -> str:
    node = node_with_ws()
    if not (NODE_DIR / "node_modules" / "@adyen" / "api-library").is_dir():
        missing("the npm @adyen/api-library package is not installed (make node-deps)")
    return node


@pytest.fixture(scope="module")
def deployment():
    with deployment_for_this_run() as deployment:
        yield deployment


@pytest.fixture(scope="module")
def server(deployment):
    with tls_server(deployment) as server:
        yield server


@dataclass
class Store:
    slug: str
    desktop_key: str
    terminal_key: str
    terminal_id: str
    token: str = ""  # a manager's REST API token (the payments store)


# One manage.py process makes every store of this module (each process start costs seconds).
# The payments store also has a terminal that never connects and a manager's REST token.
MAKE_STORES = """
import json
from terminals import services
out = {}
for name, slug, terminal_id in json.loads(WANTED):
    group = services.group_get_or_create(slug=slug)
    _, desktop = services.device_create(group=group, device_type="desktop", device_id="POS-1")
    _, terminal = services.device_create(
        group=group, device_type="terminal", device_id=terminal_id
    )
    out[name] = [slug, desktop, terminal, terminal_id]
    if name == "payments":
        services.device_create(group=group, device_type="terminal", device_id="TERM-OFF")
        _, token = services.staff_create_or_update(
            username=f"mgr-{slug}", group_slugs=[slug], password=None, role="manager"
        )
        out[name].append(token)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def stores(deployment) -> dict[str, Store]:
    """A store of its own (desktop POS-1, one terminal) for each test, plus another store."""
    wanted = [
        (name, f"adyen-{name}-{uuid.uuid4().hex[:8]}", terminal_id)
        for name, terminal_id in [
            ("sessions", "TERM-001"),
            ("failures", "TERM-001"),
            ("other", "OTHER-TERM"),
            ("probe", "TERM-001"),
            ("python", "TERM-001"),
            ("payments", "TERM-001"),
        ]
    ]
    code = MAKE_STORES.replace("WANTED", repr(json.dumps(wanted)))
    proc = deployment.manage("shell", "-c", code)
    made = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: Store(*fields) for name, fields in made.items()}


@pytest.fixture
async def connect(server):
    """Connect a device over wss:// (trusting only the throwaway CA); closed after the test."""
    opened: list[Device] = []

    async def open_device(key: str) -> Device:
        client = await Device.connect(server.ws_url, key, ssl=server.certs.ssl_context())
        opened.append(client)
        hello = await client.recv()
        assert hello.get("action") == "connected", hello
        client.hello = hello
        return client

    yield open_device
    for client in opened:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 2)


@dataclass
class AdyenRun:
    returncode: int
    reports: list[dict[str, Any]]
    stderr: str

    def __getitem__(self, step: str) -> dict[str, Any]:
        found = [r for r in self.reports if r.get("step") == step]
        assert found, f"adyen_session.js reported no {step!r}:\n{self}"
        return found[-1]

    def sent(self, step: str) -> dict[str, Any]:
        """The request body Node actually sent for a step."""
        return json.loads(self[step]["wire"]["body"])

    def __str__(self) -> str:
        lines = "\n".join(json.dumps(r, default=str) for r in self.reports)
        return f"exit {self.returncode}\n{lines}\nstderr:\n{self.stderr}"


@pytest.fixture
def run_adyen(node, server):
    async def run(
        scenario: str, key: str, *, trust_ca: bool = True, script: Any = SCRIPT, **env: str
    ) -> AdyenRun:
        full_env = {k: v for k, v in os.environ.items() if k != "NODE_EXTRA_CA_CERTS"}
        full_env.update(GATEWAY_URL=server.url, GATEWAY_KEY=key, **env)
        if trust_ca:
            full_env["NODE_EXTRA_CA_CERTS"] = str(server.certs.ca_file)
        proc = await asyncio.create_subprocess_exec(
            node,
            str(script),
            scenario,
            cwd=NODE_DIR,
            env=full_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        reports = []
        for line in out.decode().splitlines():
            try:
                # Numbers as the exact decimals Node wrote: 10.99 is Decimal("10.99").
                reports.append(json.loads(line, parse_float=Decimal))
            except ValueError:
                reports.append({"step": "output", "text": line})
        result = AdyenRun(proc.returncode, reports, err.decode(errors="replace"))
        assert proc.returncode == 0, f"{script.name} {scenario} failed:\n{result}"
        assert result["done"], str(result)
        return result

    return run


def decoded_identification(document: dict[str, Any]) -> dict[str, Any]:
    value = document["SaleToPOIRequest"]["AdminRequest"]["ServiceIdentification"]
    return json.loads(base64.b64decode(value))


def session_frames(device: Device) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in frame.items() if k != "timestamp"}
        for frame in device.seen
        if frame.get("action") in SESSION_ACTIONS
    ]


def waiting_screen(op_type: str, ms: int) -> dict[str, Any]:
    return {"type": op_type, "variant": "WaitingScreen", "waitingScreenTimeoutMs": ms}


@pytest.mark.node
async def test_adyen_node_library_begins_and_ends_sessions_over_sync_and_async(
    stores, connect, run_adyen
):
    store = stores["sessions"]
    terminal = await connect(store.terminal_key)
    desktop = await connect(store.desktop_key)
    prefix = f"t{uuid.uuid4().hex[:8]}"

    run = await run_adyen(
        "sessions", store.desktop_key, POI_ID=store.terminal_id, SESSION_PREFIX=prefix
    )

    # sync(): the library deserialises a Success whose header echoes the request's.
    for step in ("syncBegin", "syncEnd"):
        response = run[step]["result"]["SaleToPOIResponse"]
        assert response["AdminResponse"] == {"Response": {"Result": "Success"}}, str(run)
        sent_header = run.sent(step)["SaleToPOIRequest"]["MessageHeader"]
        assert response["MessageHeader"] == {**sent_header, "MessageType": "Response"}
    # async(): Adyen's cloud answers the plain text "ok", and so does the gateway.
    assert run["asyncBegin"]["result"] == "ok", str(run)
    assert run["asyncEnd"]["result"] == "ok", str(run)

    # What went over the wire: the key in X-API-Key, a chunked body, ServiceIdentification kept.
    for step in ("syncBegin", "syncEnd", "asyncBegin", "asyncEnd"):
        head = run[step]["wire"]["header"].lower()
        assert f"x-api-key: {store.desktop_key}".lower() in head
        assert "transfer-encoding: chunked" in head
        assert "content-length" not in head
    assert decoded_identification(run.sent("syncBegin"))["Session"] == {
        "Id": f"{prefix}-sync",
        "Type": "Begin",
    }
    assert decoded_identification(run.sent("asyncEnd")) == {
        "Session": {"ID": f"{prefix}-async", "Type": "End"}
    }

    # The terminal is told of each begin (with the operations) and end, in order.
    await terminal.recv_action("sessionEnd", session={"id": f"{prefix}-async"})
    assert await terminal.frames_until_pong() == []
    assert session_frames(terminal) == [
        {
            "action": "sessionBegin",
            "session": {
                "id": f"{prefix}-sync",
                "operations": [
                    waiting_screen("Payment", 5000),
                    waiting_screen("InputRequest", 3000),
                ],
            },
        },
        {
            "action": "sessionEnd",
            "session": {"id": f"{prefix}-sync"},
            "interruptWaitingScreen": False,
            "reason": "ended",
        },
        {
            "action": "sessionBegin",
            "session": {
                "id": f"{prefix}-async",
                "operations": [waiting_screen("DisplayRequest", 2000)],
            },
        },
        {
            "action": "sessionEnd",
            "session": {"id": f"{prefix}-async"},
            "interruptWaitingScreen": False,
            "reason": "ended",
        },
    ]

    # The async responses reach the desktop's socket; the sync ones were answered over HTTP.
    await desktop.recv_action("terminalApiResponse")
    await desktop.recv_action("terminalApiResponse")
    await desktop.frames_until_pong()
    pushed = [f for f in desktop.seen if f.get("action") == "terminalApiResponse"]
    assert [f["SaleToPOIResponse"]["MessageHeader"] for f in pushed] == [
        {**run.sent(step)["SaleToPOIRequest"]["MessageHeader"], "MessageType": "Response"}
        for step in ("asyncBegin", "asyncEnd")
    ]
    assert all(
        f["SaleToPOIResponse"]["AdminResponse"] == {"Response": {"Result": "Success"}}
        for f in pushed
    )


@pytest.mark.node
async def test_adyen_node_library_parses_failures_and_a_refused_key(stores, connect, run_adyen):
    store, other = stores["failures"], stores["other"]
    terminal = await connect(store.terminal_key)
    desktop = await connect(store.desktop_key)
    other_terminal = await connect(other.terminal_key)

    run = await run_adyen(
        "failures",
        store.desktop_key,
        POI_ID=store.terminal_id,
        OTHER_STORE_POI_ID=other.terminal_id,
    )

    def not_found(poi_id: str) -> dict[str, Any]:
        return {
            "Result": "Failure",
            "ErrorCondition": "NotFound",
            "AdditionalResponse": f"No terminal with POIID {poi_id} in this store",
        }

    # sync(): the library deserialises the Failure like Adyen's own.
    response = run["syncUnknownPoi"]["result"]["SaleToPOIResponse"]
    assert response["AdminResponse"]["Response"] == not_found("NO-SUCH-TERMINAL"), str(run)
    assert response["MessageHeader"]["MessageType"] == "Response"
    # async(): a refused document is answered with the Failure itself, not "ok".
    response = run["asyncUnknownPoi"]["result"]["SaleToPOIResponse"]
    assert response["AdminResponse"]["Response"] == not_found("NO-SUCH-TERMINAL"), str(run)
    # Another store's terminal reads exactly like one that does not exist.
    response = run["syncOtherStorePoi"]["result"]["SaleToPOIResponse"]
    assert response["AdminResponse"]["Response"] == not_found("OTHER-TERM"), str(run)
    # A wrong key: HTTP 401, which the library raises as an HttpClientException.
    error = run["wrongKey"]["error"]
    assert (error["name"], error["statusCode"]) == ("HttpClientException", 401), str(run)

    # Nothing reached any terminal, and no Failure was pushed to the desktop.
    for device in (terminal, other_terminal, desktop):
        assert await device.frames_until_pong() == []


@pytest.mark.node
async def test_adyen_node_library_refuses_the_gateway_unless_its_ca_is_trusted(stores, run_adyen):
    store = stores["probe"]

    untrusted = await run_adyen("probe", store.desktop_key, trust_ca=False)
    trusted = await run_adyen("probe", store.desktop_key, trust_ca=True)

    # The library verifies the certificate with Node's trust store: without the CA it fails...
    assert "certificate" in untrusted["probe"]["error"]["message"], str(untrusted)
    assert "result" not in untrusted["probe"]
    # ...and with NODE_EXTRA_CA_CERTS the same request reaches the gateway and is answered.
    result = trusted["probe"]["result"]["SaleToPOIResponse"]["AdminResponse"]["Response"]
    assert result["ErrorCondition"] == "NotFound", str(trusted)


def rest_transaction(server, token: str, tid: str) -> tuple[int, dict[str, Any]]:
    """The gateway's REST view of a transaction, as a manager of its store reads it."""
    request = urllib.request.Request(
        f"{server.url}/api/transactions/{tid}/", headers={"Authorization": f"Token {token}"}
    )
    try:
        with urllib.request.urlopen(
            request, timeout=10, context=server.certs.ssl_context()
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def nexo(run: AdyenRun, step: str) -> dict[str, Any]:
    """The SaleToPOIResponse Adyen's library parsed for a step (the step must have one)."""
    report = run[step]
    assert "result" in report, f"{step}: {report}\n{run}"
    return report["result"]["SaleToPOIResponse"]


def condition(response: dict[str, Any]) -> tuple[str, str | None]:
    return response["Response"]["Result"], response["Response"].get("ErrorCondition")


@pytest.mark.node
async def test_adyen_node_library_pays_reverses_asks_status_and_aborts(
    stores, connect, run_adyen, server
):
    store = stores["payments"]
    desktop = await connect(store.desktop_key)

    run = await run_adyen(
        "payments",
        store.desktop_key,
        script=PAYMENTS_SCRIPT,
        POI_ID=store.terminal_id,
        OFFLINE_POI_ID="TERM-OFF",
        TERMINAL_URL=server.ws_url,
        TERMINAL_KEY=store.terminal_key,
        RUN=uuid.uuid4().hex[:3],
    )

    print(run)
    # Approved: the library deserialised its own models, amounts exact as Node holds them.
    paid = nexo(run, "pay1099")
    payment = paid["PaymentResponse"]
    assert condition(payment) == ("Success", None), str(run)
    assert payment["PaymentResult"]["AmountsResp"] == {
        "Currency": "EUR",
        "AuthorizedAmount": Decimal("10.99"),
    }
    assert payment["PaymentResult"]["PaymentAcquirerData"]["ApprovalCode"] == "AUTH1"
    assert payment["POIData"]["POITransactionID"]["TransactionID"] == "PAY-1099"
    assert payment["SaleData"]["SaleTransactionID"]["TransactionID"] == "PAY-1099"
    assert paid["MessageHeader"]["MessageType"] == "Response"
    assert {
        path: run["pay1099"]["types"][path]
        for path in (
            "SaleToPOIResponse",
            "SaleToPOIResponse.MessageHeader",
            "SaleToPOIResponse.PaymentResponse",
            "SaleToPOIResponse.PaymentResponse.Response",
            "SaleToPOIResponse.PaymentResponse.PaymentResult.AmountsResp",
            "SaleToPOIResponse.PaymentResponse.PaymentResult.PaymentAcquirerData",
            "SaleToPOIResponse.PaymentResponse.POIData.POITransactionID",
        )
    } == {
        "SaleToPOIResponse": "SaleToPOIResponse",
        "SaleToPOIResponse.MessageHeader": "MessageHeader",
        "SaleToPOIResponse.PaymentResponse": "PaymentResponse",
        "SaleToPOIResponse.PaymentResponse.Response": "Response",
        "SaleToPOIResponse.PaymentResponse.PaymentResult.AmountsResp": "AmountsResp",
        "SaleToPOIResponse.PaymentResponse.PaymentResult.PaymentAcquirerData": (
            "PaymentAcquirerData"
        ),
        "SaleToPOIResponse.PaymentResponse.POIData.POITransactionID": ("TransactionIdentification"),
    }
    # The same ServiceID again: the first one's answer, and the terminal asked once.
    assert nexo(run, "retry1099") == paid
    asked = [(f["action"], f["transactionId"], f.get("amount")) for f in run["terminal"]["sent"]]
    assert asked.count(("paymentRequest", "PAY-1099", "10.99")) == 1, asked
    # 0.3 and JPY 1500 exact, each way.
    amounts = nexo(run, "pay03")["PaymentResponse"]["PaymentResult"]["AmountsResp"]
    assert amounts == {"Currency": "EUR", "AuthorizedAmount": Decimal("0.3")}
    amounts = nexo(run, "payJpy")["PaymentResponse"]["PaymentResult"]["AmountsResp"]
    assert amounts == {"Currency": "JPY", "AuthorizedAmount": 1500}
    assert ("paymentRequest", "PAY-03", "0.30") in asked
    assert ("paymentRequest", "PAY-JPY", "1500") in asked

    declined = nexo(run, "declined")["PaymentResponse"]
    assert condition(declined) == ("Failure", "Refusal")
    assert "PaymentResult" not in declined
    assert condition(nexo(run, "unreachable")["PaymentResponse"]) == ("Failure", "UnreachableHost")
    assert condition(nexo(run, "busy")["PaymentResponse"]) == ("Failure", "Busy")

    # In flight, then aborted: the original sync call ends Aborted, and its status says so.
    in_flight = nexo(run, "statusInFlight")["TransactionStatusResponse"]
    assert condition(in_flight) == ("Failure", "InProgress")
    # The abort's HTTP 200 with an empty body, as Adyen's cloud answers it: an empty response.
    assert (run["abort"]["result"], run["abort"]["types"]) == ({}, {"": "TerminalApiResponse"})
    assert ("cancelPayment", "HOLD-A", None) in asked
    assert condition(nexo(run, "held")["PaymentResponse"]) == ("Failure", "Aborted")
    status = nexo(run, "statusAborted")["TransactionStatusResponse"]
    assert condition(status) == ("Success", None)
    repeated = status["RepeatedMessageResponse"]
    assert condition(repeated["RepeatedResponseMessageBody"]["PaymentResponse"]) == (
        "Failure",
        "Aborted",
    )
    assert repeated["MessageHeader"]["MessageCategory"] == "Payment"
    assert (
        run["statusAborted"]["types"][
            "SaleToPOIResponse.TransactionStatusResponse.RepeatedMessageResponse"
        ]
        == "RepeatedMessageResponse"
    )

    # A response the POS gave up on: the payment went on, and its status has the answer.
    assert "error" in run["lost"], str(run)
    status = nexo(run, "statusLost")["TransactionStatusResponse"]
    assert condition(status) == ("Success", None)
    lost = status["RepeatedMessageResponse"]["RepeatedResponseMessageBody"]["PaymentResponse"]
    assert condition(lost) == ("Success", None)
    assert lost["PaymentResult"]["AmountsResp"]["AuthorizedAmount"] == Decimal("25.5")
    unknown = nexo(run, "statusUnknown")["TransactionStatusResponse"]
    assert condition(unknown) == ("Failure", "NotFound")

    # Reversals: 4.00 of 10.99, then 7.00 of the 6.99 left is refused.
    reversal = nexo(run, "reversal")["ReversalResponse"]
    assert condition(reversal) == ("Success", None)
    assert reversal["ReversedAmount"] == 4
    over = nexo(run, "overReversal")["ReversalResponse"]
    assert condition(over) == ("Failure", "NotAllowed")
    assert "6.99" in over["Response"]["AdditionalResponse"]
    refunds_asked = [(action, amount) for action, _, amount in asked if action == "refundRequest"]
    assert refunds_asked == [("refundRequest", "4.00")]  # the refused one reached no terminal

    # Async: "ok", then the answer on the desktop's socket.
    assert run["async"]["result"] == "ok", str(run)
    pushed = await desktop.recv_action("terminalApiResponse")
    response = pushed["SaleToPOIResponse"]["PaymentResponse"]
    assert condition(response) == ("Success", None)
    assert response["POIData"]["POITransactionID"]["TransactionID"] == "PAY-ASYNC"

    error = run["wrongKey"]["error"]
    assert (error["name"], error["statusCode"]) == ("HttpClientException", 401), str(run)

    # What the gateway stored, as its REST API shows any payment.
    def stored(tid: str) -> dict[str, Any] | None:
        code, body = rest_transaction(server, store.token, tid)
        assert code in (200, 404), (tid, code)
        return body if code == 200 else None

    rows = await asyncio.to_thread(
        lambda: {
            tid: stored(tid)
            for tid in (
                "PAY-1099",
                "PAY-03",
                "PAY-JPY",
                "DECL-1",
                "HOLD-A",
                "HOLD-LOST",
                "PAY-ASYNC",
                "PAY-BUSY",
                "PAY-OFF",
                "PAY-KEY",
            )
        }
    )
    shown = {
        tid: row and (row["status"], row["amount"], row["currency"]) for tid, row in rows.items()
    }
    assert shown == {
        "PAY-1099": ("SUCCESS", "10.99", "EUR"),
        "PAY-03": ("SUCCESS", "0.30", "EUR"),
        "PAY-JPY": ("SUCCESS", "1500", "JPY"),
        "DECL-1": ("DECLINED", "5.00", "EUR"),
        "HOLD-A": ("CANCELLED", "20.00", "EUR"),
        "HOLD-LOST": ("SUCCESS", "25.50", "EUR"),
        "PAY-ASYNC": ("SUCCESS", "12.34", "EUR"),
        "PAY-BUSY": None,
        "PAY-OFF": None,
        "PAY-KEY": None,
    }
    paid_row = rows["PAY-1099"]
    assert paid_row is not None
    assert (paid_row["refundedAmount"], paid_row["refundableAmount"]) == ("4.00", "6.99")
    assert [(r["status"], r["amount"]) for r in paid_row["refunds"]] == [("SUCCESS", "4.00")]


async def test_python_client_runs_a_session_with_input_and_payment_over_tls(stores, server):
    store = stores["python"]
    tls = server.certs.ssl_context()
    api = TerminalApiClient(server.url, store.desktop_key, sale_id="POS-1", ssl_context=tls)
    async with (
        GatewayClient(server.ws_url, store.desktop_key, ssl_context=tls) as pos,
        GatewayClient(server.ws_url, store.terminal_key, ssl_context=tls) as terminal,
    ):
        begun = await asyncio.to_thread(
            api.begin_session,
            poi_id=store.terminal_id,
            session_id="table-12",
            operations=[Operation("InputRequest", 4000), Operation("Payment", 6000)],
        )
        assert begun["SaleToPOIResponse"]["AdminResponse"]["Response"] == {"Result": "Success"}
        begin = await terminal.wait_for("sessionBegin", timeout=10)
        assert begin["session"]["operations"] == [
            waiting_screen("InputRequest", 4000),
            waiting_screen("Payment", 6000),
        ]

        accepted = await pos.ask(
            store.terminal_id, input_type="menu", prompt="Add a tip?", options=["0%", "10%"]
        )
        asked = await terminal.wait_for("inputRequest", timeout=10)
        assert asked["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 4000}
        await terminal.answer_input(asked["requestId"], value="10%")
        tip = await pos.wait_request_result(accepted["requestId"], timeout=10)
        assert (tip["inputResponse"]["status"], tip["inputResponse"]["value"]) == ("SUCCESS", "10%")

        await pos.pay(store.terminal_id, transaction_id="T12-1", amount="49.50", currency="EUR")
        forwarded = await terminal.wait_for("paymentRequest", timeout=10)
        assert forwarded["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 6000}
        await terminal.respond("T12-1", "SUCCESS", authorization_code="A1")
        assert (await pos.wait_result("T12-1", timeout=10)).status == "SUCCESS"

        await asyncio.to_thread(api.end_session, session_id="table-12")
        end = await terminal.wait_for("sessionEnd", timeout=10)
        assert (end["session"], end["interruptWaitingScreen"]) == ({"id": "table-12"}, False)

        # After the end, requests carry no waiting screen; a second End is NotFound.
        accepted = await pos.ask(store.terminal_id, input_type="confirmation", prompt="Receipt?")
        asked = await terminal.wait_for("inputRequest", timeout=10)
        assert "waitingScreen" not in asked
        await terminal.answer_input(asked["requestId"], value=False)
        await pos.wait_request_result(accepted["requestId"], timeout=10)
        with pytest.raises(TerminalApiError) as refused:
            await asyncio.to_thread(api.end_session, session_id="table-12")
        assert refused.value.condition == "NotFound"
