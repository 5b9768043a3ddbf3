"""Refunds on the dashboard: a payment's refunds and remainder, the refund form with its
confirmation, the refund's own page, the payments list's type filter and today's net."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from payments import services as payments
from payments.models import EventSource, Transaction, TransactionStatus, TransactionType
from posgateway.dashboard import views
from posgateway.dashboard.selectors import today_at_a_glance
from posgateway.gateway import delivery
from terminals.models import DeviceType
from tests.dashboard.conftest import Store, make_payment
from tests.factories import make_device

TERM_CHANNEL = "test!term-store-a"


def text(response) -> str:
    return response.content.decode()


def refunds_of(payment: Transaction) -> list[Transaction]:
    return list(Transaction.objects.filter(original=payment).order_by("pk"))


def refund_url(tid: str, store: str = "store-a") -> str:
    return f"/dashboard/refunds/new/{tid}/?store={store}"


def review(client: Client, tid: str, *, amount: str, reason: str = "", terminal: str = "TERM-1"):
    """The form step: fill it in and ask for the confirmation."""
    return client.post(
        refund_url(tid),
        {"amount": amount, "reason": reason, "terminal": terminal, "review": "1"},
    )


def confirmation(response) -> dict[str, str]:
    """The hidden fields of the confirmation page's form, as the browser would post them."""
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', text(response))
    return {name: html.unescape(value) for name, value in fields if name != "csrfmiddlewaretoken"}


def confirm(client: Client, tid: str, fields: dict[str, str]):
    return client.post(refund_url(tid), {**fields, "confirm": "1"})


def refund_on(run, store: Store, payment: Transaction, tid: str, amount: str, **who):
    """A refund through the service, as a desktop (``desktop=``) or staff (``user=``) starts it."""
    if "user" in who:
        who["source"] = EventSource.DASHBOARD
    return run(
        payments.refund_start,
        group_id=store.group.pk,
        terminal_id="TERM-1",
        refund_request={
            "transactionId": tid,
            "originalTransactionId": payment.transaction_id,
            "amount": amount,
            "reason": "damaged item",
        },
        **who,
    )


def refund_result(run, store: Store, tid: str, status: str = "SUCCESS") -> None:
    run(
        payments.payment_result,
        terminal=store.terminal,
        payment_response={"transactionId": tid, "status": status},
        kind=TransactionType.REFUND,
    )


@pytest.fixture
def paid(store_a, run) -> Transaction:
    """PAY-1: 12.50 EUR, succeeded on TERM-1, which stays connected."""
    return run.paid(store_a, "PAY-1")


# --- The payment's page and the refund's -------------------------------------------------------


@pytest.mark.django_db
def test_a_payments_page_lists_its_refunds_and_what_is_left_to_refund(
    client_a, alice, store_a, run, paid
):
    desk = Transaction.objects.get(transaction_id="PAY-1").desktop_connection_id
    by_desktop = {"desktop": store_a.desktop, "desktop_connection_id": desk}
    refund_on(run, store_a, paid, "RF-DESK", "3.00", **by_desktop)
    refund_result(run, store_a, "RF-DESK")
    refund_on(run, store_a, paid, "RF-DECLINED", "1.00", user=alice)
    refund_result(run, store_a, "RF-DECLINED", "DECLINED")
    refund_on(run, store_a, paid, "RF-FLIGHT", "2.00", user=alice)

    page = text(client_a.get("/dashboard/payments/PAY-1/"))
    rows = re.findall(r'<tr data-transaction-id="([^"]+)" data-status="([A-Z_]+)"', page)
    assert rows == [
        ("RF-DESK", "SUCCESS"),
        ("RF-DECLINED", "DECLINED"),
        ("RF-FLIGHT", "IN_PROGRESS"),
    ]
    assert 'href="/dashboard/payments/RF-DESK/?store=store-a"' in page
    assert '<code title="desktop">POS-1</code>' in page  # started by the desktop
    assert page.count('<span class="who" title="staff user">alice</span>') == 2
    assert "damaged item" in page
    # 12.50 paid, 3.00 refunded, 2.00 in flight: 7.50 left.
    assert "data-refunded>3.00 EUR</strong>" in page
    assert "data-refundable>7.50 EUR</strong>" in page
    assert "2.00 EUR in flight" in page
    assert 'id="refund-button"' in page
    assert 'id="over-refunded"' not in page


