"""/api/reports/daily/: the figures a reconciliation needs, per store, local day and currency."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from payments.models import TransactionStatus as S
from tests.api.conftest import make_payment

pytestmark = pytest.mark.django_db

DAY = dt.datetime(2024, 3, 10, 10, 0, tzinfo=dt.UTC)
RANGE = "date_from=2024-03-01&date_to=2024-03-31"


def report(client, query: str = RANGE) -> list[dict]:
    response = client.get(f"/api/reports/daily/?{query}")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_daily_figures_from_crafted_payments(store_a, api_a):
    from tests.factories import make_device

    spare = [make_device(store_a.group, "terminal", f"SPARE-{n}")[0] for n in range(3)]
    crafted = [
        ("0.10", "EUR", S.SUCCESS, False),
        ("0.20", "EUR", S.SUCCESS, False),
        ("99999999.99", "EUR", S.SUCCESS, True),  # a late SUCCESS after a timeout
        ("5.00", "EUR", S.DECLINED, False),
        ("5.00", "EUR", S.FAILED, False),
        ("5.00", "EUR", S.CANCELLED, True),
        ("5.00", "EUR", S.TIMEOUT, False),
        ("7.00", "EUR", S.IN_PROGRESS, False),
        ("1500", "JPY", S.SUCCESS, False),
        ("250", "JPY", S.SUCCESS, False),
    ]
    for n, (amount, currency, status, late) in enumerate(crafted):
        in_flight = status == S.IN_PROGRESS
        make_payment(
            store_a,
            amount=amount,
            currency=currency,
            status=status,
            late=late,
            created_at=DAY + dt.timedelta(minutes=n),
            terminal=spare[0] if in_flight else None,
        )
    make_payment(store_a, amount="3.00", created_at=DAY + dt.timedelta(days=1))

    rows = report(api_a)

    assert rows == [
        {
            "date": "2024-03-10",
            "store": "store-a",
            "currency": "EUR",
            "count": 8,
            "succeededCount": 3,
            # Exact decimal addition: 0.10 + 0.20 + 99999999.99, never 100000000.28999999.
            "succeededAmount": "100000000.29",
            "declinedCount": 1,
            "failedCount": 1,
            "cancelledCount": 1,
            "timeoutCount": 1,
            "lateCount": 2,
            "refundCount": 0,
            "refundedAmount": "0.00",
            "netAmount": "100000000.29",
        },
        {
            "date": "2024-03-10",
            "store": "store-a",
            "currency": "JPY",
            "count": 2,
            "succeededCount": 2,
            "succeededAmount": "1750",
            "declinedCount": 0,
            "failedCount": 0,
            "cancelledCount": 0,
            "timeoutCount": 0,
            "lateCount": 0,
            "refundCount": 0,
            "refundedAmount": "0",
            "netAmount": "1750",
        },
        {
            "date": "2024-03-11",
            "store": "store-a",
            "currency": "EUR",
            "count": 1,
            "succeededCount": 1,
            "succeededAmount": "3.00",
            "declinedCount": 0,
            "failedCount": 0,
            "cancelledCount": 0,
            "timeoutCount": 0,
            "lateCount": 0,
            "refundCount": 0,
            "refundedAmount": "0.00",
            "netAmount": "3.00",
        },
    ]


def test_a_payment_near_midnight_counts_on_the_stores_local_date(store_a, store_b, api_root):
    # store-b is in Berlin (UTC+1 in March before the switch, UTC+2 after 31 March).
    just_after_local_midnight = dt.datetime(2024, 3, 9, 23, 30, tzinfo=dt.UTC)  # 00:30 on the 10th
    just_before_local_midnight = dt.datetime(2024, 3, 10, 22, 59, tzinfo=dt.UTC)  # 23:59 the 10th
    make_payment(store_b, "B-EARLY", amount="1.00", created_at=just_after_local_midnight)
    make_payment(store_b, "B-LATE", amount="2.00", created_at=just_before_local_midnight)
    make_payment(
        store_b, "B-NEXT", amount="4.00", created_at=dt.datetime(2024, 3, 10, 23, 0, tzinfo=dt.UTC)
    )
    # The same instant in a UTC store is still the 9th.
    make_payment(store_a, "A-SAME", amount="8.00", created_at=just_after_local_midnight)

    rows = report(api_root)

    assert [(r["store"], r["date"], r["count"], r["succeededAmount"]) for r in rows] == [
        ("store-a", "2024-03-09", 1, "8.00"),
        ("store-b", "2024-03-10", 2, "3.00"),
        ("store-b", "2024-03-11", 1, "4.00"),
    ]


def test_report_range_is_inclusive_in_local_dates(store_b, api_b):
    make_payment(store_b, amount="1.00", created_at=dt.datetime(2024, 3, 9, 23, 30, tzinfo=dt.UTC))
    make_payment(store_b, amount="2.00", created_at=dt.datetime(2024, 3, 11, 22, 30, tzinfo=dt.UTC))
    make_payment(store_b, amount="4.00", created_at=dt.datetime(2024, 3, 11, 23, 30, tzinfo=dt.UTC))

    rows = report(api_b, "date_from=2024-03-10&date_to=2024-03-11")

    assert [(r["date"], r["succeededAmount"]) for r in rows] == [
        ("2024-03-10", "1.00"),
        ("2024-03-11", "2.00"),
    ]


def test_store_filter_narrows_the_report(store_a, store_b, api_root):
    make_payment(store_a, amount="1.00", created_at=DAY)
    make_payment(store_b, amount="2.00", created_at=DAY)

    rows = report(api_root, f"{RANGE}&store=store-b")

    assert [(r["store"], r["succeededAmount"]) for r in rows] == [("store-b", "2.00")]


def test_default_range_is_the_last_30_days(store_a, api_a):
    today = dt.datetime.now(dt.UTC)
    make_payment(store_a, "NOW", created_at=today)
    make_payment(store_a, "DAY-29", created_at=today - dt.timedelta(days=29))
    make_payment(store_a, "DAY-31", created_at=today - dt.timedelta(days=31))

    body = api_a.get("/api/reports/daily/").json()

    assert body["dateTo"] == today.date().isoformat()
    assert body["dateFrom"] == (today.date() - dt.timedelta(days=29)).isoformat()
    assert sum(r["count"] for r in body["results"]) == 2


def test_csv_variant_has_the_same_figures_in_the_contracts_columns(store_a, api_a):
    make_payment(store_a, amount="10.05", created_at=DAY)
    make_payment(store_a, amount="3.00", status=S.DECLINED, created_at=DAY)

    response = api_a.get(f"/api/reports/daily/export/?{RANGE}&store=store-a")

    text = b"".join(response.streaming_content).decode()
    assert text.splitlines()[0] == (
        "date,store,currency,count,succeededCount,succeededAmount,declinedCount,failedCount,"
        "cancelledCount,timeoutCount,lateCount,refundCount,refundedAmount,netAmount"
    )
    exported = list(csv.DictReader(io.StringIO(text)))
    assert exported == [{k: str(v) for k, v in row.items()} for row in report(api_a)]
    assert exported[0]["succeededAmount"] == "10.05"
    assert response["Content-Disposition"] == (
        'attachment; filename="daily-store-a-2024-03-01-2024-03-31.csv"'
    )


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("date_from=March", "date_from"),
        ("date_to=2024-02-30", "date_to"),
        ("date_from=2024-03-10&date_to=2024-03-01", "date_from"),
        ("date_from=2020-01-01&date_to=2024-01-01", "date_from"),
        ("date_to=9999-12-31", "date_to"),
        ("store=no-such-store", "store"),
    ],
)
def test_bad_report_parameter_is_400_naming_it(store_a, api_a, query, parameter):
    for url in ("/api/reports/daily/", "/api/reports/daily/export/"):
        response = api_a.get(f"{url}?{query}")

        assert response.status_code == 400
        assert response.json()["message"].startswith(f"{parameter}: ")
        assert list(response.json()["fields"]) == [parameter]


def test_a_store_with_no_payments_has_no_rows(store_a, api_a):
    assert report(api_a) == []
