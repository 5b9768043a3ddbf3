"""The dashboard's pages through Django's test client: login, store scope, filters, timelines."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from payments.models import TransactionStatus
from posgateway.dashboard.selectors import today_at_a_glance
from sessions.models import SessionState, TerminalSession
from terminals.models import DeviceStatus, DeviceType
from tests.dashboard.conftest import PASSWORD, Store, logged_in, make_payment, staff
from tests.factories import make_device

pytestmark = pytest.mark.django_db

PAGES = [
    "/dashboard/",
    "/dashboard/payments/",
    "/dashboard/sessions/",
    "/dashboard/devices/",
]


def text(response) -> str:
    return response.content.decode()


def rows(response, attribute: str) -> list[str]:
    """The values of ``data-<attribute>`` on the page's rows, in page order."""
    return re.findall(rf'<tr data-{attribute}="([^"]*)"', text(response))


# --- Login -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [*PAGES, "/dashboard/payments/TXN-1/"])
def test_every_page_sends_an_anonymous_visitor_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_login_takes_username_and_password_and_returns_to_the_page_asked_for(client, alice):
    form = client.get("/accounts/login/?next=/dashboard/payments/")
    assert form.status_code == 200
    assert 'name="username"' in text(form)
    assert 'name="password"' in text(form)
    assert 'name="csrfmiddlewaretoken"' in text(form)

    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "next": "/dashboard/payments/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/payments/"
    assert client.get("/dashboard/payments/").status_code == 200