@pytest.mark.django_db
def test_a_refunds_page_names_its_payment_its_reason_and_who_started_it(
    client_a, alice, store_a, run, paid
):
    refund_on(run, store_a, paid, "RF-1", "4.00", user=alice)
    page = text(client_a.get("/dashboard/payments/RF-1/"))
    assert "<h1>Refund <code>RF-1</code></h1>" in page
    assert re.search(r'id="refund-of"><a href="/dashboard/payments/PAY-1/\?store=store-a">', page)
    assert "<dt>Reason</dt><dd>damaged item</dd>" in page
    assert '<span class="who" title="staff user">alice</span>' in page
    assert "4.00 EUR" in page
    assert 'data-status="IN_PROGRESS">IN_PROGRESS</span>' in page
    assert "Requested on the dashboard by alice" in page
    assert 'id="refunds-card"' not in page  # a refund has no refunds
    # The page follows the refund live (its own events carry its transactionId).
    assert 'data-live-transaction="RF-1"' in page


@pytest.mark.django_db
def test_an_over_refunded_payment_is_flagged_for_a_person(client_a, alice, store_a, run, paid):
    refund_on(run, store_a, paid, "RF-ALL", "12.50", user=alice)
    Transaction.objects.filter(transaction_id="RF-ALL").update(
        deadline_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    run(payments.sweep_payment_timeouts)  # the gateway gives up on it: 12.50 refundable again
    refund_on(run, store_a, paid, "RF-AGAIN", "12.50", user=alice)
    refund_result(run, store_a, "RF-AGAIN")
    refund_result(run, store_a, "RF-ALL")  # late, but the money has moved

    page = text(client_a.get("/dashboard/payments/PAY-1/"))
    assert 'id="over-refunded"' in page
    assert "add up to 25.00 EUR, more than the payment" in page
    assert 'id="refund-button"' not in page  # nothing left to refund


@pytest.mark.django_db
def test_a_payment_that_did_not_succeed_offers_no_refund(client_a, store_a):
    make_payment(store_a, "NOPE", status=TransactionStatus.DECLINED)
    page = text(client_a.get("/dashboard/payments/NOPE/"))
    assert 'id="refund-button"' not in page
    form = text(client_a.get(refund_url("NOPE")))
    assert "only a successful payment can be refunded" in form
    assert 'name="amount"' not in form


@pytest.mark.django_db
def test_another_stores_payment_cannot_be_refunded(client_a, store_a, store_b):
    make_payment(store_b, "THEIRS")
    assert client_a.get(refund_url("THEIRS", "store-b")).status_code == 404
    response = client_a.post(refund_url("THEIRS", "store-b"), {"amount": "1.00", "confirm": "1"})
    assert response.status_code == 404


# --- The form and its confirmation ------------------------------------------------------------


@pytest.mark.django_db
def test_the_form_offers_the_remainder_and_the_online_terminals_the_payments_own_first(
    client_a, store_a, run, paid
):
    early, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-0", label="Back office")
    run.connect(early, "test!term-0")
    make_device(store_a.group, DeviceType.TERMINAL, "TERM-OFF")  # registered, not connected
    page = text(client_a.get("/dashboard/payments/PAY-1/"))
    link = re.search(r'id="refund-button" href="([^"]+)"', page).group(1)
    assert link == "/dashboard/refunds/new/PAY-1/?store=store-a"

    form = text(client_a.get(link))
    assert "Amount (EUR)" in form
    assert re.search(r'name="amount" value="12.50"', form)
    assert re.findall(r'<option value="([^"]+)"', form) == ["TERM-1", "TERM-0"]
    assert re.search(r'<option value="TERM-1"[^>]*selected', form)
    assert "TERM-0 · Back office" in form


@pytest.mark.django_db
def test_the_confirmation_repeats_amount_and_currency_and_starts_nothing(client_a, store_a, paid):
    response = review(client_a, "PAY-1", amount="5", reason="wrong size")
    assert response.status_code == 200
    page = text(response)
    question = re.search(r'<p id="confirm-question"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", question) == (
        "Refund 5.00 EUR to the customer's card on TERM-1 (Counter 1)?"
    )
    assert ">Refund 5.00 EUR</button>" in page
    fields = confirmation(response)
    assert fields["amount"] == "5.00"
    assert fields["reason"] == "wrong size"
    assert fields["terminal"] == "TERM-1"
    assert re.fullmatch(r"RF-\d{8}-[0-9A-F]{12}", fields["refund_id"])
    assert refunds_of(paid) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("20.00", "amount exceeds the refundable amount (refundable now: 12.50 EUR)"),
        ("1.234", "The amount has more decimals than EUR allows (2)"),
        ("0", "The amount must be greater than zero"),
        ("five", 'The amount must be a decimal string such as "12.50"'),
    ],
)
def test_a_wrong_amount_is_refused_on_the_form(client_a, paid, amount, error):
    response = review(client_a, "PAY-1", amount=amount)
    assert response.status_code == 200
    assert 'id="confirm-question"' not in text(response)
    assert html.unescape(text(response)).count(error) == 1
    assert refunds_of(paid) == []


