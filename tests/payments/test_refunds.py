"""Refunds through the payment lifecycle, called directly: the rules of contract section 9, what
is stored, logged and sent after commit."""

from __future__ import annotations

import logging
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from payments import services as payments
from payments.models import DesktopMessage, Transaction, TransactionEvent
from posgateway.core.protocol import (
    ONLY_SUCCESSFUL_PAYMENT_REFUNDABLE,
    REFUND_CURRENCY_MISMATCH,
    REFUND_EXCEEDS_REFUNDABLE,
    TERMINAL_BUSY,
    TRANSACTION_ID_REUSED,
    TRANSACTION_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
)
from terminals.models import DeviceType
from tests.factories import Runner, Store, make_device, make_payment, open_connection

pytestmark = pytest.mark.django_db

DESK = "test!desk"
TERM = "test!term"
TERM2 = "test!term2"


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


@pytest.fixture
def world(run):
    """Store A: desktop POS-1, terminals TERM-1 and TERM-2 connected, and a SUCCESS payment
    SALE-1 of 10.00 EUR made on TERM-1."""
    store = Store("store-a")
    second, _ = make_device(store.group, DeviceType.TERMINAL, "TERM-2")
    sale = make_payment(store, "SALE-1", amount="10.00", authorization_code="AUTH-9")
    return SimpleNamespace(
        store=store,
        group=store.group,
        desktop=store.desktop,
        terminal=store.terminal,
        second=second,
        sale=sale,
        desk_conn=open_connection(run, store.desktop, DESK),
        term_conn=open_connection(run, store.terminal, TERM),
        term2_conn=open_connection(run, second, TERM2),
    )


def refund(
    run: Runner, world, tid: str = "RF-1", *, terminal_id: str = "TERM-2", **fields: Any
) -> dict[str, Any]:
    body = {"transactionId": tid, "originalTransactionId": "SALE-1", **fields}
    return run(
        payments.refund_start,
        group_id=world.group.pk,
        desktop=world.desktop,
        desktop_connection_id=world.desk_conn.connection_id,
        terminal_id=terminal_id,
        refund_request={k: v for k, v in body.items() if v is not None},
    )


def answer(run: Runner, world, tid: str = "RF-1", status: str = "SUCCESS", *, terminal=None):
    return run(
        payments.payment_result,
        terminal=terminal or world.second,
        payment_response={"transactionId": tid, "status": status, "authorizationCode": "R-1"},
        kind="REFUND",
    )


def stored_state() -> tuple:
    return (
        list(Transaction.objects.order_by("pk").values()),
        TransactionEvent.objects.count(),
        DesktopMessage.objects.count(),
    )


def sale() -> Transaction:
    return Transaction.objects.get(transaction_id="SALE-1")


# --- the happy path --------------------------------------------------------------------------


def test_refund_is_stored_forwarded_with_the_original_and_completed_on_the_seq_stream(run, world):
    accepted = refund(run, world, amount="4", reason="damaged item")

    assert accepted["action"] == "refundAccepted"
    assert accepted["originalTransactionId"] == "SALE-1"
    assert accepted["amount"] == "4.00"
    assert accepted["currency"] == "EUR"
    assert accepted["deviceId"] == "TERM-2"
    assert accepted["status"] == "IN_PROGRESS"
    [(channel, forwarded)] = run.sent
    assert channel == TERM2
    assert forwarded["action"] == "refundRequest"
    assert forwarded["desktopId"] == world.desk_conn.connection_id
    body = forwarded["refundRequest"]
    assert body["transactionId"] == "RF-1"
    assert body["amount"] == "4.00"
    assert body["reason"] == "damaged item"
    assert body["original"]["transactionId"] == "SALE-1"
    assert body["original"]["amount"] == "10.00"
    assert body["original"]["authorizationCode"] == "AUTH-9"
    stored = Transaction.objects.get(transaction_id="RF-1")
    assert (stored.type, stored.original_id, stored.status) == (
        "REFUND",
        world.sale.pk,
        "IN_PROGRESS",
    )

    answer(run, world)

    [(channel, complete)] = run.sent
    assert channel == DESK
    assert complete["action"] == "refundComplete"
    assert complete["seq"] == 1
    assert complete["refundResponse"]["status"] == "SUCCESS"
    assert complete["refundResponse"]["originalTransactionId"] == "SALE-1"
    assert complete["refundResponse"]["amount"] == "4.00"
    assert sale().refunded_amount == Decimal("4.00")
    kinds = list(sale().events.values_list("kind", flat=True))
    assert "refunded" in kinds


