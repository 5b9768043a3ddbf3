"""Needs attention: the rules (payments and terminals selectors), resolving with a note (a
payments service), and the pages: a manager resolves, a viewer reads, another store sees none."""

from __future__ import annotations

import datetime as dt
import html
import json

import pytest
from django.utils import timezone

from payments import services as payments
from payments.models import EventKind, Transaction
from payments.selectors import AttentionCase, attention_items, attention_items_of
from posgateway.core.protocol import BadRequest, Conflict
from posgateway.dashboard.templatetags.dashboard import duration_text
from terminals.models import DeviceStatus
from terminals.selectors import store_open_since, terminals_offline_for_attention
from terminals.services import staff_create_or_update
from tests.dashboard.conftest import PASSWORD, logged_in, make_payment
from tests.factories import make_refund


def text(response) -> str:
    return html.unescape(response.content.decode())


def late_success(run, store, tid: str = "LATE-1") -> Transaction:
    """A payment the till was told was cancelled, then charged by the terminal after all."""
    run.paid(store, tid, "CANCELLED")
    run(
        payments.payment_result,
        terminal=store.terminal,
        payment_response={"transactionId": tid, "status": "SUCCESS"},
    )
    return Transaction.objects.get(group=store.group, transaction_id=tid)


@pytest.fixture
def vera(store_a):
    """A viewer of store-a."""
    user, _ = staff_create_or_update(
        username="vera", group_slugs=[store_a.slug], password=PASSWORD, role="viewer"
    )
    return user


# --- The rules ----------------------------------------------------------------------------------


def test_a_late_success_needs_attention_in_plain_words(alice, bob, store_a, run):
    txn = late_success(run, store_a)
    assert (txn.status, txn.late) == ("SUCCESS", True)
    (item,) = attention_items(user=alice)
    assert item.txn.pk == txn.pk
    assert item.case == AttentionCase.LATE_SUCCESS
    assert item.what == (
        "TERM-1 charged the card 12.50 EUR after the till was told the payment was cancelled."
    )
    assert "whether the customer paid again" in item.check
    assert attention_items(user=bob) == []  # another store's item is not theirs


def test_a_late_decline_and_ordinary_payments_need_nothing(alice, store_a, run):
    run.paid(store_a, "OK-1")
    run.paid(store_a, "NO-1", "DECLINED")
    run.paid(store_a, "CX-1", "CANCELLED")
    run(
        payments.payment_result,
        terminal=store_a.terminal,
        payment_response={"transactionId": "CX-1", "status": "DECLINED"},
    )
    assert Transaction.objects.get(transaction_id="CX-1").late
    assert attention_items(user=alice) == []


def test_an_over_refunded_payment_and_a_stuck_payment_need_attention(alice, store_a):
    sale = make_payment(store_a, "SALE", amount="20.00")
    make_refund(store_a, sale, "RF-1", amount="20.00")
    Transaction.objects.filter(pk=sale.pk).update(refunded_amount="25.00", over_refunded=True)
    now = timezone.now()
    stuck = make_payment(store_a, "STUCK", status="IN_PROGRESS", terminal=None)
    Transaction.objects.filter(pk=stuck.pk).update(deadline_at=now - dt.timedelta(minutes=5))
    items = {item.case: item for item in attention_items(user=alice, now=now)}
    assert set(items) == {AttentionCase.OVER_REFUNDED, AttentionCase.STUCK}
    assert items[AttentionCase.OVER_REFUNDED].what == (
        "Refunds of 25.00 EUR went back to the card, more than the payment of 20.00 EUR."
    )
    assert items[AttentionCase.STUCK].txn.transaction_id == "STUCK"
    # Within ATTENTION_STUCK_AFTER_S of its deadline the sweeper still has time: not yet.
    early = now - dt.timedelta(minutes=5) + dt.timedelta(seconds=30)
    assert {i.case for i in attention_items(user=alice, now=early)} == {"over_refunded"}