@pytest.mark.django_db
def test_change_goes_back_to_the_form_with_what_was_entered(client_a, paid):
    fields = confirmation(review(client_a, "PAY-1", amount="2.00", reason="scratch"))
    page = text(client_a.post(refund_url("PAY-1"), {**fields, "edit": "1"}))
    assert 'name="amount" value="2.00"' in page
    assert 'value="scratch"' in page
    assert 'name="refund_id"' not in page  # the next confirmation gets a new id
    assert refunds_of(paid) == []


@pytest.mark.django_db
def test_the_forms_need_the_csrf_token(alice, paid):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        refund_url("PAY-1"),
        {"amount": "1.00", "terminal": "TERM-1", "refund_id": "RF-X", "confirm": "1"},
    )
    assert response.status_code == 403
    assert refunds_of(paid) == []


# --- Starting it -------------------------------------------------------------------------------
# transaction=True: the refund's forward is sent after its commit, as in production.


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, dict]]:
    """(channel, frame) of every frame the dashboard's views send to devices, as they send it."""
    frames: list[tuple[str, dict]] = []

    def recording(outbox):
        to_devices, *_ = delivery.messages(list(outbox.events))
        frames.extend((channel, m["frame"]) for channel, m, _ in to_devices if "frame" in m)
        return delivery.deliver_sync(outbox)

    monkeypatch.setattr(views, "deliver_sync", recording)
    return frames


def refund_requests(sent: list[tuple[str, dict]]) -> list[dict]:
    return [f for channel, f in sent if channel == TERM_CHANNEL and f["action"] == "refundRequest"]


@pytest.mark.django_db(transaction=True)
def test_a_manager_refunds_part_of_a_sale_on_a_connected_terminal(
    sent, client_a, alice, store_a, run
):
    paid = run.paid(store_a, "PAY-1")
    fields = confirmation(review(client_a, "PAY-1", amount="5.00", reason="damaged item"))
    response = confirm(client_a, "PAY-1", fields)

    refund_id = fields["refund_id"]
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/payments/{refund_id}/?store=store-a"
    (refund,) = refunds_of(paid)
    assert (refund.transaction_id, refund.type) == (refund_id, "REFUND")
    assert refund.status == "IN_PROGRESS"
    assert (str(refund.amount), refund.currency, refund.reason) == ("5.0000", "EUR", "damaged item")
    assert refund.initiated_by == alice
    assert refund.desktop is None
    (forwarded,) = refund_requests(sent)
    assert forwarded["refundRequest"]["transactionId"] == refund_id
    assert forwarded["refundRequest"]["originalTransactionId"] == "PAY-1"
    assert forwarded["refundRequest"]["amount"] == "5.00"

    page = text(client_a.get(response["Location"]))
    assert 'data-status="IN_PROGRESS">IN_PROGRESS</span>' in page
    assert 'id="refund-of"' in page

    refund_result(run, store_a, refund_id)
    page = text(client_a.get(response["Location"], headers={"X-Fragment": "1"}))
    assert 'data-status="SUCCESS">SUCCESS</span>' in page
    payment_page = text(client_a.get("/dashboard/payments/PAY-1/"))
    assert "data-refunded>5.00 EUR</strong>" in payment_page
    assert "data-refundable>7.50 EUR</strong>" in payment_page


