"""POST /api/transactions/<transactionId>/refunds/ and the refund fields of the reads."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from payments import services as payments
from payments.models import Transaction, TransactionEvent, TransactionType
from payments.models import TransactionStatus as S
from posgateway.core.events import Outbox
from terminals.models import DeviceType
from tests.api.conftest import make_payment
from tests.factories import Runner, make_device, make_refund, open_connection

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2024, 3, 10, 10, 0, tzinfo=dt.UTC)


def refund(client, payment_id: str, body: dict, query: str = ""):
    url = f"/api/transactions/{quote(payment_id, safe='')}/refunds/{query}"
    return client.post(url, body, format="json")


def refunds_stored() -> int:
    return Transaction.objects.filter(type=TransactionType.REFUND).count()


def received(channel: str) -> dict:
    """The next frame sent to ``channel`` (the wait only guards against a hang)."""
    layer = get_channel_layer()
    message = async_to_sync(asyncio.wait_for)(layer.receive(channel), 5)
    return message["frame"]


@pytest.fixture
def terminal_channel(store_a, django_capture_on_commit_callbacks) -> str:
    """store-a's TERM-1, connected on a channel of its own."""
    channel = async_to_sync(get_channel_layer().new_channel)()
    open_connection(Runner(django_capture_on_commit_callbacks), store_a.terminal, channel)
    return channel


@pytest.fixture
def paid(store_a):
    return make_payment(store_a, "P-1", amount="10.00", currency="EUR", created_at=DAY)


# --- Starting a refund ---------------------------------------------------------------------


def test_a_refund_is_forwarded_answered_202_and_its_repeat_200(
    paid, staff_a, api_a, terminal_channel, django_capture_on_commit_callbacks
):
    body = {"transactionId": "R-1", "terminal": "TERM-1", "amount": "4", "reason": "damaged"}

    with django_capture_on_commit_callbacks(execute=True):
        first = refund(api_a, "P-1", body)

    assert first.status_code == 202, first.content
    shown = first.json()
    assert {key: shown[key] for key in shown if key not in ("createdAt", "updatedAt")} == {
        "transactionId": "R-1",
        "type": "REFUND",
        "originalTransactionId": "P-1",
        "store": "store-a",
        "terminal": "TERM-1",
        "terminalRef": "TERM-1",
        "desktop": None,
        "status": "IN_PROGRESS",
        "amount": "4.00",
        "currency": "EUR",
        "refundedAmount": None,
        "overRefunded": None,
        "reason": "damaged",
        "initiatedBy": "alice",
        "paymentMethod": "CARD",
        "authorizationCode": "",
        "errorMessage": "",
        "late": False,
        "orderId": None,
        "customerId": None,
        "completedAt": None,
        "businessDate": shown["businessDate"],
    }
    frame = received(terminal_channel)
    assert frame["action"] == "refundRequest"
    assert frame["refundRequest"]["transactionId"] == "R-1"
    assert frame["refundRequest"]["amount"] == "4.00"
    assert frame["refundRequest"]["original"]["transactionId"] == "P-1"
    requested = TransactionEvent.objects.get(transaction__transaction_id="R-1", kind="requested")
    assert (requested.source, requested.detail["user"]) == ("api", "alice")

    again = refund(api_a, "P-1", body)

    assert again.status_code == 200, again.content
    assert again.json()["transactionId"] == "R-1"
    assert again.json()["status"] == "IN_PROGRESS"
    assert refunds_stored() == 1


def test_a_finished_refund_repeated_answers_200_with_its_result(
    paid, store_a, api_a, terminal_channel
):
    body = {"transactionId": "R-1", "terminal": "TERM-1"}
    assert refund(api_a, "P-1", body).status_code == 202
    payments.payment_result(
        terminal=store_a.terminal,
        payment_response={"transactionId": "R-1", "status": "SUCCESS"},
        outbox=Outbox(),
        kind=TransactionType.REFUND,
    )

    again = refund(api_a, "P-1", body)

    assert again.status_code == 200
    # No amount: the whole refundable amount.
    assert (again.json()["status"], again.json()["amount"]) == ("SUCCESS", "10.00")
    assert api_a.get("/api/transactions/P-1/").json()["refundedAmount"] == "10.00"


