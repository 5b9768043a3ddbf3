"""The end-of-day report: one business day per store, per currency and per terminal, the very
figures of the REST daily export (its CSV byte for byte); the payments list's totals; the chart
counting payments in flight apart."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest

from posgateway.dashboard.charts import hourly_list
from posgateway.dashboard.selectors import today_at_a_glance
from tests.dashboard.conftest import make_payment
from tests.factories import make_device, make_refund

DAY = dt.date(2024, 6, 3)
FIGURES = (
    "count",
    "succeededAmount",
    "succeededCount",
    "refundedAmount",
    "refundCount",
    "netAmount",
    "declinedCount",
    "failedCount",
    "cancelledCount",
    "timeoutCount",
    "lateCount",
)


def text(response) -> str:
    return html.unescape(response.content.decode())


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


def body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def a_day(store_a, store_b):
    """A day of store-a on two terminals, with refunds, a late success and other days around."""
    term2, _ = make_device(store_a.group, "terminal", "TERM-2", label="Counter 2")
    make_payment(store_a, "P1", amount="10.00", created_at=at(9))
    make_payment(store_a, "P2", amount="5.50", created_at=at(10), terminal=term2)
    make_payment(store_a, "P3", amount="7.00", status="DECLINED", created_at=at(11))
    make_payment(store_a, "P4", amount="3.00", status="TIMEOUT", created_at=at(12))
    make_payment(store_a, "P5", amount="8.00", late=True, created_at=at(13), terminal=term2)
    make_payment(store_a, "P6", amount="1500", currency="JPY", created_at=at(14))
    sale = make_payment(store_a, "OLD", amount="30.00", created_at=at(9, day=DAY - dt.timedelta(1)))
    make_refund(store_a, sale, "RF-1", amount="4.00", created_at=at(15))
    make_payment(store_a, "NEXT", amount="99.00", created_at=at(9, day=DAY + dt.timedelta(1)))
    make_payment(store_b, "B1", amount="42.00", created_at=at(10))


def rest_rows(client, **params) -> list[dict]:
    response = client.get("/api/reports/daily/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def page_rows(page: str, table_id: str) -> list[dict]:
    """The figures of a report table, as the page shows them (data-field cells)."""
    table = re.search(rf'<table[^>]* id="{table_id}">(.*?)</table>', page, re.S).group(1)
    found = []
    for row in re.findall(r"<tr data-(?:terminal|currency)=.*?</tr>", table, re.S):
        fields = dict(re.findall(r'data-field="(\w+)">([^<]*)<', row))
        fields["currency"] = re.search(r'data-currency="(\w+)"', row).group(1)
        terminal = re.search(r'data-terminal="([^"]*)"', row)
        if terminal:
            fields["terminal"] = terminal.group(1)
        found.append(fields)
    return found


def test_a_past_days_report_matches_the_rest_daily_export_row_for_row(client_a, a_day):
    page = text(client_a.get("/dashboard/reports/", {"date": DAY.isoformat()}))
    expected = rest_rows(client_a, date_from=DAY.isoformat(), date_to=DAY.isoformat())
    assert [r["store"] for r in expected] == ["store-a", "store-a"]
    shown = page_rows(page, "totals-store-a")
    assert len(shown) == len(expected) == 2
    for row, rest in zip(shown, expected, strict=True):
        assert row["currency"] == rest["currency"]
        for name in FIGURES:
            assert row[name] == str(rest[name]), (rest["currency"], name)
    eur = next(r for r in expected if r["currency"] == "EUR")
    assert (eur["count"], eur["succeededAmount"], eur["netAmount"]) == (5, "23.50", "19.50")
    assert (eur["declinedCount"], eur["timeoutCount"], eur["lateCount"]) == (1, 1, 1)
    assert "99.00" not in page  # another day
    assert "42.00" not in page  # another store


def test_the_report_shows_each_terminal(client_a, a_day):
    page = text(client_a.get("/dashboard/reports/", {"date": DAY.isoformat()}))
    rows = {(r["terminal"], r["currency"]): r for r in page_rows(page, "terminals-store-a")}
    assert set(rows) == {("TERM-1", "EUR"), ("TERM-1", "JPY"), ("TERM-2", "EUR")}
    assert rows["TERM-2", "EUR"]["succeededAmount"] == "13.50"  # P2 and the late P5
    assert rows["TERM-1", "EUR"]["refundedAmount"] == "4.00"  # the refund ran on TERM-1
    assert rows["TERM-1", "EUR"]["netAmount"] == "6.00"
    # The terminals add up to the store.
    total = sum(float(r["netAmount"]) for (_, cur), r in rows.items() if cur == "EUR")
    assert total == 19.5


def test_the_reports_csv_is_the_rest_daily_export_byte_for_byte(client_a, a_day):
    day = DAY.isoformat()
    mine = client_a.get("/dashboard/reports/export/", {"date": day, "store": "store-a"})
    rest = client_a.get(
        "/api/reports/daily/export/", {"date_from": day, "date_to": day, "store": "store-a"}
    )
    assert mine.status_code == rest.status_code == 200
    assert mine["Content-Type"] == rest["Content-Type"]
    assert mine["Content-Disposition"] == rest["Content-Disposition"]
    assert mine["Content-Disposition"] == f'attachment; filename="daily-store-a-{day}-{day}.csv"'
    csv = body(mine)
    assert csv == body(rest)
    assert csv.count(b"\r\n") == 3  # the header and two currencies
    page = text(client_a.get("/dashboard/reports/", {"date": day, "store": "store-a"}))
    assert f'href="/dashboard/reports/export/?date={day}&store=store-a"' in page


def test_the_report_defaults_to_today_and_rejects_a_bad_day(client_a, store_a):
    make_payment(store_a, "TODAY", amount="2.00")
    page = text(client_a.get("/dashboard/reports/"))
    today = dt.datetime.now(dt.UTC).date().isoformat()  # store-a's day (UTC)
    assert f'name="date" id="id_date" value="{today}"' in page
    assert page_rows(page, "totals-store-a")[0]["succeededAmount"] == "2.00"
    bad = client_a.get("/dashboard/reports/", {"date": "2024-13-40"})
    assert bad.status_code == 400
    assert "Enter a valid date." in text(bad)
    assert client_a.get("/dashboard/reports/export/", {"date": "x"}).status_code == 400
    other = client_a.get("/dashboard/reports/", {"store": "store-b"})
    assert other.status_code == 400  # not one of hers: not among the choices
    assert "store-b" not in text(other).split("Select a valid choice")[0].split("<main")[1]


def test_a_viewer_reads_the_report_and_another_store_is_never_in_it(client_b, a_day):
    page = text(client_b.get("/dashboard/reports/", {"date": DAY.isoformat()}))
    assert 'data-store="store-a"' not in page
    assert "42.00" in page
    csv = body(client_b.get("/dashboard/reports/export/", {"date": DAY.isoformat()}))
    assert b"store-a" not in csv
    assert b"42.00" in csv


# --- The payments list's totals -----------------------------------------------------------------


def test_the_payments_list_shows_the_count_and_succeeded_total_of_its_filter(client_a, a_day):
    page = text(client_a.get("/dashboard/payments/", {"terminal": "TERM-2"}))
    assert 'id="payments-count">2<' in page
    assert re.search(r'data-currency="EUR">Succeeded: <strong[^>]*>13\.50 EUR</strong>', page)
    everything = text(client_a.get("/dashboard/payments/", {"date_from": DAY.isoformat()}))
    assert "refunds \N{MINUS SIGN}4.00 EUR, 1" in everything
    assert ">1500 JPY<" in everything


# --- The chart ------------------------------------------------------------------------------------


def test_payments_in_flight_are_their_own_category(alice, store_a, client_a):
    now = dt.datetime.now(dt.UTC)
    make_payment(store_a, "BUSY", status="IN_PROGRESS", created_at=now)
    make_payment(store_a, "NO", status="DECLINED", created_at=now)
    make_payment(store_a, "OK", created_at=now)
    glance = today_at_a_glance(user=alice, now=now)
    assert glance.hours[now.hour] == (1, 1, 1)
    page = text(client_a.get("/dashboard/"))
    assert "1 succeeded, 1 in flight, 1 not succeeded" in page
    assert 'class="bar-busy"' in page
    # The phone's list of hours says the same in words.
    assert "1 ok · 1 in flight · 1 not" in page


def test_the_phones_hour_list_spans_the_busy_hours_only():
    hours = [(0, 0, 0)] * 24
    hours[9], hours[12] = (3, 0, 1), (1, 0, 0)
    listed = hourly_list(hours, current_hour=13)
    assert re.findall(r'data-hour="(\d+)"', listed) == ["9", "10", "11", "12", "13"]
    assert 'aria-current="time"' in listed
    assert "No payments yet today." in hourly_list([(0, 0, 0)] * 24, current_hour=5)