def test_status_query_answers_for_both_kinds(run, world):
    refund(run, world, amount="2.50")
    answer(run, world)

    of_sale = run(
        lambda outbox: payments.payment_status(group_id=world.group.pk, transaction_id="SALE-1")
    )
    of_refund = run(
        lambda outbox: payments.payment_status(group_id=world.group.pk, transaction_id="RF-1")
    )

    assert (of_sale["type"], of_sale["originalTransactionId"]) == ("PAYMENT", None)
    assert of_sale["refundedAmount"] == "2.50"
    assert (of_refund["type"], of_refund["originalTransactionId"]) == ("REFUND", "SALE-1")
    assert of_refund["refundedAmount"] is None
    assert of_refund["refundResponse"]["status"] == "SUCCESS"


def test_no_amount_refunds_the_whole_remainder_and_then_nothing_is_left(run, world):
    refund(run, world, "RF-1", amount="3.00")
    answer(run, world, "RF-1")

    whole = refund(run, world, "RF-2")
    answer(run, world, "RF-2")

    assert whole["amount"] == "7.00"
    with pytest.raises(BadRequest) as refused:
        refund(run, world, "RF-3")
    assert refused.value.message == REFUND_EXCEEDS_REFUNDABLE
    assert refused.value.extra["refundableAmount"] == "0.00"
    assert sale().refunded_amount == Decimal("10.00")


def test_refunds_in_flight_are_reserved_from_the_remainder(run, world):
    refund(run, world, "RF-1", amount="6.00")  # in flight on TERM-2

    with pytest.raises(BadRequest) as refused:
        refund(run, world, "RF-2", terminal_id="TERM-1", amount="4.01")

    assert refused.value.extra["refundableAmount"] == "4.00"
    assert refund(run, world, "RF-2", terminal_id="TERM-1", amount="4.00")["amount"] == "4.00"


def test_a_declined_refund_gives_its_amount_back_to_the_remainder(run, world):
    refund(run, world, "RF-1", amount="10.00")
    answer(run, world, "RF-1", "DECLINED")

    again = refund(run, world, "RF-2", amount="10.00")

    assert again["status"] == "IN_PROGRESS"
    assert sale().refunded_amount == Decimal("0")


# --- idempotency, busy ------------------------------------------------------------------------


def test_a_repeated_refund_is_a_duplicate_in_flight_and_the_stored_result_after(run, world):
    refund(run, world, amount="4.00")
    duplicate = refund(run, world, amount="4.00")
    assert duplicate["action"] == "refundAccepted"
    assert duplicate["duplicate"] is True
    assert run.sent == []  # not forwarded again

    answer(run, world)
    again = refund(run, world, amount="4.00")

    assert again["action"] == "refundComplete"
    assert again["seq"] == 1
    assert Transaction.objects.filter(type="REFUND").count() == 1


@pytest.mark.parametrize(
    "changed",
    [{"amount": "4.01"}, {"terminal_id": "TERM-1"}, {"currency": "USD"}],
)
def test_a_refund_id_reused_with_other_details_is_a_conflict(run, world, changed):
    refund(run, world, amount="4.00")
    before = stored_state()

    with pytest.raises(Conflict) as refused:
        refund(run, world, **{"amount": "4.00", **changed})

    assert refused.value.message == TRANSACTION_ID_REUSED
    assert stored_state() == before


def test_a_refund_id_that_is_a_payment_id_is_a_reused_id(run, world):
    with pytest.raises(Conflict) as refused:
        refund(run, world, "SALE-1", amount="1.00")
    assert refused.value.message == TRANSACTION_ID_REUSED


