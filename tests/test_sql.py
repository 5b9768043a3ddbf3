"""Every hand-written statement against its ORM twin.

The hot paths write their SQL out (posgateway/core/sql.py says why); each statement here is run
beside the ORM code that would do the same, on the same rows, and both must agree: what a read
finds, what a write leaves in the table. A statement that drifts from the models (a renamed
column, a changed rule) fails here, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db.models import F, Model
from django.forms.models import model_to_dict
from django.utils import timezone

from payments import services as payments
from payments.models import (
    IN_FLIGHT_STATUSES,
    DesktopMessage,
    EventKind,
    EventSource,
    Transaction,
    TransactionEvent,
    TransactionStatus,
)
from posgateway.core.protocol import DIFFERENT_GROUP, TERMINAL_NOT_FOUND, Forbidden, NotFound
from posgateway.core.sql import db, dt_param, execute, insert
from sessions import services as sessions
from sessions.models import RequestKind, RequestStatus, SessionState, TerminalRequest
from terminals import occupancy
from terminals import services as terminals
from terminals.models import Connection, Device, DeviceStatus, DeviceType
from terminals.selectors import open_desktop_channels, resolve_terminal
from tests.factories import Runner, Store, make_device, make_payment, open_connection

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


def row(obj: Model, *, without: tuple[str, ...] = ("id",)) -> dict[str, Any]:
    """A row as the ORM reads it back, minus the fields that differ by nature."""
    fresh = type(obj).objects.get(pk=obj.pk)
    return {k: v for k, v in model_to_dict(fresh).items() if k not in without}


# --- Reads -------------------------------------------------------------------------------------


def resolve_with_the_orm(group_id: int, terminal_id: str) -> tuple[Device, Connection | None]:
    """Terminal ID resolution as the ORM alone would do it (the seed's rule)."""
    device = (
        Device.objects.select_related("current_connection")
        .filter(
            group_id=group_id,
            device_type=DeviceType.TERMINAL,
            device_id=terminal_id,
            is_active=True,
        )
        .first()
    )
    if device is None:
        conn = Connection.objects.filter(connection_id=terminal_id).first()
        if conn is None:
            raise NotFound(TERMINAL_NOT_FOUND)
        if conn.device.group_id != group_id:
            raise Forbidden(DIFFERENT_GROUP)
        device = conn.device
        if device.device_type != DeviceType.TERMINAL or not device.is_active:
            raise NotFound(TERMINAL_NOT_FOUND)
    live = device.current_connection
    return device, live if live is not None and live.closed_at is None else None


def outcome(resolve) -> tuple:
    try:
        device, live = resolve()
    except (NotFound, Forbidden) as exc:
        return ("error", type(exc).__name__, exc.message)
    return (device.pk, live.pk if live else None, live.channel_name if live else None)


def test_the_resolution_statement_finds_what_the_orm_finds(run):
    a, b = Store("store-a"), Store("store-b")
    term_conn = open_connection(run, a.terminal, "test!term-a")
    make_device(a.group, DeviceType.TERMINAL, "TERM-OFF")  # never connected
    inactive, _ = make_device(a.group, DeviceType.TERMINAL, "TERM-OLD")
    Device.objects.filter(pk=inactive.pk).update(is_active=False)
    desk_conn = open_connection(run, a.desktop, "test!desk-a")
    b_conn = open_connection(run, b.terminal, "test!term-b")
    old = open_connection(run, a.terminal, "test!term-a2")  # replaces term_conn
    names = [
        "TERM-1",
        "TERM-OFF",
        "TERM-OLD",
        "TERM-9",
        "POS-1",
        term_conn.connection_id,
        old.connection_id,
        desk_conn.connection_id,
        b_conn.connection_id,
    ]
    for name in names:
        statement = outcome(
            lambda name=name: resolve_terminal(group_id=a.group.pk, terminal_id=name).require()
        )
        assert statement == outcome(lambda name=name: resolve_with_the_orm(a.group.pk, name)), name


def test_the_resolution_statement_answers_the_callers_subqueries_for_the_terminal(run):
    store = Store("store-a")
    open_connection(run, store.terminal, "test!term")
    make_payment(store, "BUSY", status=TransactionStatus.IN_PROGRESS)
    [kind] = [k for k in occupancy.in_flight_kinds() if k.model is Transaction]
    conn = Connection.objects.get(device=store.terminal, closed_at__isnull=True)
    for name in ("TERM-1", conn.connection_id, "TERM-9"):
        resolution = resolve_terminal(
            group_id=store.group.pk, terminal_id=name, also=[(kind.subquery("d.id"), ())]
        )
        found = kind.first(store.terminal.pk) if resolution.terminal else None
        assert resolution.extras == (found,), name


def test_open_desktop_channels_are_those_the_orm_finds(run):
    a, b = Store("store-a"), Store("store-b")
    open_connection(run, a.desktop, "test!desk-a")
    second, _ = make_device(a.group, DeviceType.DESKTOP, "POS-2")
    open_connection(run, second, "test!desk-a2")
    open_connection(run, a.terminal, "test!term-a")
    open_connection(run, b.desktop, "test!desk-b")
    orm = Connection.objects.filter(
        closed_at__isnull=True, device__group=a.group, device__device_type=DeviceType.DESKTOP
    ).values_list("channel_name", flat=True)
    assert sorted(open_desktop_channels(group_id=a.group.pk)) == sorted(orm)


def test_the_in_flight_and_session_subqueries_find_what_the_orm_finds(run):
    store = Store("store-a")
    desk = open_connection(run, store.desktop, "test!desk")
    open_connection(run, store.terminal, "test!term")

    def by_sql() -> tuple:
        in_flight, in_session = occupancy.terminal_pending(terminal_pk=store.terminal.pk)
        return {m.__name__ for m in in_flight}, in_session

    def by_orm() -> tuple:
        in_flight = set()
        pk = store.terminal.pk
        if Transaction.objects.filter(terminal_id=pk, status__in=IN_FLIGHT_STATUSES).exists():
            in_flight.add("Transaction")
        if TerminalRequest.objects.filter(terminal_id=pk, status=RequestStatus.IN_PROGRESS):
            in_flight.add("TerminalRequest")
        return in_flight, sessions.active_session(terminal_pk=pk) is not None

    assert by_sql() == by_orm() == (set(), False)
    make_payment(store, "T-1", status=TransactionStatus.IN_PROGRESS)
    assert by_sql() == by_orm() == ({"Transaction"}, False)
    Transaction.objects.filter(transaction_id="T-1").update(status=TransactionStatus.SUCCESS)
    run(
        sessions.request_start,
        kind=RequestKind.DISPLAY,
        desktop=store.desktop,
        desktop_connection_id=desk.connection_id,
        terminal_id="TERM-1",
        body={"lines": ["Hello"]},
    )
    assert by_sql() == by_orm() == ({"TerminalRequest"}, False)
    run(
        sessions.session_begin,
        desktop=store.desktop,
        poi_id="TERM-1",
        session_id="S-1",
        operations=[{"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 1}],
    )
    assert by_sql() == by_orm() == ({"TerminalRequest"}, True)
    assert sessions.active_session(terminal_pk=store.terminal.pk).state == SessionState.ACTIVE


# --- Writes ------------------------------------------------------------------------------------


def test_setting_a_device_status_writes_what_the_orm_writes(run):
    store = Store("store-a")
    twin, _ = make_device(store.group, DeviceType.TERMINAL, "TERM-2")
    now = timezone.now()
    conn = open_connection(run, store.terminal, "test!term")
    device = Device.objects.get(pk=store.terminal.pk)
    device.current_connection_id = conn.pk
    terminals._set_status(device, DeviceStatus.RECONNECTING, now, outbox=None)
    Device.objects.filter(pk=twin.pk).update(
        status=DeviceStatus.RECONNECTING,
        status_changed_at=now,
        current_connection_id=conn.pk,
        updated_at=now,
    )
    skip = ("id", "device_id", "key_hash", "key_prefix", "created_at", "last_seq", "acked_seq")
    assert row(device, without=skip) == row(twin, without=skip)


def test_closing_a_connection_writes_what_the_orm_writes(run):
    store = Store("store-a")
    one = open_connection(run, store.terminal, "test!one")
    two = open_connection(run, store.desktop, "test!two")
    now = timezone.now()
    assert execute(terminals._CLOSE_IF_OPEN, [dt_param(now), 4408, one.pk]) == 1
    assert Connection.objects.filter(pk=two.pk, closed_at__isnull=True).update(
        closed_at=now, close_code=4408
    )
    assert execute(terminals._CLOSE_IF_OPEN, [dt_param(now), 1000, one.pk]) == 0  # closed once
    fields = ("closed_at", "close_code")
    assert [getattr(Connection.objects.get(pk=c.pk), f) for c in (one, two) for f in fields] == [
        now,
        4408,
        now,
        4408,
    ]


def test_a_hand_written_insert_stores_what_save_stores(run):
    store = Store("store-a")
    now = timezone.now()
    fields: dict[str, Any] = {
        "device": store.terminal,
        "channel_name": "test!x",
        "remote_addr": "10.0.0.1",
        "connected_at": now,
        "last_activity": now,
    }
    by_sql = Connection(connection_id="by-sql", **fields)
    insert(by_sql)
    by_sql.pk = Connection.objects.get(connection_id="by-sql").pk
    by_orm = Connection.objects.create(connection_id="by-orm", **fields)
    skip = ("id", "connection_id")
    assert row(by_sql, without=skip) == row(by_orm, without=skip)


def test_a_desktops_seq_moves_as_the_orm_would_move_it(run):
    store = Store("store-a")
    twin, _ = make_device(store.group, DeviceType.DESKTOP, "POS-2")
    txn = make_payment(store, "T-1")
    for device in (store.desktop, twin):
        for seq in (1, 2):
            DesktopMessage.objects.create(device=device, seq=seq, transaction=txn, frame={})
    assert terminals.desktop_next_seq(desktop_pk=store.desktop.pk) == 1
    assert terminals.desktop_next_seq(desktop_pk=store.desktop.pk) == 2
    Device.objects.filter(pk=twin.pk).update(last_seq=F("last_seq") + 2)

    def unacked(device: Device) -> tuple[str, list]:
        return payments._UNACKED_UP_TO, [device.pk, 1]

    assert terminals.desktop_seq_acked(
        desktop_pk=store.desktop.pk, seq=1, unacked=unacked(store.desktop)
    )
    if DesktopMessage.objects.filter(device=twin, seq__lte=1, acked_at__isnull=True).exists():
        Device.objects.filter(pk=twin.pk, acked_seq__lt=1).update(acked_seq=1)
    # An ack beyond the last seq sent is refused by both.
    assert not terminals.desktop_seq_acked(
        desktop_pk=store.desktop.pk, seq=3, unacked=(payments._UNACKED_UP_TO, [store.desktop.pk, 3])
    )
    seqs = [
        Device.objects.filter(pk=d.pk).values_list("last_seq", "acked_seq").get()
        for d in (store.desktop, twin)
    ]
    assert seqs == [(2, 1), (2, 1)]


def test_acknowledging_results_marks_what_the_orm_marks(run):
    store = Store("store-a")
    twin, _ = make_device(store.group, DeviceType.DESKTOP, "POS-2")
    txn = make_payment(store, "T-1")
    for device in (store.desktop, twin):
        for seq in (1, 2, 3):
            DesktopMessage.objects.create(device=device, seq=seq, transaction=txn, frame={})
    now = timezone.now()
    acked = execute(payments._ACK_MESSAGES, [dt_param(now), store.desktop.pk, 2], fetch="all")
    assert sorted(acked) == [(txn.pk, 1, "T-1"), (txn.pk, 2, "T-1")]
    DesktopMessage.objects.filter(device=twin, seq__lte=2, acked_at__isnull=True).update(
        acked_at=now
    )

    def marked(device: Device) -> list:
        return list(
            DesktopMessage.objects.filter(device=device)
            .order_by("seq")
            .values_list("seq", "acked_at")
        )

    assert marked(store.desktop) == marked(twin) == [(1, now), (2, now), (3, None)]


def test_recording_a_result_writes_what_the_orm_writes(run):
    store = Store("store-a")
    second, _ = make_device(store.group, DeviceType.TERMINAL, "TERM-2")
    response = {
        "transactionId": "",
        "status": "SUCCESS",
        "authorizationCode": "AUTH-1",
        "errorMessage": None,
    }
    by_sql = make_payment(store, "BY-SQL", status=TransactionStatus.TIMEOUT)
    by_orm = make_payment(store, "BY-ORM", status=TransactionStatus.TIMEOUT, terminal=second)
    now = timezone.now()
    field = Transaction._meta.get_field("payment_response")
    found = execute(
        payments._RECORD_RESULT + payments._WHERE_PK + payments._RETURNING,
        [
            "SUCCESS",
            True,
            "AUTH-1",
            "",
            field.get_db_prep_save(response, db()),
            dt_param(now),
            dt_param(now),
            by_sql.pk,
        ],
        fetch="one",
    )
    assert found == (by_sql.pk, store.desktop.pk, True, "PAYMENT", False)
    Transaction.objects.filter(pk=by_orm.pk).update(
        status="SUCCESS",
        late=True,
        authorization_code="AUTH-1",
        error_message="",
        payment_response=response,
        completed_at=now,
        updated_at=now,
    )
    skip = ("id", "transaction_id", "terminal", "terminal_ref")
    assert row(by_sql, without=skip) == row(by_orm, without=skip)
    # The usual case: only a payment IN_PROGRESS on that terminal is found.
    assert (
        execute(
            payments._RECORD_RESULT + payments._WHERE_IN_PROGRESS + payments._RETURNING,
            [
                "SUCCESS",
                False,
                "",
                "",
                None,
                dt_param(now),
                dt_param(now),
                store.group.pk,
                "BY-SQL",
                store.terminal.pk,
                "PAYMENT",
            ],
            fetch="one",
        )
        is None
    )


def test_event_rows_inserted_in_one_statement_are_what_create_stores(run):
    store = Store("store-a")
    one, two = make_payment(store, "T-1"), make_payment(store, "T-2")
    payments._insert_events(
        (one.pk, EventKind.RESULT, EventSource.TERMINAL, "IN_PROGRESS", "SUCCESS", {"late": True})
    )
    TransactionEvent.objects.create(
        transaction=two,
        kind=EventKind.RESULT,
        source=EventSource.TERMINAL,
        old_status="IN_PROGRESS",
        new_status="SUCCESS",
        detail={"late": True},
    )
    [by_sql] = TransactionEvent.objects.filter(transaction=one)
    [by_orm] = TransactionEvent.objects.filter(transaction=two)
    skip = ("id", "transaction")
    assert row(by_sql, without=skip) == row(by_orm, without=skip)
    assert abs(by_sql.created_at - by_orm.created_at) < dt.timedelta(seconds=5)


def test_the_connect_paths_reads_find_what_the_orm_finds(run):
    a, b = Store("store-a"), Store("store-b")
    conn = open_connection(run, a.terminal, "test!term-a")
    open_connection(run, b.terminal, "test!term-b")
    for device in (a.desktop, a.terminal, b.terminal):
        locked = terminals._locked_device("d.id = %s", [device.pk])
        orm = Device.objects.select_related("group").get(pk=device.pk)
        assert model_to_dict(locked) == model_to_dict(orm)
        assert model_to_dict(locked.group) == model_to_dict(orm.group)
        assert locked.store_devices == Device.objects.filter(group=orm.group).count()
    by_key = terminals._locked_device("d.key_hash = %s AND d.is_active = %s", ["nope", True])
    assert by_key is None
    device = terminals._lock_device_of(conn.pk)
    orm = Device.objects.select_related("current_connection").get(pk=a.terminal.pk)
    assert model_to_dict(device) == model_to_dict(orm)
    assert model_to_dict(device.current_connection) == model_to_dict(orm.current_connection)
    rows = execute(terminals._OPEN_CONNECTIONS_OF_DEVICE, [a.terminal.pk], fetch="all")
    assert rows == list(
        Connection.objects.filter(device=a.terminal, closed_at__isnull=True).values_list(
            "id", "channel_name"
        )
    )


def test_inserting_a_connection_stores_what_create_stores(run):
    store = Store("store-a")
    now = timezone.now()
    params = ["by-sql", store.terminal.pk, "test!x", "10.0.0.1", dt_param(now), dt_param(now)]
    (pk,) = execute(terminals._INSERT_CONNECTION, params, fetch="one")
    by_orm = Connection.objects.create(
        connection_id="by-orm",
        device=store.terminal,
        channel_name="test!x",
        remote_addr="10.0.0.1",
        connected_at=now,
        last_activity=now,
    )
    by_sql = Connection.objects.get(pk=pk)
    skip = ("id", "connection_id")
    assert row(by_sql, without=skip) == row(by_orm, without=skip)
