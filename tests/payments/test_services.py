"""The payment state machine, called directly: what is stored, logged and sent after commit."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from payments import services as payments
from payments.models import DesktopMessage, Transaction, TransactionEvent
from posgateway.core.protocol import (
    TERMINAL_BUSY,
    TRANSACTION_ID_REUSED,
    TRANSACTION_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
)
from posgateway.dashboard.templatetags.dashboard import amount as dashboard_amount
from posgateway.gateway import connections as gateway
from posgateway.gateway import frames
from terminals import services as terminals
from terminals.models import Device, DeviceType
from tests.factories import Runner, Store, make_device, make_group, open_connection, render

pytestmark = pytest.mark.django_db

DESK = "test!desk"
TERM = "test!term"


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


@pytest.fixture
def world(run):
    """Store A with its desktop POS-1 and terminal TERM-1, both connected."""
    store = Store("store-a")
    return SimpleNamespace(
        group=store.group,
        desktop=store.desktop,
        terminal=store.terminal,
        desk_conn=open_connection(run, store.desktop, DESK),
        term_conn=open_connection(run, store.terminal, TERM),
    )


def start(
    run: Runner,
    world,
    tid: str = "TXN-1",
    *,
    terminal_id: str = "TERM-1",
    amount: str = "12.30",
    currency: str = "USD",
    desktop: Device | None = None,
    desktop_connection_id: str | None = None,
    terminal_api: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    return run(
        payments.payment_start,
        desktop=desktop or world.desktop,
        desktop_connection_id=desktop_connection_id or world.desk_conn.connection_id,
        terminal_id=terminal_id,
        terminal_api=terminal_api,
        payment_request={
            "transactionId": tid,
            "amount": amount,
            "currency": currency,
            **fields,
        },
    )


def report(
    run: Runner, world, tid: str = "TXN-1", status: str = "SUCCESS", *, terminal=None, **fields
):
    return run(
        payments.payment_result,
        terminal=terminal or world.terminal,
        payment_response={"transactionId": tid, "status": status, **fields},
    )


def events(tid: str = "TXN-1") -> list[tuple[str, str, str, str]]:
    return list(
        TransactionEvent.objects.filter(transaction__transaction_id=tid)
        .order_by("created_at", "pk")
        .values_list("kind", "source", "old_status", "new_status")
    )


def txn(tid: str = "TXN-1", group=None) -> Transaction:
    qs = Transaction.objects.filter(transaction_id=tid)
    if group is not None:
        qs = qs.filter(group=group)
    return qs.get()


def expire(tid: str = "TXN-1") -> None:
    Transaction.objects.filter(transaction_id=tid).update(
        deadline_at=timezone.now() - dt.timedelta(seconds=1)
    )


def stored_state() -> tuple:
    return (
        list(Transaction.objects.order_by("pk").values()),
        list(TransactionEvent.objects.order_by("pk").values_list("pk", flat=True)),
        list(DesktopMessage.objects.order_by("pk").values()),
        list(Device.objects.order_by("pk").values_list("pk", "last_seq", "acked_seq")),
    )


REQUESTED = ("requested", "desktop", "", "PENDING")
FORWARDED = ("forwarded", "gateway", "PENDING", "IN_PROGRESS")


# --- starting a payment ----------------------------------------------------------------------


def test_payment_is_stored_and_forwarded_with_requested_and_forwarded_events(run, world, settings):
    settings.PAYMENT_TIMEOUT_S = 90

    accepted = start(run, world, amount="12.3", metadata={"orderId": "ORD-1"})

    assert accepted["action"] == "paymentAccepted"
    assert accepted["transactionId"] == "TXN-1"
    assert accepted["terminalId"] == "TERM-1"
    assert accepted["deviceId"] == "TERM-1"
    assert accepted["connectionId"] == world.term_conn.connection_id
    assert accepted["status"] == "IN_PROGRESS"
    [(channel, forwarded)] = run.sent
    assert channel == TERM
    assert forwarded["action"] == "paymentRequest"
    assert forwarded["desktopId"] == world.desk_conn.connection_id
    assert forwarded["paymentRequest"]["amount"] == "12.30"
    assert forwarded["paymentRequest"]["metadata"] == {"orderId": "ORD-1"}
    stored = txn()
    assert stored.status == "IN_PROGRESS"
    assert stored.amount == Decimal("12.30")
    assert stored.desktop_id == world.desktop.pk
    assert stored.terminal_id == world.terminal.pk
    assert stored.deadline_at - stored.forwarded_at == dt.timedelta(seconds=90)
    assert events() == [REQUESTED, FORWARDED]


@pytest.mark.parametrize("status", ["SUCCESS", "DECLINED", "FAILED", "CANCELLED"])
def test_terminal_result_finishes_the_payment_with_one_result_event(run, world, status):
    start(run, world)

    returned = report(run, world, status=status, authorizationCode="AUTH-1", errorMessage="why not")

    assert returned is None  # the terminal gets no reply
    stored = txn()
    assert stored.status == status
    assert stored.late is False
    assert stored.authorization_code == "AUTH-1"
    assert stored.error_message == "why not"
    assert stored.completed_at is not None
    assert events() == [REQUESTED, FORWARDED, ("result", "terminal", "IN_PROGRESS", status)]
    [(channel, complete)] = run.sent
    assert channel == DESK
    assert complete["action"] == "paymentComplete"
    assert complete["seq"] == 1
    assert complete["late"] is False
    assert complete["paymentResponse"]["status"] == status
    assert complete["paymentResponse"]["transactionId"] == "TXN-1"


def test_result_masks_card_numbers_before_storing_and_pushing(run, world):
    start(run, world)

    report(run, world, cardNumber="4111111111111111", receipt="card 4111 1111 1111 1111 ok")

    [(_, complete)] = run.sent
    stored = txn()
    assert "4111111111111111" not in str(complete)
    assert "4111 1111 1111 1111" not in str(complete)
    assert "4111111111111111" not in str(stored.payment_response)
    assert complete["paymentResponse"]["cardNumber"].endswith("1111")


def test_same_transaction_id_in_another_store_is_a_different_payment(run, world):
    other = make_group("store-b")
    other_desktop, _ = make_device(other, DeviceType.DESKTOP, "POS-1")
    other_terminal, _ = make_device(other, DeviceType.TERMINAL, "TERM-1")
    other_desk = open_connection(run, other_desktop, "test!desk-b")
    open_connection(run, other_terminal, "test!term-b")
    start(run, world)

    accepted = start(
        run,
        world,
        desktop=other_desktop,
        desktop_connection_id=other_desk.connection_id,
        amount="99.00",
    )

    assert "duplicate" not in accepted
    assert run.sent[0][0] == "test!term-b"
    assert Transaction.objects.filter(transaction_id="TXN-1").count() == 2


# --- idempotency -----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", ["12.30", "12.3"])
def test_duplicate_payment_in_flight_is_accepted_again_and_not_forwarded(run, world, amount):
    start(run, world)

    again = start(run, world, amount=amount)

    assert again["action"] == "paymentAccepted"
    assert again["duplicate"] is True
    assert again["status"] == "IN_PROGRESS"
    assert again["connectionId"] == world.term_conn.connection_id
    assert run.sent == []
    assert Transaction.objects.count() == 1
    assert events()[:2] == [REQUESTED, FORWARDED]
    assert [e[0] for e in events()[2:]] == ["duplicate"]


def test_duplicate_naming_the_terminal_by_connection_id_is_the_same_payment(run, world):
    start(run, world)

    again = start(run, world, terminal_id=world.term_conn.connection_id)

    assert again["duplicate"] is True
    assert run.sent == []


def test_repeat_after_completion_returns_the_stored_result_with_the_same_seq(run, world):
    start(run, world)
    report(run, world, authorizationCode="AUTH-1")
    [(_, pushed)] = run.sent

    again = start(run, world)

    assert again == pushed
    assert again["seq"] == 1
    assert run.sent == []
    assert DesktopMessage.objects.count() == 1
    assert Device.objects.get(pk=world.desktop.pk).last_seq == 1


@pytest.mark.parametrize(
    "change",
    [{"amount": "12.31"}, {"currency": "EUR"}, {"terminal_id": "TERM-2"}],
    ids=["amount", "currency", "terminal"],
)
@pytest.mark.parametrize("completed", [False, True], ids=["in-flight", "completed"])
def test_same_transaction_id_with_different_details_is_conflict_and_changes_nothing(
    run, world, change, completed
):
    terminal_2, _ = make_device(world.group, DeviceType.TERMINAL, "TERM-2")
    open_connection(run, terminal_2, "test!term-2")
    start(run, world)
    if completed:
        report(run, world)
    before = stored_state()

    with pytest.raises(Conflict) as error:
        start(run, world, **change)

    assert error.value.message == TRANSACTION_ID_REUSED
    assert error.value.to_frame() == {
        "error": "Conflict",
        "message": "transactionId already used with different details",
        "transactionId": "TXN-1",
    }
    assert run.sent == []
    assert stored_state() == before


def test_busy_terminal_is_conflict_naming_the_transaction_in_flight(run, world):
    start(run, world, "TXN-1")
    before = stored_state()

    with pytest.raises(Conflict) as error:
        start(run, world, "TXN-2")

    assert error.value.to_frame() == {
        "error": "Conflict",
        "message": TERMINAL_BUSY,
        "transactionId": "TXN-2",
        "inFlightTransactionId": "TXN-1",
    }
    assert run.sent == []
    assert stored_state() == before


def test_terminal_takes_the_next_payment_once_the_first_is_final(run, world):
    start(run, world, "TXN-1")
    report(run, world, "TXN-1")

    accepted = start(run, world, "TXN-2")

    assert accepted["status"] == "IN_PROGRESS"
    assert [ch for ch, _ in run.sent] == [TERM]


# --- the timeout -----------------------------------------------------------------------------


def test_timeout_sweep_times_out_a_payment_past_its_deadline_exactly_once(run, world):
    start(run, world)
    expire()

    swept = run(payments.sweep_payment_timeouts)
    first_sent = run.sent
    swept_again = run(payments.sweep_payment_timeouts)

    assert swept == 1
    assert swept_again == 0
    assert run.sent == []
    stored = txn()
    assert stored.status == "TIMEOUT"
    assert stored.late is False
    assert events() == [REQUESTED, FORWARDED, ("timeout", "gateway", "IN_PROGRESS", "TIMEOUT")]
    cancels = [frame for ch, frame in first_sent if ch == TERM]
    completes = [frame for ch, frame in first_sent if ch == DESK]
    assert [(c["action"], c["transactionId"]) for c in cancels] == [("cancelPayment", "TXN-1")]
    [complete] = completes
    assert complete["action"] == "paymentComplete"
    assert complete["seq"] == 1
    assert complete["paymentResponse"]["transactionId"] == "TXN-1"
    assert complete["paymentResponse"]["status"] == "TIMEOUT"


def test_timeout_sweep_leaves_payments_within_their_deadline(run, world):
    start(run, world)

    assert run(payments.sweep_payment_timeouts) == 0
    assert run.sent == []
    assert txn().status == "IN_PROGRESS"


def test_timeout_while_the_desktop_is_away_is_kept_for_redelivery(run, world):
    start(run, world)
    run(terminals.connection_close, connection_pk=world.desk_conn.pk, code=1000)
    expire()

    run(payments.sweep_payment_timeouts)

    assert run.frames_to(DESK) == []
    [kept] = render(payments.unacked_results(desktop_pk=world.desktop.pk))
    assert kept["paymentResponse"]["status"] == "TIMEOUT"


def test_timeout_with_the_terminal_disconnected_sends_no_cancel(run, world):
    start(run, world)
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)
    expire()

    run(payments.sweep_payment_timeouts)

    assert run.frames_to(TERM) == []
    assert [f["action"] for f in run.frames_to(DESK)] == ["paymentComplete"]


# --- late, repeated and conflicting results --------------------------------------------------


def test_late_result_after_timeout_is_recorded_with_its_real_status_and_a_new_seq(run, world):
    start(run, world)
    expire()
    run(payments.sweep_payment_timeouts)

    report(run, world, status="SUCCESS", authorizationCode="AUTH-LATE")

    stored = txn()
    assert stored.status == "SUCCESS"
    assert stored.late is True
    assert stored.authorization_code == "AUTH-LATE"
    assert events()[-1] == ("late_result", "terminal", "TIMEOUT", "SUCCESS")
    [(channel, complete)] = run.sent
    assert channel == DESK
    assert complete["seq"] == 2
    assert complete["late"] is True
    assert complete["paymentResponse"]["status"] == "SUCCESS"
    assert list(DesktopMessage.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2]


def test_late_success_after_a_cancel_is_recorded_as_late(run, world):
    start(run, world)
    report(run, world, status="CANCELLED")

    report(run, world, status="SUCCESS")

    assert txn().status == "SUCCESS"
    assert txn().late is True
    assert events()[-1] == ("late_result", "terminal", "CANCELLED", "SUCCESS")
    assert [f["seq"] for f in run.frames_to(DESK)] == [2]


def test_conflicting_result_after_success_is_conflict_and_changes_nothing(run, world):
    start(run, world)
    report(run, world, status="SUCCESS", authorizationCode="AUTH-1")
    before = stored_state()

    with pytest.raises(Conflict):
        report(run, world, status="DECLINED")

    assert txn().status == "SUCCESS"
    assert txn().authorization_code == "AUTH-1"
    assert run.sent == []
    # The transaction, the desktop's results and seq are untouched ...
    after = stored_state()
    assert (after[0], after[2], after[3]) == (before[0], before[2], before[3])
    # ... and the audit log keeps what the terminal claimed.
    ignored = txn().events.get(kind="ignored_result")
    assert (ignored.source, ignored.old_status, ignored.new_status) == (
        "terminal",
        "SUCCESS",
        "SUCCESS",
    )
    assert ignored.detail["paymentResponse"]["status"] == "DECLINED"


@pytest.mark.parametrize("timed_out_first", [False, True])
def test_the_same_result_repeated_is_not_pushed_twice(run, world, timed_out_first):
    start(run, world)
    if timed_out_first:
        expire()
        run(payments.sweep_payment_timeouts)
    report(run, world, status="SUCCESS")
    before = stored_state()

    assert report(run, world, status="SUCCESS") is None

    assert run.sent == []
    assert stored_state() == before


def test_seq_increases_by_one_per_result_per_desktop(run, world):
    desktop_2, _ = make_device(world.group, DeviceType.DESKTOP, "POS-2")
    desk_2 = open_connection(run, desktop_2, "test!desk-2")
    terminal_2, _ = make_device(world.group, DeviceType.TERMINAL, "TERM-2")
    open_connection(run, terminal_2, "test!term-2")
    seqs: dict[str, list[int]] = {DESK: [], "test!desk-2": []}

    def pay(tid, desktop, conn, terminal_id, terminal, status="SUCCESS"):
        start(
            run,
            world,
            tid,
            terminal_id=terminal_id,
            desktop=desktop,
            desktop_connection_id=conn.connection_id,
        )
        report(run, world, tid, status, terminal=terminal)
        for channel, frame in run.sent:
            seqs[channel].append(frame["seq"])

    pay("A-1", world.desktop, world.desk_conn, "TERM-1", world.terminal)
    pay("B-1", desktop_2, desk_2, "TERM-2", terminal_2)
    pay("A-2", world.desktop, world.desk_conn, "TERM-2", terminal_2, "DECLINED")
    pay("A-3", world.desktop, world.desk_conn, "TERM-1", world.terminal)
    pay("B-2", desktop_2, desk_2, "TERM-1", world.terminal, "FAILED")
    start(run, world, "A-4")
    expire("A-4")
    run(payments.sweep_payment_timeouts)
    seqs[DESK] += [f["seq"] for f in run.frames_to(DESK)]

    assert seqs == {DESK: [1, 2, 3, 4], "test!desk-2": [1, 2]}
    assert Device.objects.get(pk=world.desktop.pk).last_seq == 4
    assert Device.objects.get(pk=desktop_2.pk).last_seq == 2


def due_now(model=Transaction) -> None:
    """Time passes: every waiting retry is due."""
    model.objects.filter(forward_retry_at__isnull=False).update(
        forward_retry_at=timezone.now() - dt.timedelta(milliseconds=1)
    )


def test_a_refused_forward_keeps_the_payment_in_flight_and_is_retried(run, world):
    start(run, world)
    [(_, _, on_fail)] = run.raw

    run(on_fail)  # what the consumer runs when the channel layer refuses the forward
    sent = run.sent

    assert txn().status == "IN_PROGRESS"
    assert txn().forward_retry_at is not None
    assert events()[-1] == ("forward_refused", "gateway", "IN_PROGRESS", "IN_PROGRESS")
    assert [frame for _, frame in sent if "action" in frame] == []  # the desktop is told nothing
    assert payments.forwards_due() == []  # not due yet (FORWARD_RETRY_S)

    due_now()
    [(claim, event)] = payments.forwards_due()
    frame = render(event)
    assert (event.channel_name, frame["action"], frame["resent"]) == (
        TERM,
        "paymentRequest",
        True,
    )
    assert frame["paymentRequest"]["transactionId"] == "TXN-1"
    due_now()
    [(again, _)] = payments.forwards_due()  # refused again (never confirmed): due again
    assert again[1] == claim[1] + 1
    payments.forwards_confirmed(claims=[again])
    due_now()
    assert payments.forwards_due() == []
    assert txn().forward_retry_at is None
    report(run, world)
    assert txn().status == "SUCCESS"


def test_a_retry_is_claimed_by_one_process(run, world):
    start(run, world)
    run(run.raw[0][2])
    due_now()

    first = payments.forwards_due()
    second = payments.forwards_due()  # another process's sweep, right after

    assert len(first) == 1
    assert second == []


def test_a_refused_forward_past_its_deadline_times_out_and_is_not_retried(run, world):
    start(run, world)
    run(run.raw[0][2])
    due_now()
    expire()

    assert payments.forwards_due() == []
    assert txn().forward_retry_at is None
    run(payments.sweep_payment_timeouts)
    assert txn().status == "TIMEOUT"


def test_a_refused_forward_to_a_terminal_now_away_waits_for_its_connect(run, world):
    start(run, world)
    run(run.raw[0][2])
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)
    due_now()

    assert payments.forwards_due() == []
    assert txn().forward_retry_at is None
    # It is sent when the terminal connects, as any payment in flight.
    [resent] = render(payments.in_flight_requests(terminal_pk=world.terminal.pk))
    assert (resent["action"], resent["resent"]) == ("paymentRequest", True)


# --- acknowledgements and redelivery ---------------------------------------------------------


def three_results(run, world) -> list[dict[str, Any]]:
    pushed = []
    for tid in ("TXN-1", "TXN-2", "TXN-3"):
        start(run, world, tid)
        report(run, world, tid)
        pushed += run.frames_to(DESK)
    return pushed


def test_ack_marks_every_result_up_to_seq_and_records_delivery(run, world):
    three_results(run, world)

    payments.results_ack(desktop=world.desktop, seq=2)

    acked = dict(DesktopMessage.objects.values_list("seq", "acked_at"))
    assert acked[1] is not None
    assert acked[2] is not None
    assert acked[3] is None
    assert events("TXN-1")[-1] == ("delivered", "desktop", "", "")
    assert events("TXN-2")[-1] == ("delivered", "desktop", "", "")
    assert "delivered" not in [e[0] for e in events("TXN-3")]
    assert TransactionEvent.objects.get(
        transaction__transaction_id="TXN-2", kind="delivered"
    ).detail == {"seq": 2}

    payments.results_ack(desktop=world.desktop, seq=2)  # again: nothing new
    assert TransactionEvent.objects.filter(kind="delivered").count() == 2


def test_ack_beyond_the_last_seq_is_bad_request(run, world):
    three_results(run, world)
    before = stored_state()

    with pytest.raises(BadRequest) as error:
        payments.results_ack(desktop=world.desktop, seq=4)

    assert error.value.message == "seq 4 has not been sent yet (last is 3)"
    assert stored_state() == before


@pytest.mark.parametrize(
    "seq", ["1", 1.0, 1.5, True, None, -1, [1], {"seq": 1}, 2**63, 10**20, -(2**63) - 1]
)
def test_ack_with_a_seq_that_is_not_a_non_negative_integer_is_bad_request(run, world, seq):
    three_results(run, world)
    before = stored_state()

    with pytest.raises(BadRequest) as error:
        payments.results_ack(desktop=world.desktop, seq=seq)

    assert error.value.message == "seq must be a non-negative integer"
    assert stored_state() == before


def test_unacked_results_are_returned_in_seq_order_until_acknowledged(run, world):
    pushed = three_results(run, world)

    assert render(payments.unacked_results(desktop_pk=world.desktop.pk)) == pushed
    assert [f["seq"] for f in pushed] == [1, 2, 3]

    payments.results_ack(desktop=world.desktop, seq=1)
    assert render(payments.unacked_results(desktop_pk=world.desktop.pk)) == pushed[1:]

    payments.results_ack(desktop=world.desktop, seq=3)
    assert render(payments.unacked_results(desktop_pk=world.desktop.pk)) == []


def test_unacked_results_older_than_the_redelivery_window_are_not_resent(run, world, settings):
    settings.REDELIVERY_WINDOW_S = 3600
    pushed = three_results(run, world)
    DesktopMessage.objects.filter(seq=1).update(
        created_at=timezone.now() - dt.timedelta(seconds=3601)
    )

    assert render(payments.unacked_results(desktop_pk=world.desktop.pk)) == pushed[1:]


def test_in_flight_requests_are_resent_to_the_reconnected_terminal(run, world):
    terminal_2, _ = make_device(world.group, DeviceType.TERMINAL, "TERM-2")
    open_connection(run, terminal_2, "test!term-2")
    start(run, world, "TXN-DONE")
    report(run, world, "TXN-DONE")
    start(run, world, "TXN-1")
    [forwarded] = run.frames_to(TERM)
    start(run, world, "TXN-OTHER", terminal_id="TERM-2")

    resent = render(payments.in_flight_requests(terminal_pk=world.terminal.pk))

    [frame] = resent
    assert frame["action"] == "paymentRequest"
    assert frame["resent"] is True
    assert frame["paymentRequest"] == forwarded["paymentRequest"]
    assert frame["desktopId"] == forwarded["desktopId"]
    assert events("TXN-1")[-1] == ("resent", "gateway", "IN_PROGRESS", "IN_PROGRESS")
    assert txn("TXN-1").status == "IN_PROGRESS"


def test_a_resent_request_names_the_desktops_connection_of_now(run, world):
    start(run, world)
    [first] = run.frames_to(TERM)
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)
    run(terminals.connection_close, connection_pk=world.desk_conn.pk, code=1006)
    desk_again = open_connection(run, world.desktop, "test!desk-2")

    [frame] = render(payments.in_flight_requests(terminal_pk=world.terminal.pk))

    assert first["desktopId"] == world.desk_conn.connection_id
    assert frame["desktopId"] == desk_again.connection_id != world.desk_conn.connection_id


def test_a_resent_request_keeps_the_stored_desktop_id_while_the_desktop_is_away(run, world):
    start(run, world)
    run(terminals.connection_close, connection_pk=world.desk_conn.pk, code=1000)

    [frame] = render(payments.in_flight_requests(terminal_pk=world.terminal.pk))

    assert frame["desktopId"] == world.desk_conn.connection_id


def test_a_cancel_made_while_the_terminal_was_away_follows_the_resent_request(run, world):
    start(run, world, "TXN-1")
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)
    reply = run(payments.payment_cancel, group_id=world.group.pk, transaction_id="TXN-1")
    assert reply["forwarded"] is False

    _, backlog = run(
        gateway.device_connected, device=world.terminal, channel_name="test!term-2", remote_addr=""
    )

    assert [(f["action"], f.get("resent")) for f in backlog] == [
        ("paymentRequest", True),
        ("cancelPayment", None),
    ]
    assert backlog[1]["transactionId"] == "TXN-1"
    assert txn().status == "IN_PROGRESS"  # the terminal's answer decides
    report(run, world, status="CANCELLED", terminal=world.terminal)
    assert txn().status == "CANCELLED"
    assert txn().late is False


def test_a_reconnect_without_a_cancel_resends_only_the_request(run, world):
    start(run, world, "TXN-1")
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)

    _, backlog = run(
        gateway.device_connected, device=world.terminal, channel_name="test!term-2", remote_addr=""
    )

    assert [f["action"] for f in backlog] == ["paymentRequest"]


def test_a_payment_stays_in_progress_while_its_terminal_goes_offline_and_back(run, world, settings):
    settings.RECONNECT_GRACE_S = 60
    start(run, world)
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)
    assert Device.objects.get(pk=world.terminal.pk).status == "reconnecting"
    Device.objects.filter(pk=world.terminal.pk).update(
        status_changed_at=timezone.now() - dt.timedelta(seconds=61)
    )

    assert run(terminals.sweep_connections) == 1
    [update] = run.frames_to(DESK)
    assert run(payments.sweep_payment_timeouts) == 0

    assert update["terminal"]["status"] == "offline"
    assert Device.objects.get(pk=world.terminal.pk).status == "offline"
    assert txn().status == "IN_PROGRESS"

    _, backlog = run(
        gateway.device_connected, device=world.terminal, channel_name="test!term-2", remote_addr=""
    )
    assert [(f["action"], f["resent"]) for f in backlog] == [("paymentRequest", True)]
    report(run, world, authorizationCode="AUTH-9")

    assert txn().status == "SUCCESS"
    assert txn().late is False
    assert txn().authorization_code == "AUTH-9"
    [pushed] = run.frames_to(DESK)
    assert pushed["action"] == "paymentComplete"
    assert pushed["paymentResponse"]["status"] == "SUCCESS"
    assert [e[0] for e in events()] == ["requested", "forwarded", "resent", "result"]


# --- cancel and status -----------------------------------------------------------------------


def test_cancel_of_a_payment_in_flight_is_forwarded_and_the_terminal_decides(run, world):
    start(run, world)

    reply = run(payments.payment_cancel, group_id=world.group.pk, transaction_id="TXN-1")

    assert reply["action"] == "cancelRequested"
    assert reply["transactionId"] == "TXN-1"
    assert reply["forwarded"] is True
    assert [(ch, f["action"], f["transactionId"]) for ch, f in run.sent] == [
        (TERM, "cancelPayment", "TXN-1")
    ]
    assert txn().status == "IN_PROGRESS"
    assert events()[-1] == ("cancel_requested", "desktop", "IN_PROGRESS", "IN_PROGRESS")

    report(run, world, status="CANCELLED")

    assert txn().status == "CANCELLED"
    assert txn().late is False
    assert [f["paymentResponse"]["status"] for f in run.frames_to(DESK)] == ["CANCELLED"]


def test_cancel_with_the_terminal_disconnected_is_recorded_but_not_forwarded(run, world):
    start(run, world)
    run(terminals.connection_close, connection_pk=world.term_conn.pk, code=1006)

    reply = run(payments.payment_cancel, group_id=world.group.pk, transaction_id="TXN-1")

    assert reply["forwarded"] is False
    assert run.sent == []
    assert events()[-1][0] == "cancel_requested"


def test_cancel_of_a_final_payment_returns_the_stored_result(run, world):
    start(run, world)
    report(run, world, status="DECLINED")
    [(_, pushed)] = run.sent
    before = stored_state()

    reply = run(payments.payment_cancel, group_id=world.group.pk, transaction_id="TXN-1")

    assert reply == pushed
    assert run.sent == []
    assert stored_state() == before


def test_status_reports_state_result_and_timestamps(run, world):
    start(run, world)
    in_flight = render(payments.payment_status(group_id=world.group.pk, transaction_id="TXN-1"))
    report(run, world, authorizationCode="AUTH-1")

    final = render(payments.payment_status(group_id=world.group.pk, transaction_id="TXN-1"))

    assert in_flight["action"] == "transactionStatus"
    assert in_flight["status"] == "IN_PROGRESS"
    assert in_flight["paymentResponse"] is None
    assert final["status"] == "SUCCESS"
    assert final["paymentResponse"]["authorizationCode"] == "AUTH-1"
    assert final["late"] is False
    assert final["createdAt"].endswith("Z")
    assert final["updatedAt"].endswith("Z")


@pytest.mark.parametrize("tid", ["TXN-1", "NEVER-USED"], ids=["other-stores-id", "unknown-id"])
def test_status_and_cancel_of_another_stores_transaction_are_not_found(run, world, tid):
    start(run, world, "TXN-1")
    other = make_group("store-b")
    before = stored_state()

    with pytest.raises(NotFound) as status_error:
        payments.payment_status(group_id=other.pk, transaction_id=tid)
    with pytest.raises(NotFound) as cancel_error:
        run(payments.payment_cancel, group_id=other.pk, transaction_id=tid)

    for error in (status_error, cancel_error):
        assert error.value.to_frame() == {
            "error": "Not Found",
            "message": TRANSACTION_NOT_FOUND,
            "transactionId": tid,
        }
    assert run.sent == []
    assert stored_state() == before


def test_result_from_a_terminal_that_was_not_asked_is_not_found(run, world):
    terminal_2, _ = make_device(world.group, DeviceType.TERMINAL, "TERM-2")
    other = make_group("store-b")
    foreign_terminal, _ = make_device(other, DeviceType.TERMINAL, "TERM-1")
    start(run, world)
    before = stored_state()

    for terminal in (terminal_2, foreign_terminal):
        with pytest.raises(NotFound) as error:
            report(run, world, terminal=terminal)
        assert error.value.message == TRANSACTION_NOT_FOUND
        assert run.sent == []

    assert stored_state() == before
    assert txn().status == "IN_PROGRESS"


# --- amounts through every reader ------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("1.2345", "CLF", "1.2345"),
        ("0.0001", "UYW", "0.0001"),
        ("12.3", "USD", "12.30"),
        ("1500", "JPY", "1500"),
        ("999999999999.999", "KWD", "999999999999.999"),
    ],
)
def test_an_amount_is_stored_and_read_back_with_the_currencys_own_decimals(
    run, world, amount, currency, shown
):
    start(run, world, amount=amount, currency=currency)
    [forwarded] = run.frames_to(TERM)
    report(run, world)
    _, token = terminals.staff_create_or_update(
        username="alice", group_slugs=[world.group.slug], password="correct horse battery"
    )
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    stored = txn()
    detail = api.get("/api/transactions/TXN-1/").json()
    listed = api.get("/api/transactions/").json()["results"]
    exported = api.get("/api/transactions/export/")
    [row] = csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode()))
    [day] = api.get("/api/reports/daily/").json()["results"]

    assert forwarded["paymentRequest"]["amount"] == shown
    assert stored.amount == Decimal(amount)
    assert detail["amount"] == shown
    assert [p["amount"] for p in listed] == [shown]
    assert row["amount"] == shown
    assert day["succeededAmount"] == shown
    assert dashboard_amount(stored) == shown
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("root", "r@example.com", None))
    changelist = admin.get("/admin/payments/transaction/").content.decode()
    change = admin.get(f"/admin/payments/transaction/{stored.pk}/change/").content.decode()
    assert f">{shown}<" in changelist
    assert f">{shown}<" in change


def test_sixteen_digit_amounts_are_kept_whole_or_refused_never_rounded(run, world):
    amount = "999999999999.9999"  # 12 digits before the point, CLF's 4 after
    if connection.vendor != "sqlite":
        start(run, world, amount=amount, currency="CLF")
        assert txn().amount == Decimal(amount)
        return
    before = stored_state()

    with pytest.raises(BadRequest) as error:  # SQLite keeps only 15 significant digits
        start(run, world, amount=amount, currency="CLF")

    assert "paymentRequest.amount" in error.value.message
    assert stored_state() == before
    assert run.sent == []


# --- who hears a transaction end -------------------------------------------------------------


def transaction_groups(run: Runner) -> list[str]:
    """The channel-layer groups of single transactions messages went to (their waiters')."""
    return [group for group, _ in run.groups if group.startswith("transaction.")]


def test_a_websocket_payment_tells_no_transaction_group_it_ended(run, world):
    """The plain WebSocket payment (nearly all traffic) has no waiters: its result and its
    timeout cost no channel-layer message beyond the desktop's and the dashboards'."""
    start(run, world, "WS-1")
    report(run, world, "WS-1")
    start(run, world, "WS-2")
    expire("WS-2")
    run(payments.sweep_payment_timeouts)

    assert txn("WS-1").status == "SUCCESS"
    assert txn("WS-2").status == "TIMEOUT"
    assert transaction_groups(run) == []


def test_a_terminal_api_transaction_tells_its_waiters_it_ended(run, world):
    """Started by a Terminal API message: its result, its refund's result and its timeout each
    reach the transaction's group (where a sync request waits), on whichever process."""
    start(run, world, "NX-1", terminal_api=True)
    report(run, world, "NX-1")
    run(
        payments.refund_start,
        group_id=world.group.pk,
        desktop=world.desktop,
        terminal_id="TERM-1",
        refund_request={"transactionId": "NX-R", "originalTransactionId": "NX-1"},
        terminal_api=True,
    )
    run(
        payments.payment_result,
        terminal=world.terminal,
        payment_response={"transactionId": "NX-R", "status": "SUCCESS"},
        kind="REFUND",
    )
    start(run, world, "NX-2", terminal_api=True)
    expire("NX-2")
    run(payments.sweep_payment_timeouts)

    assert [txn(t).status for t in ("NX-1", "NX-R", "NX-2")] == ["SUCCESS", "SUCCESS", "TIMEOUT"]
    assert transaction_groups(run) == [
        frames.transaction_group(world.group.pk, tid) for tid in ("NX-1", "NX-R", "NX-2")
    ]


def test_a_terminal_api_message_naming_a_websocket_payment_in_flight_hears_its_end(run, world):
    start(run, world, "WS-3")
    start(run, world, "WS-3", terminal_api=True)  # the same payment, named by a nexo message
    report(run, world, "WS-3")

    assert txn("WS-3").terminal_api
    assert transaction_groups(run) == [frames.transaction_group(world.group.pk, "WS-3")]