@pytest.mark.django_db(transaction=True)
def test_submitting_the_same_confirmation_twice_refunds_once(sent, client_a, store_a, run):
    paid = run.paid(store_a, "PAY-1")
    fields = confirmation(review(client_a, "PAY-1", amount="12.50"))
    first = confirm(client_a, "PAY-1", fields)
    again = confirm(client_a, "PAY-1", fields)  # in flight
    assert again.status_code == 302
    assert again["Location"] == first["Location"]
    refund_result(run, store_a, fields["refund_id"])
    late = confirm(client_a, "PAY-1", fields)  # finished: nothing left, still the same refund
    assert late["Location"] == first["Location"]
    assert len(refunds_of(paid)) == 1
    assert len(refund_requests(sent)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_confirmation_overtaken_by_another_refund_is_refused_and_stores_nothing(
    sent, client_a, store_a, run
):
    paid = run.paid(store_a, "PAY-1")
    # Two confirmations of 10.00 open side by side: only one of them fits.
    first = confirmation(review(client_a, "PAY-1", amount="10.00"))
    second = confirmation(review(client_a, "PAY-1", amount="10.00"))
    assert confirm(client_a, "PAY-1", first).status_code == 302
    response = confirm(client_a, "PAY-1", second)
    assert response.status_code == 200
    assert "amount exceeds the refundable amount (refundable now: 2.50 EUR)" in text(response)
    assert [r.transaction_id for r in refunds_of(paid)] == [first["refund_id"]]


@pytest.mark.django_db(transaction=True)
def test_a_terminal_that_is_not_connected_or_busy_is_refused_in_the_contracts_words(
    sent, client_a, store_a, run
):
    paid = run.paid(store_a, "PAY-1")
    make_device(store_a.group, DeviceType.TERMINAL, "TERM-OFF")
    fields = confirmation(review(client_a, "PAY-1", amount="1.00"))
    response = confirm(client_a, "PAY-1", {**fields, "terminal": "TERM-OFF"})
    assert response.status_code == 200
    assert "Terminal connection not found" in text(response)

    assert confirm(client_a, "PAY-1", fields).status_code == 302  # TERM-1 is now busy with it
    other = confirmation(review(client_a, "PAY-1", amount="1.00"))
    response = confirm(client_a, "PAY-1", other)
    assert "Terminal is busy" in text(response)
    assert [r.transaction_id for r in refunds_of(paid)] == [fields["refund_id"]]


# --- The payments list and today at a glance ----------------------------------------------------


def make_refund(store: Store, payment: Transaction, tid: str, **fields) -> Transaction:
    """A refund of ``payment`` as the services would have left it (make_payment, then typed)."""
    refund = make_payment(store, tid, **fields)
    Transaction.objects.filter(pk=refund.pk).update(type=TransactionType.REFUND, original=payment)
    refund.refresh_from_db()
    return refund


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["RF-2", "P-2", "RF-1", "P-1"]),
        ("?type=PAYMENT", ["P-2", "P-1"]),
        ("?type=REFUND", ["RF-2", "RF-1"]),
        ("?type=REFUND&status=SUCCESS", ["RF-1"]),
    ],
)
def test_the_payments_list_marks_refunds_and_filters_by_type(client_a, store_a, query, expected):
    now = dt.datetime.now(dt.UTC)
    at = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    p1 = make_payment(store_a, "P-1", created_at=at(40))
    make_refund(store_a, p1, "RF-1", amount="2.00", created_at=at(30))
    make_payment(store_a, "P-2", created_at=at(20))
    make_refund(store_a, p1, "RF-2", amount="1.00", status="DECLINED", created_at=at(10))

    response = client_a.get("/dashboard/payments/" + query)
    page = text(response)
    assert re.findall(r'<tr data-transaction-id="([^"]+)"', page) == expected
    assert '<option value="REFUND"' in page
    for tid in expected:
        if tid.startswith("RF-"):
            row = re.search(rf'<tr data-transaction-id="{tid}".*?</tr>', page, re.S).group(0)
            assert 'data-type="REFUND"' in row
            assert ">Refund</span>" in row
            assert 'href="/dashboard/payments/P-1/?store=store-a"' in row
    if "REFUND" in query:
        export = re.search(r'id="export" href="([^"]+)"', page).group(1)
        assert "type=REFUND" in export  # the export takes the same filter