def test_a_terminal_with_a_refund_in_flight_is_busy_for_payments_and_refunds(run, world):
    refund(run, world, "RF-1", amount="1.00")

    with pytest.raises(Conflict) as busy:
        refund(run, world, "RF-2", amount="1.00")

    assert busy.value.message == TERMINAL_BUSY
    assert busy.value.extra["inFlightTransactionId"] == "RF-1"
    with pytest.raises(Conflict):
        run(
            payments.payment_start,
            desktop=world.desktop,
            desktop_connection_id=world.desk_conn.connection_id,
            terminal_id="TERM-2",
            payment_request={"transactionId": "SALE-2", "amount": "1.00", "currency": "EUR"},
        )


# --- bad input and refused originals: each refused, nothing stored ---------------------------


@pytest.mark.parametrize("status", ["DECLINED", "FAILED", "CANCELLED", "TIMEOUT", "IN_PROGRESS"])
def test_only_a_successful_payment_can_be_refunded(run, world, status):
    make_payment(world.store, "OTHER", status=status, terminal=world.terminal)
    before = stored_state()

    with pytest.raises(Conflict) as refused:
        refund(run, world, originalTransactionId="OTHER", amount="1.00")

    assert refused.value.message == ONLY_SUCCESSFUL_PAYMENT_REFUNDABLE
    assert stored_state() == before


def test_a_late_success_can_be_refunded(run, world):
    make_payment(world.store, "LATE", status="SUCCESS", late=True)
    assert (
        refund(run, world, originalTransactionId="LATE", amount="1.00")["status"] == "IN_PROGRESS"
    )


def test_a_refund_of_a_refund_another_stores_payment_or_an_unknown_id_is_not_found(run, world):
    refund(run, world, "RF-1", amount="1.00")
    answer(run, world, "RF-1")
    other = Store("store-b")
    make_payment(other, "THEIRS", terminal=other.terminal)
    before = stored_state()

    for original in ("RF-1", "THEIRS", "NOPE"):
        with pytest.raises(NotFound) as refused:
            refund(run, world, "RF-2", originalTransactionId=original, amount="1.00")
        assert refused.value.message == TRANSACTION_NOT_FOUND
        assert refused.value.extra == {"transactionId": "RF-2"}

    assert stored_state() == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": "10.01"}, REFUND_EXCEEDS_REFUNDABLE),
        ({"amount": "0.00"}, "refundRequest.amount must be greater than zero"),
        ({"amount": "-1.00"}, 'refundRequest.amount must be a decimal string such as "12.50"'),
        ({"amount": 5}, 'refundRequest.amount must be a decimal string such as "12.50"'),
        ({"amount": "1.001"}, "refundRequest.amount has more decimals than EUR allows (2)"),
        ({"currency": "USD"}, REFUND_CURRENCY_MISMATCH),
        ({"reason": "x" * 201}, "refundRequest.reason must be a string of at most 200 characters"),
        (
            {"reason": "card 4111 1111 1111 1111"},
            "refundRequest.reason must not contain a card number",
        ),
        ({"originalTransactionId": ""}, "refundRequest.originalTransactionId is required"),
        ({"transactionId": None}, "refundRequest.transactionId is required"),
        ({"tip": "1"}, "refundRequest.tip is not a known field"),
    ],
)
def test_bad_refund_requests_are_refused_and_store_nothing(run, world, fields, message):
    before = stored_state()

    with pytest.raises(BadRequest) as refused:
        refund(run, world, **fields)

    assert refused.value.message == message
    assert stored_state() == before


def test_over_the_remainder_by_one_minor_unit_names_the_remainder(run, world):
    refund(run, world, "RF-1", amount="2.50")
    answer(run, world, "RF-1")

    with pytest.raises(BadRequest) as refused:
        refund(run, world, "RF-2", amount="7.51")

    assert refused.value.extra["refundableAmount"] == "7.50"