def test_the_exact_remainder_is_refunded_one_minor_unit_more_is_refused(
    paid, store_a, api_a, terminal_channel
):
    spare, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    make_refund(store_a, paid, "R-DONE", amount="3.00")
    make_refund(store_a, paid, "R-LIVE", amount="2.00", status=S.IN_PROGRESS, terminal=spare)

    over = refund(api_a, "P-1", {"transactionId": "R-3", "terminal": "TERM-1", "amount": "5.01"})

    assert over.status_code == 400
    assert over.json() == {
        "error": "Bad Request",
        "message": "amount exceeds the refundable amount",
        "transactionId": "R-3",
        "refundableAmount": "5.00",
    }
    assert refunds_stored() == 2
    exact = refund(api_a, "P-1", {"transactionId": "R-3", "terminal": "TERM-1", "amount": "5.00"})
    assert exact.status_code == 202, exact.content


@pytest.mark.parametrize("status", [S.DECLINED, S.TIMEOUT, S.CANCELLED, S.IN_PROGRESS])
def test_only_a_successful_payment_can_be_refunded(store_a, api_a, terminal_channel, status):
    spare, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    make_payment(store_a, "P-X", status=status, terminal=spare)

    response = refund(api_a, "P-X", {"transactionId": "R-1", "terminal": "TERM-1"})

    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"
    assert response.json()["message"] == "Only a successful payment can be refunded"
    assert refunds_stored() == 0


def test_a_refund_is_not_refunded(paid, store_a, api_a, terminal_channel):
    make_refund(store_a, paid, "R-OLD")

    response = refund(api_a, "R-OLD", {"transactionId": "R-2", "terminal": "TERM-1"})

    assert response.status_code == 404
    assert response.json() == {
        "error": "Not Found",
        "message": "Transaction not found",
        "transactionId": "R-OLD",
    }
    assert refunds_stored() == 1


def test_another_stores_payment_is_answered_as_an_unknown_one(store_a, store_b, api_a):
    body = {"transactionId": "R-1", "terminal": "TERM-1"}
    unknown = refund(api_a, "B-1", body)
    make_payment(store_b, "B-1")

    theirs = refund(api_a, "B-1", body)

    assert (theirs.status_code, theirs.json()) == (unknown.status_code, unknown.json())
    assert theirs.status_code == 404
    assert theirs.json()["message"] == "Transaction not found"
    assert refunds_stored() == 0


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"terminal": "TERM-1"}, 400, "transactionId is required"),
        ({"transactionId": "R-1"}, 400, "terminal is required"),
        ({"transactionId": "R-1", "terminal": 7}, 400, "terminal must be a string"),
        ({"transactionId": "has space", "terminal": "TERM-1"}, 400, "transactionId must be"),
        ({"transactionId": "R-1", "terminal": "TERM-1", "amount": "0"}, 400, "amount must be"),
        ({"transactionId": "R-1", "terminal": "TERM-1", "amount": "0.00"}, 400, "amount must be"),
        ({"transactionId": "R-1", "terminal": "TERM-1", "amount": "-1.00"}, 400, "amount must"),
        ({"transactionId": "R-1", "terminal": "TERM-1", "amount": 5}, 400, "amount must be"),
        ({"transactionId": "R-1", "terminal": "TERM-1", "amount": "1.001"}, 400, "amount "),
        (
            {"transactionId": "R-1", "terminal": "TERM-1", "currency": "USD"},
            400,
            "currency does not match the original payment",
        ),
        (
            {"transactionId": "R-1", "terminal": "TERM-1", "reason": "x" * 201},
            400,
            "reason must be a string of at most 200 characters",
        ),
        (
            {"transactionId": "R-1", "terminal": "TERM-1", "reason": "card 4111111111111111"},
            400,
            "reason must not contain a card number",
        ),
        (
            {"transactionId": "R-1", "terminal": "TERM-1", "originalTransactionId": "P-1"},
            400,
            "originalTransactionId is not a known field",
        ),
        ({"transactionId": "R-1", "terminal": "TERM-9"}, 404, "Terminal connection not found"),
        ({"transactionId": "P-1", "terminal": "TERM-1"}, 409, "transactionId already used"),
    ],
)
def test_a_refused_refund_names_why_and_stores_nothing(
    paid, api_a, terminal_channel, body, status, message
):
    response = refund(api_a, "P-1", body)

    assert response.status_code == status, response.content
    assert response.json()["message"].startswith(message)
    assert refunds_stored() == 0
    assert Transaction.objects.get(transaction_id="P-1").events.count() == 0


