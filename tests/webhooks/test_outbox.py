"""Events are written in the transaction of the change they report: one INSERT, never for a
change that rolled back, and born dispatched when the store has no endpoint."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments import services as payments
from payments.models import Transaction
from sessions import services as sessions
from terminals import services as terminals
from tests.factories import Runner, Store, open_connection
from webhooks import services
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


@pytest.fixture
def shop(run):
    store = Store("store-a")
    store.desk_conn = open_connection(run, store.desktop, "test!desk")
    store.term_conn = open_connection(run, store.terminal, "test!term")
    services.endpoint_create(group_id=store.group.pk, url="http://127.0.0.1:9/", events=["*"])
    return store


@pytest.fixture(autouse=True)
def _allow_local(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


def start(run, shop, tid: str) -> None:
    run(
        payments.payment_start,
        desktop=shop.desktop,
        desktop_connection_id=shop.desk_conn.connection_id,
        terminal_id="TERM-1",
        payment_request={"transactionId": tid, "amount": "10.00", "currency": "EUR"},
    )


def result(run, shop, tid: str, status: str, kind: str = "PAYMENT") -> None:
    run(
        payments.payment_result,
        terminal=shop.terminal,
        payment_response={"transactionId": tid, "status": status},
        kind=kind,
    )


def types(**filters) -> list[str]:
    return list(
        WebhookEvent.objects.filter(**filters).order_by("pk").values_list("type", flat=True)
    )


def test_each_final_state_of_a_payment_is_one_event(run, shop):
    for n, status in enumerate(["SUCCESS", "DECLINED", "FAILED", "CANCELLED"]):
        start(run, shop, f"T{n}")
        result(run, shop, f"T{n}", status)

    assert types(type__startswith="payment.") == [
        "payment.succeeded",
        "payment.declined",
        "payment.failed",
        "payment.cancelled",
    ]
    event = WebhookEvent.objects.filter(type="payment.succeeded").get()
    assert event.subject_pk == Transaction.objects.get(transaction_id="T0").pk
    assert event.dispatched is False  # the store has an active endpoint: a worker fans it out


def test_a_timeout_and_the_late_result_after_it_are_events(run, shop):
    start(run, shop, "T1")
    Transaction.objects.update(deadline_at=timezone.now() - dt.timedelta(seconds=1))
    run(payments.sweep_payment_timeouts)
    result(run, shop, "T1", "SUCCESS")

    assert types(type__startswith="payment.") == ["payment.timed_out", "payment.late_result"]


def test_a_refund_reaching_a_final_state_is_a_refund_event(run, shop):
    start(run, shop, "T1")
    result(run, shop, "T1", "SUCCESS")
    run(
        payments.refund_start,
        group_id=shop.group.pk,
        terminal_id="TERM-1",
        desktop=shop.desktop,
        refund_request={"transactionId": "R1", "originalTransactionId": "T1"},
    )
    result(run, shop, "R1", "DECLINED", kind="REFUND")

    assert types(type__startswith="refund.") == ["refund.declined"]


def test_recording_a_result_costs_one_insert_of_an_event(run, shop):
    start(run, shop, "T1")
    with CaptureQueriesContext(connection) as queries:
        result(run, shop, "T1", "SUCCESS")

    touching = [q["sql"] for q in queries if "webhooks_" in q["sql"]]
    assert len(touching) == 1
    assert touching[0].startswith("INSERT INTO")


def test_a_change_that_rolls_back_leaves_no_event(run, shop):
    start(run, shop, "T1")
    before = WebhookEvent.objects.count()

    class Boom(Exception):
        pass

    def change_then_fail() -> None:
        with transaction.atomic():
            result(run, shop, "T1", "SUCCESS")
            assert WebhookEvent.objects.count() == before + 1  # written with the change …
            raise Boom

    with pytest.raises(Boom):
        change_then_fail()

    assert WebhookEvent.objects.count() == before  # … and gone with it
    assert Transaction.objects.get(transaction_id="T1").status == "IN_PROGRESS"


def test_terminal_status_changes_are_events(run, shop, settings):
    WebhookEvent.objects.all().delete()
    run(terminals.connection_close, connection_pk=shop.term_conn.pk, code=1006)
    conn = open_connection(run, shop.terminal, "test!term2")
    run(terminals.connection_close, connection_pk=conn.pk, code=1006)
    settings.RECONNECT_GRACE_S = 0
    run(terminals.sweep_connections)
    run(terminals.connection_close, connection_pk=shop.desk_conn.pk, code=1000)  # a desktop: none

    assert types() == [
        "terminal.reconnecting",
        "terminal.online",
        "terminal.reconnecting",
        "terminal.offline",
    ]
    assert set(WebhookEvent.objects.values_list("subject_pk", flat=True)) == {shop.terminal.pk}


def test_sessions_beginning_and_ending_are_events(run, shop):
    WebhookEvent.objects.all().delete()
    session = run(
        sessions.session_begin,
        desktop=shop.desktop,
        poi_id="TERM-1",
        session_id="S-1",
        operations=[],
    )
    run(sessions.session_end, desktop=shop.desktop, session_id="S-1")

    assert types() == ["session.began", "session.ended"]
    assert WebhookEvent.objects.first().subject_pk == session.pk


def test_a_store_without_an_active_endpoint_gets_events_born_dispatched(run):
    store = Store("store-b")
    open_connection(run, store.terminal, "test!t")

    event = WebhookEvent.objects.get(group=store.group)
    assert (event.type, event.dispatched) == ("terminal.online", True)
