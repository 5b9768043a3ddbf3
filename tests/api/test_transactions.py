"""/api/transactions/: fields as accounting reads them, every filter, cursor pages, one timeline."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest

from payments import services as payments
from payments.models import TransactionStatus
from posgateway.core.events import Outbox
from terminals import services as terminals
from terminals.models import DeviceType
from tests.api.conftest import make_payment
from tests.factories import make_device

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2024, 3, 10, 12, 0, tzinfo=dt.UTC)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [t["transactionId"] for t in response.json()["results"]]


def test_list_shows_a_payment_as_accounting_reads_it(store_a, api_a):
    make_payment(
        store_a,
        "ORDER-77",
        amount="12.3",
        currency="USD",
        status=TransactionStatus.DECLINED,
        created_at=T0,
        completed_at=T0 + dt.timedelta(seconds=9),
        metadata={"orderId": "ORD-12345"},
        customer_info={"customerId": "CUST-123"},
        error_message="Insufficient funds",
    )

    [payment] = api_a.get("/api/transactions/").json()["results"]

    assert payment == {
        "transactionId": "ORDER-77",
        "type": "PAYMENT",
        "originalTransactionId": None,
        "store": "store-a",
        "terminal": "TERM-1",
        "terminalRef": "TERM-1",
        "desktop": "POS-1",
        "status": "DECLINED",
        "amount": "12.30",
        "currency": "USD",
        "refundedAmount": "0.00",
        "overRefunded": False,
        "reason": None,
        "initiatedBy": None,
        "paymentMethod": "CARD",
        "authorizationCode": "",
        "errorMessage": "Insufficient funds",
        "late": False,
        "orderId": "ORD-12345",
        "customerId": "CUST-123",
        "createdAt": "2024-03-10T12:00:00.000Z",
        "updatedAt": payment["updatedAt"],
        "completedAt": "2024-03-10T12:00:09.000Z",
        "businessDate": "2024-03-10",
    }


def test_amounts_keep_each_currencys_minor_units(store_a, api_a):
    make_payment(store_a, "JPY", amount="1500", currency="JPY")
    make_payment(store_a, "KWD", amount="1.5", currency="KWD")
    make_payment(store_a, "EUR", amount="7", currency="EUR")

    amounts = {
        t["transactionId"]: t["amount"] for t in api_a.get("/api/transactions/").json()["results"]
    }

    assert amounts == {"JPY": "1500", "KWD": "1.500", "EUR": "7.00"}


def test_newest_first_by_default(store_a, api_a):
    for n in range(3):
        make_payment(store_a, f"T{n}", created_at=T0 + dt.timedelta(minutes=n))

    assert ids(api_a.get("/api/transactions/")) == ["T2", "T1", "T0"]


# --- Filters -------------------------------------------------------------------------------


@pytest.fixture
def varied(store_a):
    """Payments that differ in every filtered attribute."""
    other_terminal, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    other_desktop, _ = make_device(store_a.group, DeviceType.DESKTOP, "POS-2")
    make_payment(store_a, "P-SUCCESS", amount="5.00", created_at=T0, metadata={"orderId": "ORD-1"})
    make_payment(
        store_a,
        "P-DECLINED",
        amount="50.00",
        status=TransactionStatus.DECLINED,
        created_at=T0 + dt.timedelta(hours=1),
        terminal=other_terminal,
    )
    make_payment(
        store_a,
        "P-USD",
        amount="500.00",
        currency="USD",
        status=TransactionStatus.FAILED,
        created_at=T0 + dt.timedelta(days=1),
        desktop=other_desktop,
        metadata={"orderId": 98765},
    )
    make_payment(
        store_a,
        "P-LIVE",
        amount="0.99",
        status=TransactionStatus.IN_PROGRESS,
        created_at=T0 + dt.timedelta(days=2),
    )
    return store_a


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=SUCCESS", {"P-SUCCESS"}),
        ("status=DECLINED&status=FAILED", {"P-DECLINED", "P-USD"}),
        ("terminal=TERM-2", {"P-DECLINED"}),
        ("desktop=POS-2", {"P-USD"}),
        ("currency=USD", {"P-USD"}),
        ("amount_min=50", {"P-DECLINED", "P-USD"}),
        ("amount_max=5.00", {"P-SUCCESS", "P-LIVE"}),
        ("amount_min=1&amount_max=50.00", {"P-SUCCESS", "P-DECLINED"}),
        ("created_after=2024-03-11", {"P-USD", "P-LIVE"}),
        ("created_before=2024-03-11", {"P-SUCCESS", "P-DECLINED"}),
        ("created_after=2024-03-10T12:30:00Z&created_before=2024-03-11T12:00:00Z", {"P-DECLINED"}),
        # An offset is honoured: 13:30+01:00 is 12:30 UTC.
        ("created_after=2024-03-10T13:30:00%2B01:00", {"P-DECLINED", "P-USD", "P-LIVE"}),
        # Without an offset the time is UTC.
        ("created_before=2024-03-10T12:00:01", {"P-SUCCESS"}),
        ("date_from=2024-03-11&date_to=2024-03-11", {"P-USD"}),
        ("search=p-usd", {"P-USD"}),
        ("search=ORD-1", {"P-SUCCESS"}),
        ("search=98765", {"P-USD"}),
        (f"store=store-a&status={TransactionStatus.IN_PROGRESS}", {"P-LIVE"}),
    ],
)
def test_filter_selects_the_matching_payments(varied, api_a, query, expected):
    assert set(ids(api_a.get(f"/api/transactions/?{query}"))) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ordering=amount", ["P-LIVE", "P-SUCCESS", "P-DECLINED", "P-USD"]),
        ("ordering=-amount", ["P-USD", "P-DECLINED", "P-SUCCESS", "P-LIVE"]),
        ("ordering=created_at", ["P-SUCCESS", "P-DECLINED", "P-USD", "P-LIVE"]),
        ("ordering=transaction_id", ["P-DECLINED", "P-LIVE", "P-SUCCESS", "P-USD"]),
    ],
)
def test_ordering(varied, api_a, query, expected):
    assert ids(api_a.get(f"/api/transactions/?{query}")) == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("amount_min=abc", "amount_min"),
        ("amount_min=-5", "amount_min"),
        ("amount_max=1e3", "amount_max"),
        ("amount_max=12.5.0", "amount_max"),
        ("amount_max=1234567890123", "amount_max"),
        ("created_after=yesterday", "created_after"),
        ("created_after=2024-13-45", "created_after"),
        ("created_before=2024-01-15T25:00:00Z", "created_before"),
        ("created_before=0001-01-01T00:00:00%2B05:00", "created_before"),
        ("date_from=15.01.2024", "date_from"),
        ("date_to=9999-12-31", "date_to"),
        ("status=success", "status"),
        ("status=BOGUS", "status"),
        ("type=refund", "type"),
        ("type=SALE", "type"),
        ("currency=eur", "currency"),
        ("currency=XYZ", "currency"),
        ("ordering=password", "ordering"),
        ("page_size=0", "page_size"),
        ("page_size=ten", "page_size"),
        ("cursor=not-a-cursor", "cursor"),
        ("store=no-such-store", "store"),
    ],
)
def test_bad_filter_value_is_400_naming_the_parameter(store_a, api_a, query, parameter):
    for url in ("/api/transactions/", "/api/transactions/export/"):
        if parameter in ("page_size", "cursor") and "export" in url:
            continue  # the export is not paginated
        response = api_a.get(f"{url}?{query}")

        assert response.status_code == 400, (url, response.content)
        body = response.json()
        assert body["error"] == "Bad Request"
        assert body["message"].startswith(f"{parameter}: ")
        assert list(body["fields"]) == [parameter]


def test_a_forged_cursor_position_is_400_not_500(store_a, api_a):
    import base64

    make_payment(store_a)
    for ordering, position in (
        ("-created_at", "yesterday"),
        ("-created_at", "9999-12-31T23:59:59-23:59"),  # beyond year 9999 in UTC (issue 18.6)
        ("-created_at", "0001-01-01T00:00:00+23:59"),
        ("amount", "NaN"),
        ("amount", "x"),
    ):
        cursor = base64.b64encode(f"p={position}".encode()).decode()
        response = api_a.get(f"/api/transactions/?ordering={ordering}&cursor={quote(cursor)}")

        assert response.status_code == 400, response.content
        assert response.json()["message"].startswith("cursor: ")


# --- Cursor pages --------------------------------------------------------------------------


def test_cursor_pages_stay_stable_while_new_payments_arrive(store_a, api_a):
    for n in range(5):
        make_payment(store_a, f"OLD-{n}", created_at=T0 + dt.timedelta(minutes=n))

    first = api_a.get("/api/transactions/?page_size=2").json()
    # New payments arrive between the two page reads; equal timestamps test the tie-break.
    make_payment(store_a, "NEW-1", created_at=T0 + dt.timedelta(hours=1))
    make_payment(store_a, "NEW-2", created_at=T0 + dt.timedelta(hours=1))
    second = api_a.get(first["next"]).json()
    third = api_a.get(second["next"]).json()

    assert [t["transactionId"] for t in first["results"]] == ["OLD-4", "OLD-3"]
    assert [t["transactionId"] for t in second["results"]] == ["OLD-2", "OLD-1"]
    assert [t["transactionId"] for t in third["results"]] == ["OLD-0"]
    assert third["next"] is None
    assert first["previous"] is None
    back = api_a.get(second["previous"]).json()
    assert [t["transactionId"] for t in back["results"]] == ["OLD-4", "OLD-3"]


def test_equal_timestamps_are_neither_skipped_nor_repeated(store_a, api_a):
    for n in range(7):
        make_payment(store_a, f"SAME-{n}", created_at=T0)

    seen, url = [], "/api/transactions/?page_size=3"
    while url:
        page = api_a.get(url).json()
        seen += [t["transactionId"] for t in page["results"]]
        url = page["next"]

    assert sorted(seen) == [f"SAME-{n}" for n in range(7)]


def test_page_size_is_capped_at_500(store_a, api_a):
    from payments.models import Transaction

    Transaction.objects.bulk_create(
        Transaction(
            group=store_a.group,
            transaction_id=f"BULK-{n}",
            amount="1.00",
            currency="EUR",
            status=TransactionStatus.SUCCESS,
            desktop=store_a.desktop,
            terminal=store_a.terminal,
            terminal_ref="TERM-1",
        )
        for n in range(505)
    )

    default = api_a.get("/api/transactions/").json()
    capped = api_a.get("/api/transactions/?page_size=100000").json()

    assert len(default["results"]) == 50
    assert len(capped["results"]) == 500
    assert capped["next"] is not None


def test_listing_a_full_page_takes_a_fixed_number_of_queries(
    store_a, api_a, django_assert_max_num_queries
):
    for n in range(60):
        make_payment(
            store_a,
            f"Q-{n}",
            created_at=T0 + dt.timedelta(seconds=n),
            metadata={"orderId": f"O-{n}"},
        )

    # token lookup, then one query for the page (store and devices joined): no N+1.
    with django_assert_max_num_queries(3):
        response = api_a.get("/api/transactions/?page_size=60&store=store-a")

    assert len(response.json()["results"]) == 60


# --- One payment ---------------------------------------------------------------------------


def pay_through_services(store, transaction_id: str, status: str = "SUCCESS") -> None:
    """A payment as the gateway runs it: forwarded to a connected terminal, answered."""
    outbox = Outbox()
    terminals.connection_open(
        device_pk=store.terminal.pk, channel_name="test.terminal", remote_addr="", outbox=outbox
    )
    payments.payment_start(
        desktop=store.desktop,
        desktop_connection_id="desk-conn",
        terminal_id="TERM-1",
        payment_request={
            "transactionId": transaction_id,
            "amount": "25.5",
            "currency": "EUR",
            "metadata": {"orderId": "ORD-9"},
        },
        outbox=outbox,
    )
    payments.payment_result(
        terminal=store.terminal,
        payment_response={
            "transactionId": transaction_id,
            "status": status,
            "authorizationCode": "AUTH-42",
            "maskedCard": "4111111111111111",
        },
        outbox=outbox,
    )


def test_one_payment_shows_its_event_timeline(store_a, api_a):
    pay_through_services(store_a, "TL-1")

    response = api_a.get("/api/transactions/TL-1/")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["amount"], body["authorizationCode"]) == (
        "SUCCESS",
        "25.50",
        "AUTH-42",
    )
    assert body["metadata"] == {"orderId": "ORD-9"}
    assert body["paymentResponse"]["maskedCard"] == "************1111"
    timeline = [(e["kind"], e["source"], e["oldStatus"], e["newStatus"]) for e in body["events"]]
    assert timeline == [
        ("requested", "desktop", None, "PENDING"),
        ("forwarded", "gateway", "PENDING", "IN_PROGRESS"),
        ("result", "terminal", "IN_PROGRESS", "SUCCESS"),
    ]
    assert all(e["createdAt"].endswith("Z") for e in body["events"])


@pytest.mark.parametrize("transaction_id", ["A/B/C", "v1.2", "x?y#z", "100%", "export-1"])
def test_transaction_ids_with_any_printable_characters_are_found(store_a, api_a, transaction_id):
    make_payment(store_a, transaction_id)

    response = api_a.get(f"/api/transactions/{quote(transaction_id, safe='')}/")

    assert response.status_code == 200
    assert response.json()["transactionId"] == transaction_id


def test_unknown_transaction_is_not_found_in_the_protocols_words(store_a, api_a):
    response = api_a.get("/api/transactions/NOPE/")

    assert response.status_code == 404
    assert response.json() == {
        "error": "Not Found",
        "message": "Transaction not found",
        "transactionId": "NOPE",
    }


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/transactions/?terminal=a%00b", "terminal"),
        ("/api/transactions/?store=a%00b", "store"),
        ("/api/transactions/export/?search=%00", "search"),
        ("/api/transactions/T%00X/", "transaction_id"),
        ("/api/transactions/T-1/?store=%00", "store"),
        ("/api/reports/daily/?store=x%00", "store"),
        ("/api/reports/daily/export/?store=x%00", "store"),
        ("/api/devices/?store=%00", "store"),
    ],
)
def test_a_nul_character_is_400_naming_where_it_was(store_a, api_a, url, parameter):
    response = api_a.get(url)

    assert response.status_code == 400
    assert response.json()["message"] == f"{parameter}: Null characters are not allowed."
