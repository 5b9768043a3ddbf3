"""The Django admin for every model: lists without N+1, financial records read-only."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.models import DesktopMessage, Transaction, TransactionEvent
from sessions.models import TerminalRequest, TerminalSession
from terminals.models import Connection, Device, DeviceType, Group
from tests.dashboard.conftest import logged_in, make_payment
from tests.factories import make_device

pytestmark = pytest.mark.django_db

MODELS = [
    Group,
    Device,
    Connection,
    Transaction,
    TransactionEvent,
    DesktopMessage,
    TerminalSession,
    TerminalRequest,
]


def test_every_model_of_the_gateway_has_an_admin():
    for model in MODELS:
        assert admin.site.is_registered(model), model


def _more(store, run, n: int) -> None:
    for i in range(n):
        terminal, _ = make_device(store.group, DeviceType.TERMINAL, f"ADM-{n}-{i}")
        run.connect(terminal, f"test!adm-{n}-{i}")
        txn = make_payment(store, terminal=terminal)
        TransactionEvent.objects.create(transaction=txn, kind="requested", source="desktop")
        store.desktop.last_seq += 1
        store.desktop.save(update_fields=["last_seq"])
        DesktopMessage.objects.create(
            device=store.desktop, seq=store.desktop.last_seq, transaction=txn, frame={}
        )
        session = TerminalSession.objects.create(
            group=store.group,
            session_id=f"adm-{n}-{i}",
            terminal=terminal,
            desktop=store.desktop,
            operations=[],
            last_request_at=dt.datetime.now(dt.UTC),
        )
        TerminalRequest.objects.create(
            group=store.group,
            request_id=f"adm-{n}-{i}",
            kind="display",
            terminal=terminal,
            desktop=store.desktop,
            session=session,
            request={},
            deadline_at=dt.datetime.now(dt.UTC),
        )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_admin_lists_make_the_same_number_of_queries_for_few_or_many_rows(
    root, store_a, run, model
):
    client = logged_in(root)
    url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    _more(store_a, run, 1)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    _more(store_a, run, 15)
    with CaptureQueriesContext(connection) as many:
        assert client.get(url).status_code == 200
    assert len(many) == len(few), [q["sql"][:100] for q in many.captured_queries]


def test_a_transactions_money_and_result_cannot_be_edited_and_its_events_are_inline(
    root, store_a, run
):
    txn = run.paid(store_a, "ADM-PAY")
    page = logged_in(root).get(f"/admin/payments/transaction/{txn.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for field in ("amount", "currency", "status", "authorization_code", "payment_response"):
        assert f'name="{field}"' not in html, field
    assert "12.500" in html or "12.50" in html
    for kind in ("requested", "forwarded", "result", "delivered"):
        assert kind in html
    assert logged_in(root).get("/admin/payments/transaction/add/").status_code == 403


def test_a_devices_store_cannot_be_changed_in_the_admin(root, store_a, store_b):
    html = logged_in(root).get(f"/admin/terminals/device/{store_a.terminal.pk}/change/")
    assert 'name="group"' not in html.content.decode()
    assert 'name="label"' in html.content.decode()


def test_a_staff_member_without_admin_rights_sees_no_models(client_a):
    response = client_a.get("/admin/payments/transaction/")
    assert response.status_code == 403
    assert Device.objects.exists()
