"""/api/transactions/export/: fixed columns, decimal strings, local business dates, a safe file."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.http import StreamingHttpResponse

from payments.exports import TRANSACTION_COLUMNS, neutralise
from payments.models import Transaction, TransactionStatus
from payments.selectors import EXPORT_FIELDS, ExportRow
from tests.api.conftest import make_payment

pytestmark = pytest.mark.django_db

CONTRACT_COLUMNS = (
    "transactionId,store,terminal,desktop,status,amount,currency,paymentMethod,"
    "authorizationCode,orderId,customerId,createdAt,completedAt,businessDate,late,errorMessage,"
    "type,originalTransactionId,refundedAmount"
)


def body(response) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode("utf-8")


def rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body(response))))


def test_columns_are_the_contracts_in_its_order(store_a, api_a):
    make_payment(store_a)

    response = api_a.get("/api/transactions/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert body(response).splitlines()[0] == CONTRACT_COLUMNS
    assert ",".join(TRANSACTION_COLUMNS) == CONTRACT_COLUMNS


def test_a_row_holds_decimal_strings_utc_times_and_the_local_business_date(store_b, api_b):
    # 23:30 UTC on 9 March is 00:30 on 10 March in Berlin: the store's business date.
    created = dt.datetime(2024, 3, 9, 23, 30, 15, 250000, tzinfo=dt.UTC)
    make_payment(
        store_b,
        "LATE-NIGHT",
        amount="1234.5",
        currency="EUR",
        status=TransactionStatus.SUCCESS,
        created_at=created,
        completed_at=created + dt.timedelta(seconds=3),
        late=True,
        metadata={"orderId": "ORD-1"},
        customer_info={"customerId": "CUST-9"},
        authorization_code="A1B2",
    )

    [row] = rows(api_b.get("/api/transactions/export/"))

    assert row == {
        "transactionId": "LATE-NIGHT",
        "store": "store-b",
        "terminal": "TERM-1",
        "desktop": "POS-1",
        "status": "SUCCESS",
        "amount": "1234.50",
        "currency": "EUR",
        "paymentMethod": "CARD",
        "authorizationCode": "A1B2",
        "orderId": "ORD-1",
        "customerId": "CUST-9",
        "createdAt": "2024-03-09T23:30:15.250Z",
        "completedAt": "2024-03-09T23:30:18.250Z",
        "businessDate": "2024-03-10",
        "late": "true",
        "errorMessage": "",
        "type": "PAYMENT",
        "originalTransactionId": "",
        "refundedAmount": "0.00",
    }


def test_in_flight_payment_has_empty_completion_and_zero_decimal_currency_keeps_no_point(
    store_a, api_a
):
    make_payment(store_a, "JPY-1", amount="1500", currency="JPY", status="IN_PROGRESS")

    [row] = rows(api_a.get("/api/transactions/export/"))

    assert (row["amount"], row["completedAt"], row["late"]) == ("1500", "", "false")


DANGEROUS_CELLS = {
    "equals": "=HYPERLINK(1)",
    "plus": "+1+2",
    "minus": "-2+3",
    "at": "@SUM(A1)",
    "tab": "\tx",
    "carriage-return": "\rx",
    # Spreadsheets skip leading blanks and invisible characters before they look for a formula,
    # and some read the full-width forms as the ASCII ones (issue 18.8).
    "space": " =1+2",
    "line-feed": "\n=1+2",
    "tab-formula": "\t=1+2",
    "carriage-return-formula": "\r=1+2",
    "no-break-space": "\u00a0=1+2",
    "zero-width-space": "\u200b=1+2",
    "byte-order-mark": "\ufeff=1+2",
    "full-width-equals": "\uff1dHYPERLINK(1)",
    "full-width-plus": "\uff0b1+2",
    "full-width-minus": "\uff0d2+3",
    "full-width-at": "\uff20SUM(A1)",
}


@pytest.mark.parametrize("dangerous", DANGEROUS_CELLS.values(), ids=DANGEROUS_CELLS.keys())
def test_cells_a_spreadsheet_would_run_are_neutralised(store_a, api_a, dangerous):
    make_payment(
        store_a,
        "INJ-1",
        metadata={"orderId": dangerous},
        customer_info={"customerId": dangerous},
        error_message=dangerous,
    )

    [row] = rows(api_a.get("/api/transactions/export/"))

    for column in ("orderId", "customerId", "errorMessage"):
        assert row[column] == "'" + dangerous
        assert row[column][0] == "'"


def test_transaction_id_starting_with_minus_is_neutralised_but_plain_text_is_not(store_a, api_a):
    make_payment(store_a, "-1", created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    make_payment(store_a, "plain", created_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))

    exported = rows(api_a.get("/api/transactions/export/"))

    assert [r["transactionId"] for r in exported] == ["'-1", "plain"]
    assert neutralise("a=b") == "a=b"
    assert neutralise("Declined \u00a0by issuer") == "Declined \u00a0by issuer"
    assert neutralise("Ärger=1") == "Ärger=1"
    assert neutralise("") == ""


def test_commas_quotes_and_newlines_survive_the_round_trip(store_a, api_a):
    message = 'Declined, "do not honour"\nretry later'
    make_payment(store_a, "Q-1", status=TransactionStatus.DECLINED, error_message=message)

    [row] = rows(api_a.get("/api/transactions/export/"))

    assert row["errorMessage"] == message


def test_same_filters_as_the_list(store_a, api_a):
    make_payment(store_a, "KEEP", amount="100.00", status=TransactionStatus.SUCCESS)
    make_payment(store_a, "DROP-STATUS", amount="100.00", status=TransactionStatus.DECLINED)
    make_payment(store_a, "DROP-AMOUNT", amount="1.00", status=TransactionStatus.SUCCESS)
    query = "status=SUCCESS&amount_min=50"

    listed = [
        t["transactionId"] for t in api_a.get(f"/api/transactions/?{query}").json()["results"]
    ]
    exported = [r["transactionId"] for r in rows(api_a.get(f"/api/transactions/export/?{query}"))]

    assert listed == exported == ["KEEP"]


def test_export_is_oldest_first_unless_ordered(store_a, api_a):
    for n in range(3):
        make_payment(store_a, f"T{n}", created_at=dt.datetime(2024, 1, 1 + n, tzinfo=dt.UTC))

    oldest_first = [r["transactionId"] for r in rows(api_a.get("/api/transactions/export/"))]
    newest_first = [
        r["transactionId"]
        for r in rows(api_a.get("/api/transactions/export/?ordering=-created_at"))
    ]

    assert oldest_first == ["T0", "T1", "T2"]
    assert newest_first == ["T2", "T1", "T0"]


@pytest.mark.parametrize(
    ("query", "filename"),
    [
        (
            "store=store-a&date_from=2024-01-14&date_to=2024-01-14",
            "transactions-store-a-2024-01-14-2024-01-14.csv",
        ),
        (
            "created_after=2024-01-01&created_before=2024-02-01",
            "transactions-all-2024-01-01-2024-01-31.csv",
        ),
        ("created_after=2024-01-01T00:00:00%2B01:00", "transactions-all-2024-01-01-{today}.csv"),
        ("", "transactions-all-start-{today}.csv"),
    ],
)
def test_filename_names_the_store_and_period(store_a, api_a, query, filename):
    today = dt.datetime.now(dt.UTC).date().isoformat()

    response = api_a.get(f"/api/transactions/export/?{query}")

    assert (
        response["Content-Disposition"] == f'attachment; filename="{filename.format(today=today)}"'
    )


def test_yesterdays_payments_by_business_date(store_b, api_b):
    # Berlin is UTC+1 in January: its 14 January runs from 13 Jan 23:00 to 14 Jan 23:00 UTC.
    make_payment(store_b, "BEFORE", created_at=dt.datetime(2024, 1, 13, 22, 59, tzinfo=dt.UTC))
    make_payment(store_b, "FIRST", created_at=dt.datetime(2024, 1, 13, 23, 0, tzinfo=dt.UTC))
    make_payment(store_b, "LAST", created_at=dt.datetime(2024, 1, 14, 22, 59, tzinfo=dt.UTC))
    make_payment(store_b, "AFTER", created_at=dt.datetime(2024, 1, 14, 23, 0, tzinfo=dt.UTC))

    exported = rows(api_b.get("/api/transactions/export/?date_from=2024-01-14&date_to=2024-01-14"))

    assert [(r["transactionId"], r["businessDate"]) for r in exported] == [
        ("FIRST", "2024-01-14"),
        ("LAST", "2024-01-14"),
    ]


def test_bad_filter_on_export_answers_json_even_to_a_csv_client(store_a, api_a):
    response = api_a.get("/api/transactions/export/?amount_min=lots", HTTP_ACCEPT="text/csv")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"].startswith("amount_min: ")


async def test_export_streams_under_asgi(async_client, transactional_db):
    """Under daphne (ASGI) the export is an async stream, made in the request's thread."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    from tests.api.conftest import Store, _staff

    def setup() -> str:
        store = Store("asgi-store")
        Transaction.objects.bulk_create(  # more rows than one chunk of the stream
            Transaction(
                group=store.group,
                transaction_id=f"A-{n:04d}",
                amount="1.00",
                currency="EUR",
                status=TransactionStatus.SUCCESS,
                desktop=store.desktop,
                terminal=store.terminal,
                terminal_ref="TERM-1",
            )
            for n in range(1200)
        )
        return _staff("asgi-user", store.slug).api_token

    def close_connections() -> None:
        for conn in connections.all(initialized_only=True):
            conn.close()

    token = await sync_to_async(setup)()
    try:
        response = await async_client.get(
            "/api/transactions/export/", headers={"Authorization": f"Token {token}"}
        )
        assert response.status_code == 200
        assert response.is_async
        chunks = [chunk async for chunk in response.streaming_content]
    finally:
        # The view and the stream ran on asgiref's one sync thread: close its connection, or
        # it outlives the test and blocks the PostgreSQL test database's teardown.
        await sync_to_async(close_connections)()

    assert len(chunks) > 1
    lines = b"".join(chunks).decode().splitlines()
    assert lines[0] == CONTRACT_COLUMNS
    assert len(lines) == 1201


def test_export_rows_are_named_by_the_export_fields_in_their_order():
    # The query reads EXPORT_FIELDS' lookups in order; ExportRow names them by position.
    assert ExportRow._fields == tuple(EXPORT_FIELDS)
