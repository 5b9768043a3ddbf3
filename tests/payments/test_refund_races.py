"""Refunds of one payment never add up to more than it, however they race; a late success that
does is recorded and flagged for a person (docs/protocol.md, "refund (desktop)")."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from payments import services as payments
from payments.models import DesktopMessage, Transaction, TransactionEvent, TransactionType
from posgateway.core.events import Outbox
from posgateway.core.protocol import REFUND_EXCEEDS_REFUNDABLE, BadRequest
from terminals.models import DeviceType
from tests.factories import Runner, Store, make_device, make_payment, open_connection
from tests.payments.test_services import expire

DESK = "race!desk"
TERM = "race!term"


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


def refund(run: Runner, store: Store, tid: str, amount: str, original: str = "PAY-1") -> Any:
    return run(
        payments.refund_start,
        group_id=store.group.pk,
        desktop=store.desktop,
        desktop_connection_id=DESK,
        terminal_id="TERM-1",
        refund_request={"transactionId": tid, "originalTransactionId": original, "amount": amount},
    )


def refund_result(run: Runner, store: Store, tid: str, status: str = "SUCCESS") -> None:
    run(
        payments.payment_result,
        terminal=store.terminal,
        payment_response={"transactionId": tid, "status": status, "authorizationCode": "R-1"},
        kind=TransactionType.REFUND,
    )


@pytest.mark.django_db
def test_late_success_of_a_timed_out_refund_is_counted_and_flags_the_payment(run, caplog):
    store = Store("store-a")
    open_connection(run, store.desktop, DESK)
    open_connection(run, store.terminal, TERM)
    payment = make_payment(store, "PAY-1", amount="10.00", currency="EUR")

    refund(run, store, "RFD-A", "6.00")
    expire("RFD-A")
    run(payments.sweep_payment_timeouts)
    assert Transaction.objects.get(transaction_id="RFD-A").status == "TIMEOUT"
    # A's 6.00 is no longer reserved: B may take 6.00 of the 10.00.
    refund(run, store, "RFD-B", "6.00")
    refund_result(run, store, "RFD-B")
    payment.refresh_from_db()
    assert (payment.refunded_amount, payment.over_refunded) == (Decimal("6.00"), False)

    with caplog.at_level(logging.WARNING, logger="payments"):
        refund_result(run, store, "RFD-A")

    late = Transaction.objects.get(transaction_id="RFD-A")
    assert (late.status, late.late) == ("SUCCESS", True)
    payment.refresh_from_db()
    assert payment.refunded_amount == Decimal("12.00")
    assert payment.over_refunded is True
    flagged = TransactionEvent.objects.filter(transaction=payment, kind="over_refunded")
    assert [e.detail for e in flagged] == [
        {"refundTransactionId": "RFD-A", "refundedAmount": "12.00", "amount": "10.00"}
    ]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "PAY-1" in warning.getMessage()
    assert "RFD-A" in warning.getMessage()
    # The desktop that started A is told, late, on its seq stream (A's TIMEOUT was 1, B's 2).
    [(channel, complete)] = [(ch, f) for ch, f in run.sent if f.get("action") == "refundComplete"]
    assert channel == DESK
    assert complete["transactionId"] == "RFD-A"
    assert complete["seq"] == 3
    assert complete["late"] is True
    assert complete["refundResponse"]["status"] == "SUCCESS"
    assert complete["refundResponse"]["amount"] == "6.00"
    messages = DesktopMessage.objects.filter(transaction=late).order_by("seq")
    assert list(messages.values_list("seq", flat=True)) == [1, 3]


# --- Refunds racing on PostgreSQL -------------------------------------------------------------

RACERS = 6


def race(store: Store, amounts: list[str], original: str) -> list[tuple[str, str, Any]]:
    """Every refund started at once, each from its own thread (its own database connection)
    on its own terminal: (tid, amount, the refund Transaction or the BadRequest refusing it)."""
    barrier = threading.Barrier(len(amounts))
    outcomes: list[tuple[str, str, Any]] = []
    failures: list[BaseException] = []

    def racer(n: int, amount: str) -> None:
        tid = f"{original}-R{n}"
        try:
            barrier.wait(10)
            outcome = payments.refund_start(
                group_id=store.group.pk,
                desktop=store.desktop,
                desktop_connection_id=DESK,
                terminal_id=f"RT-{n}",
                refund_request={
                    "transactionId": tid,
                    "originalTransactionId": original,
                    "amount": amount,
                },
                outbox=Outbox(),
            )
            outcomes.append((tid, amount, outcome.txn))
        except BadRequest as exc:
            outcomes.append((tid, amount, exc))
        except BaseException as exc:  # reported below, in the test's own thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=racer, args=(n, a)) for n, a in enumerate(amounts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    assert len(outcomes) == len(amounts)
    return outcomes


@pytest.mark.production_pass_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "amounts",
    [["3.00"] * RACERS, ["4.00", "3.50", "2.50", "2.00", "1.50", "5.00"]],
    ids=["equal", "mixed"],
)
def test_refunds_racing_from_several_connections_never_exceed_the_payment(run, amounts):
    assert connection.vendor == "postgresql"
    store = Store("race-store")
    open_connection(run, store.desktop, DESK)
    terminals = {}
    for n in range(RACERS):
        terminals[f"RT-{n}"], _ = make_device(store.group, DeviceType.TERMINAL, f"RT-{n}")
        open_connection(run, terminals[f"RT-{n}"], f"race!rt-{n}")

    for round_ in range(3):
        original = f"PAY-{round_}"
        payment = make_payment(store, original, amount="10.00", currency="EUR")

        outcomes = race(store, amounts, original)

        accepted = [(tid, Decimal(a)) for tid, a, o in outcomes if isinstance(o, Transaction)]
        refused = [(tid, Decimal(a), o) for tid, a, o in outcomes if isinstance(o, BadRequest)]
        taken = sum((a for _, a in accepted), Decimal(0))
        assert taken <= Decimal("10.00"), outcomes
        for tid, amount, exc in refused:
            assert exc.message == REFUND_EXCEEDS_REFUNDABLE
            shown = Decimal(exc.extra["refundableAmount"])
            # Refused only what did not fit: what was left then is at least what is left now.
            assert amount > shown >= Decimal("10.00") - taken, (tid, amount, exc.extra, outcomes)
        stored = Transaction.objects.filter(original=payment)
        assert sorted(stored.values_list("transaction_id", flat=True)) == sorted(
            tid for tid, _ in accepted
        )
        assert payments.refundable_amount(payment) == Decimal("10.00") - taken

        # The terminals approve them (freeing themselves for the next round): all counted.
        for txn in stored.select_related("terminal"):
            run(
                payments.payment_result,
                terminal=terminals[txn.terminal.device_id],
                payment_response={"transactionId": txn.transaction_id, "status": "SUCCESS"},
                kind=TransactionType.REFUND,
            )
        payment.refresh_from_db()
        assert (payment.refunded_amount, payment.over_refunded) == (taken, False)