def test_login_without_next_lands_on_the_terminals_page(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response["Location"] == "/dashboard/"


def test_a_wrong_password_is_refused_with_the_form_again(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in text(response)
    assert client.get("/dashboard/").status_code == 302


def test_logout_is_a_post_and_ends_the_session(client_a):
    assert client_a.post("/accounts/logout/").status_code == 302
    assert client_a.get("/dashboard/").status_code == 302


def test_a_user_who_is_not_staff_is_refused(db):
    user = get_user_model().objects.create_user("mallory", password=PASSWORD)
    response = logged_in(user).get("/dashboard/")
    assert response.status_code == 403


def test_login_form_checks_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


# --- Terminals -------------------------------------------------------------------------------


def test_terminals_page_lists_only_the_terminals_of_the_users_stores(client_a, store_a, store_b):
    make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    make_device(store_b.group, DeviceType.TERMINAL, "B-ONLY")
    response = client_a.get("/dashboard/")
    assert response.status_code == 200
    assert rows(response, "device-id") == ["TERM-1", "TERM-2"]
    assert "store-b" not in text(response)
    assert "B-ONLY" not in text(response)


def test_a_superuser_sees_the_terminals_of_every_store(root, store_a, store_b):
    response = logged_in(root).get("/dashboard/")
    assert re.findall(r'data-store="([^"]+)"', text(response)) == ["store-a", "store-b"]


def test_terminal_row_shows_status_word_payment_in_flight_and_active_session(
    client_a, store_a, run
):
    run.connect(store_a.terminal, "test!term")
    make_payment(store_a, "PAY-NOW", status=TransactionStatus.IN_PROGRESS, amount="7.5")
    TerminalSession.objects.create(
        group=store_a.group,
        session_id="table-12",
        terminal=store_a.terminal,
        desktop=store_a.desktop,
        operations=[
            {"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000}
        ],
        last_request_at=dt.datetime.now(dt.UTC),
    )
    page = text(client_a.get("/dashboard/"))
    row = page[page.index('data-device-id="TERM-1"') :]
    row = row[: row.index("</tr>")]
    assert '<span class="status tone-ok" data-status="online">online</span>' in row
    assert "Counter 1" in row
    assert "PAY-NOW" in row
    assert "7.50 EUR" in row
    assert ">IN_PROGRESS<" in row
    assert "table-12" in row
    assert "data-ago" in row  # last activity as a relative time the page keeps current


def test_status_words_are_exactly_as_on_the_wire(client_a, store_a):
    for status in DeviceStatus.values:
        store_a.terminal.status = status
        store_a.terminal.save(update_fields=["status"])
        page = text(client_a.get("/dashboard/"))
        assert f'data-status="{status}">{status}</span>' in page


def test_the_page_fragment_is_only_the_live_region(client_a, store_a):
    whole = client_a.get("/dashboard/")
    part = client_a.get("/dashboard/", headers={"X-Fragment": "1"})
    assert part.status_code == 200
    assert part["X-Fragment"] == "1"
    assert "<html" not in text(part)
    assert 'data-device-id="TERM-1"' in text(part)
    assert "<html" in text(whole)
    assert "X-Fragment" in whole["Vary"]
    assert "no-cache" in whole["Cache-Control"]


# --- Today at a glance -----------------------------------------------------------------------


def test_today_at_a_glance_counts_each_store_by_its_own_day(alice, store_a, store_b):
    # 22:30 UTC: still June 1 in UTC, already June 2 in Berlin (UTC+2 in summer).
    now = dt.datetime(2024, 6, 1, 22, 30, tzinfo=dt.UTC)
    at = lambda h, m: dt.datetime(2024, 6, 1, h, m, tzinfo=dt.UTC)  # noqa: E731
    make_payment(store_a, amount="10.00", created_at=at(9, 5))
    make_payment(store_a, amount="2.50", created_at=at(9, 40))
    make_payment(store_a, status="DECLINED", created_at=at(21, 0))
    make_payment(store_a, currency="JPY", amount="1500", created_at=at(12, 0))
    make_payment(store_a, created_at=at(9, 0) - dt.timedelta(days=1))  # yesterday
    make_payment(store_b, amount="99.00", created_at=at(22, 15))  # Berlin: June 2, 00:15
    make_payment(store_b, amount="50.00", created_at=at(21, 50))  # Berlin: June 1, 23:50

    root_user = get_user_model().objects.create_superuser("root2", "r@example.com", "x" * 12)
    glance = today_at_a_glance(user=root_user, now=now)
    assert glance.dates == [dt.date(2024, 6, 1), dt.date(2024, 6, 2)]
    totals = {t.currency: t for t in glance.currencies}
    assert (totals["EUR"].count, totals["EUR"].succeeded, totals["EUR"].amount_text) == (
        4,
        3,
        "111.50",
    )
    assert totals["EUR"].declined == 1
    assert totals["JPY"].amount_text == "1500"
    hours = dict(enumerate(glance.hours))
    assert hours[9] == (2, 0, 0)
    assert hours[21] == (0, 0, 1)
    assert hours[12] == (1, 0, 0)
    assert hours[0] == (1, 0, 0)  # Berlin's 00:15
    assert sum(sum(counts) for counts in glance.hours) == 5

    # Alice sees her store only.
    mine = today_at_a_glance(user=alice, now=now)
    assert {t.currency: t.count for t in mine.currencies} == {"EUR": 3, "JPY": 1}


def test_the_terminals_page_shows_today_and_its_chart(client_a, store_a, store_b):
    make_payment(store_a, amount="4.20")
    make_payment(store_a, status="FAILED")
    make_payment(store_b, amount="1000.00")
    page = text(client_a.get("/dashboard/"))
    assert "Today at a glance" in page
    assert "4.20 <small>EUR</small>" in page
    assert "1 of 2 succeeded" in page
    assert "1000.00" not in page
    assert page.count('<g class="hour"') == 24
    assert "1 succeeded, 1 not succeeded" in page  # the bar of this hour says it in words


# --- Payments --------------------------------------------------------------------------------


def test_payments_page_lists_the_users_payments_newest_first(client_a, store_a, store_b):
    now = dt.datetime.now(dt.UTC)
    make_payment(store_a, "OLD", created_at=now - dt.timedelta(hours=2))
    make_payment(store_a, "NEW", created_at=now)
    make_payment(store_a, "MID", created_at=now - dt.timedelta(hours=1))
    make_payment(store_b, "THEIRS", created_at=now)
    response = client_a.get("/dashboard/payments/")
    assert rows(response, "transaction-id") == ["NEW", "MID", "OLD"]
    assert "THEIRS" not in text(response)


def test_payments_page_is_paginated(client_a, store_a):
    now = dt.datetime.now(dt.UTC)
    for n in range(30):
        make_payment(store_a, f"P-{n:02d}", created_at=now - dt.timedelta(minutes=n))
    first = client_a.get("/dashboard/payments/?status=SUCCESS")
    assert rows(first, "transaction-id")[:2] == ["P-00", "P-01"]
    assert len(rows(first, "transaction-id")) == 25
    assert "page=2" in text(first)
    assert "status=SUCCESS&amp;page=2" in text(first)  # the filters stay on the next page
    second = client_a.get("/dashboard/payments/?status=SUCCESS&page=2")
    assert rows(second, "transaction-id") == [f"P-{n}" for n in range(25, 30)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "DECLINED"}, ["A-DECLINED"]),
        ({"terminal": "TERM-2"}, ["A-T2"]),
        ({"search": "order-77"}, ["A-ORDER"]),
        ({"search": "declin"}, ["A-DECLINED"]),
        ({"store": "store-a", "status": "SUCCESS"}, ["A-ORDER", "A-T2", "A-OK"]),
        ({"date_from": "2024-03-02", "date_to": "2024-03-02"}, ["A-OK"]),
    ],
)
def test_payments_page_filters(client_a, store_a, store_b, query, expected):
    t2, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    base = dt.datetime(2024, 3, 1, 12, tzinfo=dt.UTC)
    make_payment(store_a, "A-OK", created_at=base + dt.timedelta(days=1))
    make_payment(store_a, "A-DECLINED", status="DECLINED", created_at=base)
    make_payment(store_a, "A-T2", terminal=t2, created_at=base + dt.timedelta(days=2))
    make_payment(
        store_a, "A-ORDER", metadata={"orderId": "order-77"}, created_at=base + dt.timedelta(3)
    )
    make_payment(store_b, "B-DECLINED", status="DECLINED", created_at=base)
    response = client_a.get("/dashboard/payments/", query)
    assert response.status_code == 200
    assert rows(response, "transaction-id") == expected