def test_a_terminal_that_is_not_connected_is_not_found(paid, api_a):
    response = refund(api_a, "P-1", {"transactionId": "R-1", "terminal": "TERM-1"})

    assert response.status_code == 404
    assert response.json()["message"] == "Terminal connection not found"
    assert refunds_stored() == 0


def test_a_body_that_is_not_a_json_object_is_refused(paid, api_a, terminal_channel):
    as_list = api_a.post("/api/transactions/P-1/refunds/", [1], format="json")
    as_form = api_a.post("/api/transactions/P-1/refunds/", {"transactionId": "R-1"})

    assert as_list.status_code == 400
    assert as_list.json()["message"] == "The body must be a JSON object"
    assert as_form.status_code == 415
    assert refunds_stored() == 0


def test_an_id_in_several_stores_needs_the_store(
    store_a, store_b, api_root, django_capture_on_commit_callbacks
):
    make_payment(store_a, "SHARED")
    make_payment(store_b, "SHARED")
    open_connection(Runner(django_capture_on_commit_callbacks), store_b.terminal, "b.terminal")
    body = {"transactionId": "R-1", "terminal": "TERM-1"}

    unnamed = refund(api_root, "SHARED", body)
    named = refund(api_root, "SHARED", body, "?store=store-b")

    assert unnamed.status_code == 400
    assert list(unnamed.json()["fields"]) == ["store"]
    assert named.status_code == 202, named.content
    assert (named.json()["store"], named.json()["initiatedBy"]) == ("store-b", "root")


def test_a_payment_whose_id_ends_in_refunds_is_still_read(store_a, api_a):
    make_payment(store_a, "A/refunds")

    response = api_a.get("/api/transactions/A/refunds/")

    assert response.status_code == 200
    assert response.json()["transactionId"] == "A/refunds"
    # And refunding it names it (the terminal is not connected: the payment was found).
    refused = refund(api_a, "A/refunds", {"transactionId": "R-1", "terminal": "TERM-1"})
    assert refused.json()["message"] == "Terminal connection not found"


def test_anonymous_cannot_refund(paid, client):
    response = client.post(
        "/api/transactions/P-1/refunds/",
        {"transactionId": "R-1", "terminal": "TERM-1"},
        content_type="application/json",
    )

    assert response.status_code == 401
    assert refunds_stored() == 0


# --- Reading payments and refunds ----------------------------------------------------------


@pytest.fixture
def refunded(paid, store_a, staff_a):
    """P-1 (10.00) with a SUCCESS refund by alice, a DECLINED one, and another payment."""
    make_refund(
        store_a, paid, "R-OK", amount="3.00", created_at=DAY + dt.timedelta(hours=1), user=staff_a
    )
    make_refund(
        store_a,
        paid,
        "R-NO",
        amount="1.00",
        status=S.DECLINED,
        created_at=DAY + dt.timedelta(hours=2),
        reason="wrong size",
    )
    make_payment(store_a, "P-2", amount="5.00", created_at=DAY + dt.timedelta(hours=3))
    return paid


def test_the_list_shows_payments_and_refunds_with_their_refund_fields(refunded, api_a):
    rows = {t["transactionId"]: t for t in api_a.get("/api/transactions/").json()["results"]}

    fields = ("type", "originalTransactionId", "refundedAmount", "overRefunded", "reason")
    assert {tid: tuple(row[f] for f in fields) for tid, row in rows.items()} == {
        "P-1": ("PAYMENT", None, "3.00", False, None),
        "P-2": ("PAYMENT", None, "0.00", False, None),
        "R-OK": ("REFUND", "P-1", None, None, ""),
        "R-NO": ("REFUND", "P-1", None, None, "wrong size"),
    }
    assert (rows["R-OK"]["initiatedBy"], rows["R-OK"]["desktop"]) == ("alice", None)
    assert (rows["R-NO"]["initiatedBy"], rows["R-NO"]["desktop"]) == (None, "POS-1")


