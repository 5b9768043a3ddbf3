"""What the services publish for the dashboards: one small event per change, after commit,
to the store's own group only."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import transaction

from payments import services as payments
from posgateway.core.events import Outbox
from posgateway.core.protocol import Conflict
from posgateway.gateway import delivery
from posgateway.gateway.frames import dashboard_group as store_group
from sessions import services as sessions
from sessions.models import RequestKind, SessionState, TerminalSession
from terminals import services as terminals
from terminals.events import DeviceChanged
from tests.dashboard.conftest import make_payment

pytestmark = pytest.mark.django_db


def steps(events):
    return [(e["type"], e.get("step") or e.get("status") or e.get("state")) for e in events]


def test_a_payment_publishes_forwarded_result_and_delivered_to_its_store(run, store_a, store_b):
    run.paid(store_a, "EV-1", "DECLINED")
    events = run.events(store_a.group.pk)
    assert steps(events) == [
        ("device", "online"),
        ("device", "online"),
        ("payment", "forwarded"),
        ("payment", "result"),
        ("payment", "delivered"),
    ]
    assert events[2]["transactionId"] == "EV-1"
    assert events[3]["status"] == "DECLINED"
    assert events[4]["transactionIds"] == ["EV-1"]
    assert run.events(store_b.group.pk) == []
    assert {name for name, _ in run.groups} == {store_group(store_a.group.pk)}


def test_a_refused_payment_publishes_nothing(run, store_a):
    make_payment(store_a, "BUSY", status="IN_PROGRESS")
    desk = run.connect(store_a.desktop, "test!desk")
    run.connect(store_a.terminal, "test!term")
    before = len(run.groups)
    with pytest.raises(Conflict):
        run(
            payments.payment_start,
            desktop=store_a.desktop,
            desktop_connection_id=desk.connection_id,
            terminal_id="TERM-1",
            payment_request={"transactionId": "NEXT", "amount": "1.00", "currency": "EUR"},
        )
    assert len(run.groups) == before


def test_nothing_is_published_when_the_transaction_rolls_back(django_capture_on_commit_callbacks):
    outbox = Outbox()
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                outbox.publish(DeviceChanged(1, "POS-1", "desktop", "online", True))
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
    assert delivery.messages(outbox.take()) == ([], [], [])


def test_timeouts_and_late_results_are_published(run, store_a):
    run.paid(store_a, "SLOW", status="", ack=False)
    payments.Transaction.objects.filter(transaction_id="SLOW").update(
        deadline_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    run(payments.sweep_payment_timeouts)
    run(
        payments.payment_result,
        terminal=store_a.terminal,
        payment_response={"transactionId": "SLOW", "status": "SUCCESS"},
    )
    late = [e for e in run.events() if e["type"] == "payment"][-2:]
    assert [(e["step"], e["status"], e["late"]) for e in late] == [
        ("timeout", "TIMEOUT", False),
        ("late_result", "SUCCESS", True),
    ]


def test_a_cancel_request_is_published(run, store_a):
    run.paid(store_a, "CANCEL-ME", status="", ack=False)
    run(payments.payment_cancel, group_id=store_a.group.pk, transaction_id="CANCEL-ME")
    assert run.events()[-1]["step"] == "cancel_requested"


def test_device_going_away_and_key_changes_are_published(run, store_a):
    conn = run.connect(store_a.terminal, "test!term")
    run(terminals.connection_close, connection_pk=conn.pk, code=1006)
    store_a.terminal.refresh_from_db()
    run(terminals.device_rotate_key, device=store_a.terminal)
    run(terminals.device_deactivate, device=store_a.terminal)
    assert [(e["status"], e["active"]) for e in run.events()] == [
        ("online", True),
        ("reconnecting", True),
        ("reconnecting", True),
        ("reconnecting", False),
    ]


def test_sessions_and_requests_are_published(run, store_a):
    desk = run.connect(store_a.desktop, "test!desk")
    run.connect(store_a.terminal, "test!term")
    run(
        sessions.request_start,
        kind=RequestKind.DISPLAY,
        desktop=store_a.desktop,
        desktop_connection_id=desk.connection_id,
        terminal_id="TERM-1",
        body={"requestId": "SHOW-1", "lines": ["Hello"], "durationMs": 1000},
    )
    run(
        sessions.request_result,
        kind=RequestKind.DISPLAY,
        terminal=store_a.terminal,
        response={"requestId": "SHOW-1", "status": "SUCCESS"},
    )
    session = TerminalSession.objects.create(
        group=store_a.group,
        session_id="S-1",
        terminal=store_a.terminal,
        desktop=store_a.desktop,
        operations=[],
        last_request_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
    )
    run(sessions.sweep_sessions)
    session.refresh_from_db()
    assert session.state == SessionState.EXPIRED
    published = [e for e in run.events() if e["type"] in ("request", "session")]
    assert [(e["type"], e.get("status") or e.get("state")) for e in published] == [
        ("request", "IN_PROGRESS"),
        ("request", "SUCCESS"),
        ("session", "EXPIRED"),
    ]
    assert published[0]["requestId"] == "SHOW-1"
    assert published[2]["sessionId"] == "S-1"


async def test_a_refused_group_send_is_logged_and_does_not_stop_the_flush(
    monkeypatch, caplog, fresh_channel_layer
):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    sent = []

    async def refuse(group, message):
        raise ConnectionError("layer down")

    async def send(channel, message):
        sent.append(channel)

    monkeypatch.setattr(layer, "group_send", refuse)
    monkeypatch.setattr(layer, "send", send)
    outbox = Outbox()
    outbox.events.append(DeviceChanged(1, "POS-1", "desktop", "online", True))
    outbox.events.append(delivery.Push("device!1", {}))
    with caplog.at_level(logging.WARNING, logger="posgateway.realtime"):
        assert await delivery.deliver(outbox) == []
    assert sent == ["device!1"]
    assert "group send to dashboard.store.1 failed" in caplog.text
