"""Terminal API payments (contract section 10) through the real ASGI application: a nexo
PaymentRequest over ``/terminal-api/sync`` waits for the terminal's paymentResponse on its socket,
TransactionStatus, idempotency, aborts, reversals and exact amounts."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import ApplicationCommunicator

from payments.models import Transaction
from posgateway.asgi import application
from posgateway.nexo import payments as nexo_payments
from sessions.models import TerminalApiMessage
from tests.terminals.test_consumers import TIMEOUT, connect, db, request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def woken_only_by_the_layer(settings):
    """No re-read of the database within a test: a sync request answers only if the end of
    its payment reaches it through the channel layer."""
    settings.TERMINAL_API_RECHECK_S = 60


def header(category: str, service_id: str, sale_id: str = "POS-A", poi_id: str = "TERM-1"):
    return {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": category,
        "MessageType": "Request",
        "SaleID": sale_id,
        "ServiceID": service_id,
        "POIID": poi_id,
    }


def payment_doc(service_id: str, tid: str, amount: Any = "10.99", currency: str = "EUR", **h):
    return {
        "SaleToPOIRequest": {
            "MessageHeader": header("Payment", service_id, **h),
            "PaymentRequest": {
                "SaleData": {
                    "SaleTransactionID": {"TransactionID": tid, "TimeStamp": "2026-01-01T00:00:00Z"}
                },
                "PaymentTransaction": {
                    "AmountsReq": {"Currency": currency, "RequestedAmount": amount}
                },
            },
        }
    }


def raw(document: dict[str, Any], amount: str | None = None) -> bytes:
    """The document as JSON, its amount placeholder ``"AMOUNT"`` written as the literal number
    ``amount`` (exactly as a POS writes it)."""
    text = json.dumps(document)
    if amount is not None:
        text = text.replace('"AMOUNT"', amount)
    return text.encode()


def reference_doc(category: str, service_id: str, ref_service_id: str, **extra: Any):
    body = {
        "MessageReference": {
            "MessageCategory": "Payment",
            "SaleID": "POS-A",
            "ServiceID": ref_service_id,
        },
        **extra,
    }
    return {
        "SaleToPOIRequest": {
            "MessageHeader": header(category, service_id),
            f"{category}Request": body,
        }
    }


async def post(
    body: bytes, key: str, path: str = "/terminal-api/sync", timeout: float = TIMEOUT
) -> tuple[int, bytes]:
    comm = ApplicationCommunicator(
        application,
        {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"x-api-key", key.encode()), (b"content-type", b"application/json")],
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
        },
    )
    await comm.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await comm.receive_output(timeout)
    assert start["type"] == "http.response.start", start
    chunks = []
    while True:
        message = await comm.receive_output(timeout)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await comm.wait(timeout)
    return start["status"], b"".join(chunks)


def body_of(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["SaleToPOIResponse"][name]


async def answer(terminal, status: str = "SUCCESS", code: str | None = "A1") -> dict[str, Any]:
    """The terminal answers the payment request it receives."""
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)
    assert forwarded["action"] == "paymentRequest", forwarded
    tid = forwarded["paymentRequest"]["transactionId"]
    await terminal.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": tid,
                "status": status,
                "authorizationCode": code,
                "errorMessage": None if status == "SUCCESS" else "no",
            },
        }
    )
    return forwarded


async def test_a_sync_payment_waits_for_the_terminal_and_answers_exactly(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    doc = payment_doc("S1", "T-1", amount="AMOUNT")
    call = asyncio.ensure_future(post(raw(doc, "10.99"), store.desktop_key))
    forwarded = await answer(terminal)
    assert forwarded["paymentRequest"]["amount"] == "10.99"
    status, text = await call
    assert status == 200
    assert b'"AuthorizedAmount":10.99' in text
    document = nexo_payments.loads(text)
    response = body_of(document, "PaymentResponse")
    assert response["Response"]["Result"] == "Success"
    assert response["POIData"]["POITransactionID"]["TransactionID"] == "T-1"
    assert response["PaymentResult"]["AmountsResp"] == {
        "Currency": "EUR",
        "AuthorizedAmount": Decimal("10.99"),
    }
    assert response["PaymentResult"]["PaymentAcquirerData"]["ApprovalCode"] == "A1"
    assert document["SaleToPOIResponse"]["MessageHeader"]["MessageType"] == "Response"
    txn = await db(Transaction.objects.get)(transaction_id="T-1")
    assert (txn.status, txn.amount, txn.desktop_id) == (
        "SUCCESS",
        Decimal("10.99"),
        store.desktop.pk,
    )


async def test_a_declined_payment_is_a_refusal(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    call = asyncio.ensure_future(
        post(raw(payment_doc("S1", "T-2", amount="AMOUNT"), "5"), store.desktop_key)
    )
    await answer(terminal, "DECLINED", None)
    _status, text = await call
    response = body_of(json.loads(text), "PaymentResponse")["Response"]
    assert (response["Result"], response["ErrorCondition"]) == ("Failure", "Refusal")
    assert "status=DECLINED" in response["AdditionalResponse"]


async def test_a_retried_service_id_waits_for_the_first_and_starts_nothing_new(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    body = raw(payment_doc("S1", "T-3", amount="AMOUNT"), "0.3")
    first = asyncio.ensure_future(post(body, store.desktop_key))
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)
    second = asyncio.ensure_future(post(body, store.desktop_key))
    await asyncio.sleep(0.2)
    assert not second.done()
    await terminal.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": forwarded["paymentRequest"]["transactionId"],
                "status": "SUCCESS",
                "authorizationCode": "A9",
            },
        }
    )
    (_s1, t1), (_s2, t2) = await first, await second
    assert t1 == t2 or json.loads(t1) == json.loads(t2)
    assert b'"AuthorizedAmount":0.30' in t1
    assert await terminal.receive_nothing(timeout=0.2)  # forwarded once
    assert await db(Transaction.objects.count)() == 1
    assert await db(TerminalApiMessage.objects.count)() == 1
    # and later still: the stored outcome at once
    _s3, t3 = await post(body, store.desktop_key)
    assert json.loads(t3)["SaleToPOIResponse"]["PaymentResponse"]["Response"]["Result"] == "Success"


async def test_status_of_a_message_in_flight_finished_and_unknown(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    call = asyncio.ensure_future(
        post(
            raw(payment_doc("S1", "T-4", amount="AMOUNT", currency="JPY"), "1500"),
            store.desktop_key,
        )
    )
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)
    assert forwarded["paymentRequest"]["amount"] == "1500"
    _, text = await post(raw(reference_doc("TransactionStatus", "Q1", "S1")), store.desktop_key)
    status = body_of(json.loads(text), "TransactionStatusResponse")
    assert status["Response"]["ErrorCondition"] == "InProgress"
    await terminal.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": "T-4",
                "status": "SUCCESS",
                "authorizationCode": "J",
            },
        }
    )
    await call
    _, text = await post(raw(reference_doc("TransactionStatus", "Q2", "S1")), store.desktop_key)
    assert b'"AuthorizedAmount":1500' in text
    status = body_of(json.loads(text), "TransactionStatusResponse")
    assert status["Response"]["Result"] == "Success"
    repeated = status["RepeatedMessageResponse"]
    assert repeated["MessageHeader"]["ServiceID"] == "S1"
    assert (
        repeated["RepeatedResponseMessageBody"]["PaymentResponse"]["Response"]["Result"]
        == "Success"
    )
    _, text = await post(raw(reference_doc("TransactionStatus", "Q3", "NOPE")), store.desktop_key)
    assert (
        body_of(json.loads(text), "TransactionStatusResponse")["Response"]["ErrorCondition"]
        == "NotFound"
    )


async def test_an_abort_ends_the_waiting_sync_payment_aborted(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    call = asyncio.ensure_future(
        post(raw(payment_doc("S1", "T-5", amount="AMOUNT"), "2"), store.desktop_key)
    )
    await terminal.receive_json_from(timeout=TIMEOUT)
    status, text = await post(
        raw(reference_doc("Abort", "A1", "S1", AbortReason="MerchantAbort")), store.desktop_key
    )
    assert (status, text) == (200, b"")
    cancel = await terminal.receive_json_from(timeout=TIMEOUT)
    assert cancel == {**cancel, "action": "cancelPayment", "transactionId": "T-5"}
    await terminal.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "T-5", "status": "CANCELLED"},
        }
    )
    _, text = await call
    response = body_of(json.loads(text), "PaymentResponse")["Response"]
    assert (response["Result"], response["ErrorCondition"]) == ("Failure", "Aborted")


async def test_a_reversal_refunds_part_and_refuses_over_the_remainder(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    call = asyncio.ensure_future(
        post(raw(payment_doc("S1", "T-6", amount="AMOUNT"), "10.99"), store.desktop_key)
    )
    await answer(terminal)
    await call

    def reversal(service_id: str, amount: str) -> bytes:
        doc = {
            "SaleToPOIRequest": {
                "MessageHeader": header("Reversal", service_id),
                "ReversalRequest": {
                    "OriginalPOITransaction": {
                        "POITransactionID": {"TransactionID": "T-6", "TimeStamp": "x"}
                    },
                    "ReversalReason": "MerchantCancel",
                    "ReversedAmount": "AMOUNT",
                },
            }
        }
        return raw(doc, amount)

    call = asyncio.ensure_future(post(reversal("R1", "4.99"), store.desktop_key))
    forwarded = await terminal.receive_json_from(timeout=TIMEOUT)
    assert forwarded["action"] == "refundRequest"
    assert forwarded["refundRequest"]["amount"] == "4.99"
    await terminal.send_json_to(
        {
            "action": "refundResponse",
            "refundResponse": {
                "transactionId": forwarded["refundRequest"]["transactionId"],
                "status": "SUCCESS",
            },
        }
    )
    _, text = await call
    assert b'"ReversedAmount":4.99' in text
    reversal_response = body_of(json.loads(text), "ReversalResponse")
    assert reversal_response["Response"]["Result"] == "Success"
    assert reversal_response["OriginalPOITransaction"]["POITransactionID"]["TransactionID"] == "T-6"
    _, text = await post(reversal("R2", "6.01"), store.desktop_key)
    refused = body_of(json.loads(text), "ReversalResponse")["Response"]
    assert refused["ErrorCondition"] == "NotAllowed"
    assert await terminal.receive_nothing(timeout=0.2)


async def test_busy_and_unreachable_terminals(ws_clients, store):
    _, text = await post(raw(payment_doc("S1", "T-7", amount="AMOUNT"), "1"), store.desktop_key)
    response = body_of(json.loads(text), "PaymentResponse")["Response"]
    assert response["ErrorCondition"] == "UnreachableHost"
    terminal, _ = await connect(ws_clients, store.terminal_key)
    first = asyncio.ensure_future(
        post(raw(payment_doc("S2", "T-8", amount="AMOUNT"), "1"), store.desktop_key)
    )
    await terminal.receive_json_from(timeout=TIMEOUT)
    _, text = await post(raw(payment_doc("S3", "T-9", amount="AMOUNT"), "1"), store.desktop_key)
    assert body_of(json.loads(text), "PaymentResponse")["Response"]["ErrorCondition"] == "Busy"
    await terminal.send_json_to(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "T-8", "status": "SUCCESS"},
        }
    )
    await first


@pytest.mark.parametrize(
    ("mutate", "condition"),
    [
        (lambda d: d["SaleToPOIRequest"]["MessageHeader"].pop("SaleID"), "MessageFormat"),
        (
            lambda d: d["SaleToPOIRequest"]["MessageHeader"].update(ServiceID="12345678901"),
            "MessageFormat",
        ),
        (
            lambda d: d["SaleToPOIRequest"]["MessageHeader"].update(MessageCategory="Reversal"),
            "MessageFormat",
        ),
        (lambda d: d["SaleToPOIRequest"]["MessageHeader"].update(POIID="NOPE"), "NotFound"),
        (
            lambda d: d["SaleToPOIRequest"]["PaymentRequest"]["PaymentTransaction"][
                "AmountsReq"
            ].update(RequestedAmount="10.99"),
            "MessageFormat",
        ),
        (
            lambda d: d["SaleToPOIRequest"]["PaymentRequest"]["PaymentTransaction"][
                "AmountsReq"
            ].update(RequestedAmount=Decimal("10.999")),
            "MessageFormat",
        ),
    ],
)
async def test_a_malformed_document_is_refused_and_changes_nothing(
    ws_clients, store, mutate, condition
):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    doc = payment_doc("S1", "T-10", amount=Decimal("10.99"))
    mutate(doc)
    status, text = await post(nexo_payments.dumps(doc).encode(), store.desktop_key)
    document = json.loads(text)["SaleToPOIResponse"]
    (body,) = [v for k, v in document.items() if k != "MessageHeader"]
    assert (status, body["Response"]["Result"], body["Response"]["ErrorCondition"]) == (
        200,
        "Failure",
        condition,
    )
    assert await db(Transaction.objects.count)() == 0
    assert await db(TerminalApiMessage.objects.count)() == 0
    assert await terminal.receive_nothing(timeout=0.1)


async def test_an_async_payment_is_ok_then_pushed_to_the_desktop_socket(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    desktop, _ = await connect(ws_clients, store.desktop_key)
    status, text = await post(
        raw(payment_doc("S1", "T-11", amount="AMOUNT"), "10.99"),
        store.desktop_key,
        path="/terminal-api/async",
    )
    assert (status, text) == (200, b"ok")
    await answer(terminal)
    frames = []
    while True:
        text_frame = await desktop.receive_from(timeout=TIMEOUT)
        frames.append(text_frame)
        if '"terminalApiResponse"' in text_frame:
            break
    assert '"AuthorizedAmount":10.99' in frames[-1]
    pushed = json.loads(frames[-1])
    assert pushed["SaleToPOIResponse"]["PaymentResponse"]["Response"]["Result"] == "Success"


async def test_the_terminal_api_action_takes_a_payment_on_the_socket(ws_clients, store):
    terminal, _ = await connect(ws_clients, store.terminal_key)
    desktop, _ = await connect(ws_clients, store.desktop_key)
    doc = payment_doc("S1", "T-12", amount="AMOUNT")
    await desktop.send_to(text_data=raw({"action": "terminalApi", **doc}, "10.99").decode())
    await answer(terminal)
    while True:
        text_frame = await desktop.receive_from(timeout=TIMEOUT)
        if '"terminalApiResponse"' in text_frame:
            break
    assert '"AuthorizedAmount":10.99' in text_frame


async def test_many_waiting_sync_payments_hold_no_thread(ws_clients, store, settings):
    """100 sync payments wait for 100 terminals; the threads of the process do not grow with
    them and a socket's ping is still answered while they wait."""
    from tests.factories import make_device

    terminals = []
    for i in range(100):
        _, key = await db(make_device)(store.group, "terminal", f"T{i}")
        terminals.append(key)
    sockets = [(await connect(ws_clients, key))[0] for key in terminals]
    before = threading.active_count()
    calls = [
        asyncio.ensure_future(
            post(
                raw(payment_doc(f"S{i}", f"TX-{i}", poi_id=f"T{i}", amount="AMOUNT"), "1"),
                store.desktop_key,
                timeout=30,
            )
        )
        for i in range(100)
    ]
    forwarded = [await s.receive_json_from(timeout=30) for s in sockets]
    assert all(f["action"] == "paymentRequest" for f in forwarded)
    desktop, _ = await connect(ws_clients, store.desktop_key)
    assert (await request(desktop, {"action": "ping"}))["action"] == "pong"
    assert not any(c.done() for c in calls)
    assert threading.active_count() <= before + 2
    for s, f in zip(sockets, forwarded, strict=True):
        tid = f["paymentRequest"]["transactionId"]
        await s.send_json_to(
            {
                "action": "paymentResponse",
                "paymentResponse": {"transactionId": tid, "status": "SUCCESS"},
            }
        )
    results = await asyncio.gather(*calls)
    assert all(b'"Result":"Success"' in text for _, text in results)


@pytest.mark.parametrize("category", [["Payment"], {"Payment": 1}, 3, None])
def test_a_category_of_any_json_value_is_not_a_payment_message(category):
    document = {"SaleToPOIRequest": {"MessageHeader": {"MessageCategory": category}}}
    assert nexo_payments.category_of(document) is None