def test_a_store_that_is_not_the_users_is_refused_by_the_filter(client_a, store_a, store_b):
    make_payment(store_b, "B-1")
    response = client_a.get("/dashboard/payments/?store=store-b")
    assert response.status_code == 200
    assert rows(response, "transaction-id") == []
    assert "Unknown store, or not one of yours." in text(response)
    assert 'id="export"' not in text(response)


def test_export_button_exports_exactly_the_filtered_set(client_a, store_a, store_b):
    now = dt.datetime.now(dt.UTC)
    for n in range(8):
        make_payment(
            store_a,
            f"E-{n}",
            status="SUCCESS" if n % 2 else "DECLINED",
            created_at=now - dt.timedelta(minutes=n),
        )
    make_payment(store_b, "E-B", status="DECLINED")
    page = client_a.get("/dashboard/payments/?status=DECLINED&search=E-")
    listed = rows(page, "transaction-id")
    assert listed == ["E-0", "E-2", "E-4", "E-6"]
    link = re.search(r'id="export" href="([^"]+)"', text(page)).group(1).replace("&amp;", "&")
    assert link.startswith("/api/transactions/export/?")
    assert "status=DECLINED" in link
    assert "search=E-" in link
    export = client_a.get(link)  # the login session is enough for the API
    assert export.status_code == 200
    assert export["Content-Type"].startswith("text/csv")
    body = b"".join(export.streaming_content).decode()
    exported = [row["transactionId"] for row in csv.DictReader(io.StringIO(body))]
    assert sorted(exported) == sorted(listed)