@pytest.mark.django_db
def test_today_at_a_glance_counts_refunds_apart_and_shows_the_net(client_a, store_a):
    now = dt.datetime(2024, 6, 1, 15, 0, tzinfo=dt.UTC)
    at = lambda h: dt.datetime(2024, 6, 1, h, 0, tzinfo=dt.UTC)  # noqa: E731
    sale = make_payment(store_a, "SALE", amount="100.00", created_at=at(9))
    make_payment(store_a, "SMALL", amount="20.00", created_at=at(10))
    make_refund(store_a, sale, "RF-OK", amount="30.00", created_at=at(11))
    make_refund(store_a, sale, "RF-NO", amount="5.00", status="DECLINED", created_at=at(12))
    yesterday = make_payment(store_a, "OLD", amount="50.00", created_at=at(9) - dt.timedelta(1))
    make_refund(store_a, yesterday, "RF-OLD", amount="50.00", created_at=at(13))

    user = get_user_model().objects.get(username="alice")
    glance = today_at_a_glance(user=user, now=now)
    (eur,) = glance.currencies
    # The payment numbers count payments only; the refunds that succeeded come off the net.
    assert (eur.count, eur.succeeded, eur.amount_text) == (2, 2, "120.00")
    assert (eur.refunds, eur.refunded_text, eur.net_text) == (2, "80.00", "40.00")
    assert (glance.count, glance.refunds) == (2, 2)
    assert sum(sum(counts) for counts in glance.hours) == 2  # payments per hour


@pytest.mark.django_db
def test_the_terminals_page_shows_todays_refunds_and_net(client_a, store_a):
    sale = make_payment(store_a, "SALE", amount="40.00")
    make_refund(store_a, sale, "RF-1", amount="15.00")
    page = text(client_a.get("/dashboard/"))
    assert 'data-glance="count">1</span>' in page
    assert 'data-glance="refunds">1</span><span class="tile-label">refund</span>' in page
    assert "1 refund &minus;15.00 · net <strong data-net>25.00 EUR</strong>" in page


# --- Roles: only a store's managers refund its payments (contract section 8) -----------------


@pytest.fixture
def vera(store_a):
    """A viewer of store-a, logged in."""
    from terminals.services import staff_create_or_update
    from tests.dashboard.conftest import PASSWORD, logged_in

    user, _ = staff_create_or_update(
        username="vera", group_slugs=[store_a.slug], password=PASSWORD, role="viewer"
    )
    return logged_in(user)


@pytest.mark.django_db
def test_a_viewer_sees_the_refunds_but_no_refund_button(vera, paid):
    page = text(vera.get("/dashboard/payments/PAY-1/"))

    assert "data-refundable>12.50 EUR</strong>" in page
    assert 'id="refund-button"' not in page


@pytest.mark.django_db(transaction=True)
def test_a_viewers_forged_refund_posts_get_403_json_and_start_nothing(
    sent, vera, client_a, store_a, paid
):
    # The manager's confirmation form, posted by the viewer with a valid CSRF token of theirs.
    fields = confirmation(review(client_a, "PAY-1", amount="5.00"))
    vera.get("/dashboard/payments/PAY-1/")
    forms = [
        {"amount": "5.00", "terminal": "TERM-1", "review": "1"},
        {**fields, "confirm": "1"},
    ]
    for form in forms:
        response = vera.post(refund_url("PAY-1"), form)
        assert response.status_code == 403
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "Forbidden"
        assert "manager" in response.json()["message"]
    assert vera.get(refund_url("PAY-1")).status_code == 403
    assert refunds_of(paid) == []
    assert refund_requests(sent) == []