def test_a_terminal_offline_during_opening_hours_needs_attention(alice, store_a, settings):
    settings.ATTENTION_OFFLINE_GRACE_S = 120
    group = store_a.group
    group.opens_at, group.closes_at = dt.time(9), dt.time(18)
    group.save()
    terminal = store_a.terminal
    terminal.status = DeviceStatus.OFFLINE
    terminal.status_changed_at = dt.datetime(2024, 6, 3, 7, 0, tzinfo=dt.UTC)  # before opening
    terminal.save()
    at = lambda h, m: dt.datetime(2024, 6, 3, h, m, tzinfo=dt.UTC)  # noqa: E731 (UTC store)
    assert terminals_offline_for_attention(user=alice, now=at(8, 30)) == []  # closed
    assert terminals_offline_for_attention(user=alice, now=at(9, 1)) == []  # just opened
    (found,) = terminals_offline_for_attention(user=alice, now=at(9, 5))
    assert (found.device.pk, found.since, found.during_opening_hours) == (
        terminal.pk,
        at(9, 0),
        True,
    )
    assert terminals_offline_for_attention(user=alice, now=at(18, 0)) == []  # closed again


def test_without_opening_hours_a_terminal_needs_attention_after_a_while(
    alice, bob, store_a, settings
):
    settings.ATTENTION_OFFLINE_AFTER_S = 900
    terminal = store_a.terminal
    since = dt.datetime(2024, 6, 3, 3, 0, tzinfo=dt.UTC)
    terminal.status, terminal.status_changed_at = DeviceStatus.OFFLINE, since
    terminal.save()
    assert terminals_offline_for_attention(user=alice, now=since + dt.timedelta(minutes=14)) == []
    (found,) = terminals_offline_for_attention(user=alice, now=since + dt.timedelta(minutes=15))
    assert found.during_opening_hours is False
    assert terminals_offline_for_attention(user=bob, now=since + dt.timedelta(hours=1)) == []
    terminal.status = DeviceStatus.RECONNECTING  # not offline yet
    terminal.save()
    assert terminals_offline_for_attention(user=alice, now=since + dt.timedelta(hours=1)) == []


def test_opening_hours_past_midnight(store_b):
    group = store_b.group  # Europe/Berlin: UTC+2 in June
    group.opens_at, group.closes_at = dt.time(18), dt.time(2)
    at = lambda h: dt.datetime(2024, 6, 3, h, 0, tzinfo=dt.UTC)  # noqa: E731
    assert store_open_since(group, at(15)) is None  # 17:00 local
    assert store_open_since(group, at(16)).hour == 18  # 18:00 local
    assert store_open_since(group, at(23)).date() == dt.date(2024, 6, 3)  # 01:00 next day
    assert store_open_since(group, at(0) + dt.timedelta(days=1)) is None  # 02:00 local


# --- Resolving ----------------------------------------------------------------------------------


def test_a_manager_resolves_an_item_with_a_note_kept_on_the_payments_log(alice, store_a, run):
    txn = late_success(run, store_a)
    event = run(
        payments.attention_resolve,
        txn=txn,
        case="late_success",
        note="  Customer paid once; the cash drawer agrees.  ",
        user=alice,
    )
    assert (event.kind, event.source) == (EventKind.RESOLVED, "dashboard")
    assert event.detail == {
        "case": "late_success",
        "note": "Customer paid once; the cash drawer agrees.",
        "user": "alice",
        "userId": alice.pk,
    }
    assert attention_items(user=alice) == []
    # The store's dashboards are told (the item leaves every open page).
    assert run.events(store_a.group.pk)[-1]["step"] == "resolved"
    with pytest.raises(Conflict, match="Already resolved by alice at "):
        run(payments.attention_resolve, txn=txn, case="late_success", note="again", user=alice)
    assert txn.events.filter(kind=EventKind.RESOLVED).count() == 1


@pytest.mark.parametrize(
    ("case", "note", "error"),
    [
        ("late_success", "   ", "Write a note"),
        ("late_success", "x" * 501, "at most 500 characters"),
        ("late_success", "bad\x00note", "printable"),
        ("nonsense", "a note", "Unknown case"),
        ("over_refunded", "a note", None),  # not open on this payment: a Conflict
    ],
)
def test_a_bad_resolve_is_refused_and_stores_nothing(alice, store_a, run, case, note, error):
    txn = late_success(run, store_a)
    expected = (BadRequest, Conflict) if error is None else BadRequest
    with pytest.raises(expected, match=error or "Nothing of this kind"):
        run(payments.attention_resolve, txn=txn, case=case, note=note, user=alice)
    assert not txn.events.filter(kind=EventKind.RESOLVED).exists()
    assert len(attention_items_of(txn=txn)) == 1