def test_refund_results_name_refunds_only(run, world):
    refund(run, world, amount="1.00")

    with pytest.raises(NotFound):
        # a paymentResponse naming the refund
        run(
            payments.payment_result,
            terminal=world.second,
            payment_response={"transactionId": "RF-1", "status": "SUCCESS"},
        )
    make_payment(world.store, "LIVE", status="IN_PROGRESS", terminal=world.terminal)
    with pytest.raises(NotFound):
        answer(run, world, "LIVE", terminal=world.terminal)
    assert Transaction.objects.get(transaction_id="RF-1").status == "IN_PROGRESS"


# --- timeouts, late results, cancel, redelivery ----------------------------------------------


def test_late_success_of_a_timed_out_refund_counts_and_flags_an_over_refund(run, world, caplog):
    refund(run, world, "RF-A", amount="6.00")
    Transaction.objects.filter(transaction_id="RF-A").update(deadline_at="2000-01-01T00:00:00Z")
    assert run(payments.sweep_payment_timeouts) == 1
    [(_, timed_out), *_] = [(c, f) for c, f in run.sent if f.get("action") == "refundComplete"]
    assert timed_out["refundResponse"]["status"] == "TIMEOUT"
    refund(run, world, "RF-B", amount="6.00")
    answer(run, world, "RF-B")

    with caplog.at_level(logging.WARNING, logger="payments"):
        answer(run, world, "RF-A")

    [(_, late)] = [(c, f) for c, f in run.sent if f.get("action") == "refundComplete"]
    assert late["late"] is True
    assert late["refundResponse"]["status"] == "SUCCESS"
    payment = sale()
    assert payment.refunded_amount == Decimal("12.00")
    assert payment.over_refunded is True
    assert payment.events.filter(kind="over_refunded").count() == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "SALE-1" in warning
    assert "RF-A" in warning
    assert "12.00" in warning


def test_cancel_of_a_refund_is_forwarded_and_the_terminal_decides(run, world):
    refund(run, world, amount="1.00")

    cancel = run(payments.payment_cancel, group_id=world.group.pk, transaction_id="RF-1")
    assert cancel["forwarded"] is True
    assert run.sent == [(TERM2, {**run.sent[0][1], "action": "cancelPayment"})]
    answer(run, world, status="CANCELLED")

    [(_, complete)] = run.sent
    assert complete["action"] == "refundComplete"
    assert complete["refundResponse"]["status"] == "CANCELLED"
    assert sale().refunded_amount == 0


def test_a_reconnected_terminal_gets_the_refund_again_and_the_desktop_its_result(run, world):
    refund(run, world, amount="1.00")

    resent = run(payments.in_flight_requests, terminal_pk=world.second.pk)
    assert resent[0]["action"] == "refundRequest"
    assert resent[0]["resent"] is True
    assert resent[0]["refundRequest"]["original"]["transactionId"] == "SALE-1"
    answer(run, world)
    backlog = run(lambda outbox: payments.unacked_results(desktop_pk=world.desktop.pk))

    assert [frame["action"] for frame in backlog] == ["refundComplete"]


def test_a_refund_started_by_staff_has_no_desktop_and_keeps_its_result_for_status(run, world):
    from terminals.services import staff_create_or_update

    user, _ = staff_create_or_update(username="mia", group_slugs=["store-a"])
    accepted = run(
        payments.refund_start,
        group_id=world.group.pk,
        terminal_id="TERM-2",
        device_id_only=True,
        refund_request={"transactionId": "RF-S", "originalTransactionId": "SALE-1"},
        user=user,
        source="api",
    )
    assert accepted["action"] == "refundAccepted"
    [(_, forwarded)] = run.sent
    assert forwarded["desktopId"] is None

    answer(run, world, "RF-S")

    assert run.sent == []  # no desktop to push to
    stored = Transaction.objects.get(transaction_id="RF-S")
    assert (stored.status, stored.initiated_by_id, stored.desktop_id) == ("SUCCESS", user.pk, None)
    assert stored.events.get(kind="requested").detail["user"] == "mia"
    assert sale().refunded_amount == Decimal("10.00")