@pytest.mark.parametrize(
    ("query", "expected"),
    [("type=PAYMENT", {"P-1", "P-2"}), ("type=REFUND", {"R-OK", "R-NO"})],
)
def test_the_type_filter(refunded, api_a, query, expected):
    response = api_a.get(f"/api/transactions/?{query}")

    assert {t["transactionId"] for t in response.json()["results"]} == expected


def test_a_payment_lists_its_refunds_and_what_is_left_to_refund(refunded, api_a):
    body = api_a.get("/api/transactions/P-1/").json()

    assert [(r["transactionId"], r["status"], r["amount"]) for r in body["refunds"]] == [
        ("R-OK", "SUCCESS", "3.00"),
        ("R-NO", "DECLINED", "1.00"),
    ]
    assert (body["refundedAmount"], body["refundableAmount"]) == ("3.00", "7.00")
    shown_refund = api_a.get("/api/transactions/R-OK/").json()
    assert (shown_refund["refunds"], shown_refund["refundableAmount"]) == ([], None)


def test_the_csv_ends_with_type_original_and_refunded_amount(refunded, api_a):
    response = api_a.get("/api/transactions/export/")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))

    assert list(rows[0])[-3:] == ["type", "originalTransactionId", "refundedAmount"]
    assert [
        (r["transactionId"], r["type"], r["originalTransactionId"], r["refundedAmount"])
        for r in rows
    ] == [
        ("P-1", "PAYMENT", "", "3.00"),
        ("R-OK", "REFUND", "P-1", ""),
        ("R-NO", "REFUND", "P-1", ""),
        ("P-2", "PAYMENT", "", "0.00"),
    ]


def test_daily_totals_count_the_days_refunds_and_net(refunded, store_a, api_a):
    # A refund the next day of an earlier payment: that day gives back more than it took.
    make_refund(store_a, refunded, "R-NEXT", amount="2.00", created_at=DAY + dt.timedelta(days=1))
    make_refund(store_a, refunded, "R-LIVE", amount="1.00", status=S.IN_PROGRESS, created_at=DAY)

    response = api_a.get("/api/reports/daily/?date_from=2024-03-01&date_to=2024-03-31")
    rows = response.json()["results"]

    figures = ("date", "count", "succeededCount", "succeededAmount", "declinedCount")
    refunds = ("refundCount", "refundedAmount", "netAmount")
    assert [tuple(row[f] for f in figures + refunds) for row in rows] == [
        # Payments only in the payment columns (P-1 and P-2; no refund counted there).
        ("2024-03-10", 2, 2, "15.00", 0, 1, "3.00", "12.00"),
        ("2024-03-11", 0, 0, "0.00", 0, 1, "2.00", "-2.00"),
    ]
    exported = api_a.get("/api/reports/daily/export/?date_from=2024-03-01&date_to=2024-03-31")
    text = b"".join(exported.streaming_content).decode()
    assert text.splitlines()[0].endswith(",refundCount,refundedAmount,netAmount")
    assert list(csv.DictReader(io.StringIO(text))) == [
        {k: str(v) for k, v in row.items()} for row in rows
    ]


# --- Roles: a viewer reads refunds but starts none (contract section 8) ---------------------


def test_a_viewer_gets_403_and_starts_nothing_but_reads_the_refunds(
    paid, store_a, terminal_channel, django_capture_on_commit_callbacks
):
    from terminals.services import staff_create_or_update
    from tests.api.conftest import token_client

    user, token = staff_create_or_update(username="vera", group_slugs=[store_a.slug], role="viewer")
    user.api_token = token
    vera = token_client(user)
    make_refund(store_a, paid, "R-OLD", amount="1.00")

    with django_capture_on_commit_callbacks(execute=True):
        response = refund(vera, "P-1", {"transactionId": "R-1", "terminal": "TERM-1"})

    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "Only a manager of the store can refund its payments.",
    }
    assert refunds_stored() == 1
    listed = vera.get("/api/transactions/?type=REFUND").json()
    assert [row["transactionId"] for row in listed["results"]] == ["R-OLD"]
    layer = get_channel_layer()
    with pytest.raises(asyncio.TimeoutError):
        async_to_sync(asyncio.wait_for)(layer.receive(terminal_channel), 0.2)