# --- The pages ----------------------------------------------------------------------------------


def test_the_home_page_and_its_own_page_list_what_needs_attention(client_a, store_a, run):
    txn = late_success(run, store_a)
    home = text(client_a.get("/dashboard/"))
    assert 'id="home-attention"' in home
    assert "charged the card 12.50 EUR after the till was told the payment was cancelled" in home
    timeline = f'href="/dashboard/payments/{txn.transaction_id}/?store=store-a"'
    assert timeline in home
    page = text(client_a.get("/dashboard/attention/"))
    assert 'id="attention-count">1<' in page
    resolve = "/dashboard/attention/resolve/late_success/LATE-1/?store=store-a"
    assert f'data-resolve href="{resolve}"' in page
    # Its own live region, as every page's.
    part = client_a.get("/dashboard/attention/", headers={"X-Fragment": "1"})
    assert part["X-Fragment"] == "1"
    assert "LATE-1" in text(part)


def test_resolving_from_the_dashboard(client_a, alice, store_a, run):
    txn = late_success(run, store_a)
    url = "/dashboard/attention/resolve/late_success/LATE-1/?store=store-a"
    form = text(client_a.get(url))
    assert "charged the card 12.50 EUR" in form
    # No note: the form again, with its error, and nothing stored.
    response = client_a.post(url, {"note": " "})
    assert response.status_code == 200
    assert "This field is required." in text(response)
    assert not txn.events.filter(kind=EventKind.RESOLVED).exists()

    response = client_a.post(url, {"note": "Checked with the cashier: paid once."}, follow=True)
    assert response.redirect_chain[-1][0] == "/dashboard/attention/"
    page = text(response)
    assert "Resolved: LATE-1." in page
    assert "Nothing needs attention." in page
    assert "Checked with the cashier: paid once." in page  # recently resolved, with the note
    # On the payment's timeline: what, who, the note.
    detail = text(client_a.get("/dashboard/payments/LATE-1/"))
    assert "Marked resolved (late success) by alice" in detail
    assert '<blockquote class="note">Checked with the cashier: paid once.</blockquote>' in detail
    # Resolved already: the form is not offered again.
    again = client_a.get(url, follow=True)
    assert "no longer needs attention" in text(again)


def test_a_viewer_sees_every_item_and_resolves_none(vera, store_a, run):
    txn = late_success(run, store_a)
    client = logged_in(vera)
    page = text(client.get("/dashboard/attention/"))
    assert "charged the card 12.50 EUR" in page
    assert "data-resolve" not in page
    assert "view only" in page
    assert "data-resolve" not in text(client.get("/dashboard/payments/LATE-1/"))
    url = "/dashboard/attention/resolve/late_success/LATE-1/?store=store-a"
    for response in (client.get(url), client.post(url, {"note": "I did look"})):
        assert response.status_code == 403
        assert json.loads(response.content) == {
            "error": "Forbidden",
            "message": "Only a manager of the store can resolve what needs attention.",
        }
    assert not txn.events.filter(kind=EventKind.RESOLVED).exists()


def test_another_stores_items_are_never_shown_nor_resolved(client_b, store_a, run):
    txn = late_success(run, store_a)
    assert "LATE-1" not in text(client_b.get("/dashboard/"))
    assert "LATE-1" not in text(client_b.get("/dashboard/attention/"))
    url = "/dashboard/attention/resolve/late_success/LATE-1/?store=store-a"
    assert client_b.post(url, {"note": "not mine"}).status_code == 404
    assert not txn.events.filter(kind=EventKind.RESOLVED).exists()


# --- Words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (5, "5 s"),
        (1.5, "1.5 s"),
        (60, "1 min"),
        (90, "1 min 30 s"),
        (1800, "30 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (86400 + 7200, "1 d 2 h"),
    ],
)
def test_durations_are_said_as_people_say_them(seconds, words):
    assert duration_text(seconds) == words