def test_payment_detail_shows_the_whole_timeline_from_the_services(client_a, store_a, run):
    run.paid(store_a, "TL-1", "SUCCESS")
    response = client_a.get("/dashboard/payments/TL-1/")
    assert response.status_code == 200
    kinds = re.findall(r'<li data-kind="([a-z_]+)"', text(response))
    assert kinds == ["requested", "forwarded", "result", "delivered"]
    page = text(response)
    assert "12.50 EUR" in page
    assert "order-TL-1" in page
    assert 'data-status="SUCCESS">SUCCESS</span>' in page


def test_a_late_result_appears_in_the_timeline(client_a, store_a, run):
    from payments import services as payments
    from payments.models import Transaction

    run.paid(store_a, "LATE-1", status="", ack=False)
    Transaction.objects.filter(transaction_id="LATE-1").update(
        deadline_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    run(payments.sweep_payment_timeouts)
    run(
        payments.payment_result,
        terminal=store_a.terminal,
        payment_response={"transactionId": "LATE-1", "status": "SUCCESS"},
    )
    page = text(client_a.get("/dashboard/payments/LATE-1/"))
    kinds = re.findall(r'<li data-kind="([a-z_]+)"', page)
    assert kinds == ["requested", "forwarded", "timeout", "late_result"]
    assert "late result" in page


def test_another_stores_payment_is_not_found(client_a, client_b, store_a, store_b):
    make_payment(store_b, "B-SECRET")
    assert client_a.get("/dashboard/payments/B-SECRET/").status_code == 404
    assert client_a.get("/dashboard/payments/B-SECRET/?store=store-b").status_code == 404
    assert client_b.get("/dashboard/payments/B-SECRET/").status_code == 200
    # The same answer as for an id nobody has.
    assert client_a.get("/dashboard/payments/NOBODY/").status_code == 404


def test_the_same_id_in_another_store_is_a_different_payment(client_a, store_a, store_b):
    make_payment(store_a, "SHARED", amount="1.00")
    make_payment(store_b, "SHARED", amount="999.00")
    page = text(client_a.get("/dashboard/payments/SHARED/"))
    assert "1.00 EUR" in page
    assert "999.00" not in page


def test_an_id_in_two_of_the_users_stores_asks_which(store_a, store_b):
    make_payment(store_a, "TWICE")
    make_payment(store_b, "TWICE")
    client = logged_in(staff("carol", store_a.slug, store_b.slug))
    page = text(client.get("/dashboard/payments/TWICE/"))
    assert 'href="?store=store-a"' in page
    assert 'href="?store=store-b"' in page
    detail = text(client.get("/dashboard/payments/TWICE/?store=store-b"))
    assert "<dt>Store</dt><dd>store-b</dd>" in detail


def test_a_payment_called_export_is_read_on_the_dashboard_and_found_by_the_api_search(
    client_a, store_a, run
):
    """/api/transactions/export/ is the CSV export, so a transactionId of exactly "export" has
    no API detail URL (docs/api.md says so): its timeline is on the dashboard, its row in the
    API's list with ?search=."""
    run.paid(store_a, "export", "SUCCESS")
    make_payment(store_a, "other")

    page = client_a.get("/dashboard/payments/export/")
    assert page.status_code == 200
    kinds = re.findall(r'<li data-kind="([a-z_]+)"', text(page))
    assert kinds == ["requested", "forwarded", "result", "delivered"]

    found = client_a.get("/api/transactions/?search=export").json()["results"]
    assert [(t["transactionId"], t["status"]) for t in found] == [("export", "SUCCESS")]
    clash = client_a.get("/api/transactions/export/")
    assert clash["Content-Type"].startswith("text/csv")


def test_odd_transaction_ids_link_to_their_detail_page(client_a, store_a):
    make_payment(store_a, "a/b?c#d%e")
    listing = text(client_a.get("/dashboard/payments/"))
    link = re.search(r'href="(/dashboard/payments/a[^"]+)"', listing).group(1)
    response = client_a.get(link.replace("&amp;", "&"))
    assert response.status_code == 200
    assert "a/b?c#d%e" in text(response)


def test_a_null_character_is_a_bad_request_not_a_crash(client_a, store_a):
    assert client_a.get("/dashboard/payments/?search=a%00b").status_code == 400
    assert client_a.get("/dashboard/payments/a%00b/").status_code in (400, 404)


# --- Sessions --------------------------------------------------------------------------------


def test_sessions_page_shows_active_and_recent_sessions_with_operations(client_a, store_a, store_b):
    now = dt.datetime.now(dt.UTC)
    ops = [{"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000}]
    TerminalSession.objects.create(
        group=store_a.group,
        session_id="table-1",
        terminal=store_a.terminal,
        desktop=store_a.desktop,
        operations=ops,
        last_request_at=now,
    )
    TerminalSession.objects.create(
        group=store_a.group,
        session_id="table-0",
        terminal=store_a.terminal,
        desktop=store_a.desktop,
        operations=ops,
        state=SessionState.EXPIRED,
        end_reason="expired",
        ended_at=now,
        last_request_at=now,
    )
    TerminalSession.objects.create(
        group=store_b.group,
        session_id="b-secret",
        terminal=store_b.terminal,
        desktop=store_b.desktop,
        operations=ops,
        last_request_at=now,
    )
    response = client_a.get("/dashboard/sessions/")
    page = text(response)
    assert rows(response, "session-id") == ["table-1", "table-0"]
    # Durations in words, and the Terminal API's words explained where they stay.
    assert 'Payment · <abbr title="Terminal API variant WaitingScreen:' in page
    waits = '">waiting screen</abbr> up to <span title="waitingScreenTimeoutMs 5000">5 s</span>'
    assert waits in page
    assert "A session without a request for 30 min expires." in page
    assert "1800 s" not in page
    assert 'data-status="ACTIVE">ACTIVE</span>' in page
    assert 'data-status="EXPIRED">EXPIRED</span>' in page
    assert "expires" in page
    assert "b-secret" not in page


# --- No N+1 ----------------------------------------------------------------------------------


def _fill(store: Store, run, count: int) -> None:
    """``count`` more terminals, each online with a payment in flight, a finished payment and a
    session (every other one active)."""
    for n in range(count):
        terminal, _ = make_device(store.group, DeviceType.TERMINAL, f"FILL-{n}-{count}")
        run.connect(terminal, f"test!fill-{n}-{count}")
        make_payment(store, status=TransactionStatus.IN_PROGRESS, terminal=terminal)
        make_payment(store, terminal=terminal, metadata={"orderId": f"o-{n}"})
        TerminalSession.objects.create(
            group=store.group,
            session_id=f"s-{n}-{count}",
            terminal=terminal,
            desktop=store.desktop,
            operations=[],
            state=SessionState.ACTIVE if n % 2 == 0 else SessionState.ENDED,
            last_request_at=dt.datetime.now(dt.UTC),
        )


# Session + user, then the page's own reads (the terminals page: 4 for the board, 4 for today,
# 4 for what needs attention; the payments list: one for its totals; the devices page: the
# user's stores, those they manage, the devices).
@pytest.mark.parametrize(
    ("url", "most"),
    [
        ("/dashboard/", 14),
        ("/dashboard/payments/", 7),
        ("/dashboard/payments/?status=SUCCESS&search=o-&store=store-a", 8),
        ("/dashboard/sessions/", 7),
        ("/dashboard/devices/", 5),
    ],
)
def test_list_pages_make_the_same_number_of_queries_for_few_or_many_rows(
    client_a, store_a, run, url, most, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _fill(store_a, run, 2)
    with CaptureQueriesContext(connection) as few:
        assert client_a.get(url).status_code == 200
    _fill(store_a, run, 20)
    with CaptureQueriesContext(connection) as many:
        assert client_a.get(url).status_code == 200
    assert len(many) == len(few), [q["sql"][:120] for q in many.captured_queries]
    with django_assert_max_num_queries(most):
        client_a.get(url)
