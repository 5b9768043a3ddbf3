"""Devices, keys, connections and live status, through the services directly."""

from __future__ import annotations

import datetime as dt
import hashlib
import string

import pytest
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.utils import timezone

from posgateway.core.protocol import DIFFERENT_GROUP, TERMINAL_NOT_FOUND, Forbidden, NotFound
from terminals import services
from terminals.models import Connection, Device, DeviceType, generate_key
from terminals.selectors import device_for_key, resolve_terminal
from tests.factories import Runner, Store, make_device, open_connection

pytestmark = pytest.mark.django_db

DESK = "test!desk"


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


def close_connection(run: Runner, conn: Connection, code: int | None) -> None:
    run(services.connection_close, connection_pk=conn.pk, code=code)


def fresh(device: Device) -> Device:
    return Device.objects.select_related("current_connection").get(pk=device.pk)


def status_updates(run: Runner, channel: str = DESK) -> list[tuple[str | None, str]]:
    return [
        (f["terminal"]["deviceId"], f["terminal"]["status"])
        for f in run.frames_to(channel)
        if f.get("action") == "terminalStatusUpdate"
    ]


@pytest.fixture
def store(run):
    """Store A's group, desktop POS-1 (connected) and terminal TERM-1, and the desktop's
    connection."""
    made = Store("store-a")
    return made.group, made.desktop, made.terminal, open_connection(run, made.desktop, DESK)


# --- connections and live status -------------------------------------------------------------


def test_connection_open_makes_the_device_online_and_tells_the_desktops(run, store):
    _, _, terminal, _ = store
    other_desktop, _ = make_device("store-b", DeviceType.DESKTOP, "POS-1")
    open_connection(run, other_desktop, "test!desk-b")

    conn = open_connection(run, terminal, "test!term")

    device = fresh(terminal)
    assert device.status == "online"
    assert device.current_connection == conn
    assert conn.closed_at is None
    [update] = run.frames_to(DESK)
    assert update["action"] == "terminalStatusUpdate"
    assert update["terminal"]["connectionId"] == conn.connection_id
    assert update["terminal"]["status"] == "online"
    assert run.frames_to("test!desk-b") == []  # another store's desktop hears nothing


def test_a_desktop_connecting_is_not_published(run, store):
    group, _, _, _ = store
    desktop_2, _ = make_device(group, DeviceType.DESKTOP, "POS-2")

    open_connection(run, desktop_2, "test!desk-2")

    assert fresh(desktop_2).status == "online"
    assert run.sent == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (1000, "offline"),
        (1001, "offline"),
        (1006, "reconnecting"),
        (1011, "reconnecting"),
        (4408, "reconnecting"),
        (None, "reconnecting"),
    ],
)
def test_close_code_decides_offline_or_reconnecting(run, store, code, status):
    _, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")

    close_connection(run, conn, code)

    conn.refresh_from_db()
    assert conn.closed_at is not None
    assert conn.close_code == code
    assert fresh(terminal).status == status
    assert status_updates(run) == [("TERM-1", status)]


def test_closing_a_closed_connection_changes_nothing(run, store):
    _, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")
    close_connection(run, conn, 1006)

    close_connection(run, conn, 1000)

    assert fresh(terminal).status == "reconnecting"
    assert run.sent == []


def test_a_newer_connection_replaces_the_older_one(run, store):
    _, _, terminal, _ = store
    old = open_connection(run, terminal, "test!term-old")

    new = open_connection(run, terminal, "test!term-new")

    old.refresh_from_db()
    assert old.closed_at is not None
    assert old.close_code == 4409
    force = {"type": "gateway.force_disconnect", "reason": "replaced by a newer connection"}
    assert ("test!term-old", force) in run.sent
    device = fresh(terminal)
    assert device.status == "online"
    assert device.current_connection == new
    assert Connection.objects.filter(device=terminal, closed_at__isnull=True).get() == new


@pytest.mark.parametrize("code", [4409, 1000, 1006])
def test_the_replaced_connections_close_changes_nothing(run, store, code):
    _, _, terminal, _ = store
    old = open_connection(run, terminal, "test!term-old")
    new = open_connection(run, terminal, "test!term-new")

    close_connection(run, old, code)

    device = fresh(terminal)
    assert device.status == "online"
    assert device.current_connection == new
    assert run.sent == []
    new.refresh_from_db()
    assert new.closed_at is None


def test_reconnecting_within_the_grace_period_is_online_again(run, store):
    _, _, terminal, _ = store
    close_connection(run, open_connection(run, terminal, "test!term"), 1006)

    open_connection(run, terminal, "test!term-2")

    assert fresh(terminal).status == "online"
    assert status_updates(run) == [("TERM-1", "online")]


# --- the sweep -------------------------------------------------------------------------------


def make_silent(conn: Connection, seconds: float) -> None:
    Connection.objects.filter(pk=conn.pk).update(
        last_activity=timezone.now() - dt.timedelta(seconds=seconds)
    )


def test_sweep_closes_an_orphaned_connection_and_marks_it_reconnecting(run, store, settings):
    settings.HEARTBEAT_INTERVAL_S = 30
    settings.HEARTBEAT_TIMEOUT_S = 10
    _, _, terminal, desk_conn = store
    conn = open_connection(run, terminal, "test!term")
    make_silent(conn, services.orphan_threshold_s() + 1)

    changed = run(services.sweep_connections)

    assert changed == 1
    conn.refresh_from_db()
    assert conn.closed_at is not None
    assert conn.close_code == 4408
    assert ("test!term", {"type": "gateway.close", "code": 4408}) in run.sent
    assert fresh(terminal).status == "reconnecting"
    assert status_updates(run) == [("TERM-1", "reconnecting")]
    desk_conn.refresh_from_db()
    assert desk_conn.closed_at is None  # the desktop was not silent

    assert run(services.sweep_connections) == 0
    assert run.sent == []


def test_sweep_leaves_a_connection_silent_for_less_than_the_threshold(run, store):
    _, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")
    make_silent(conn, services.orphan_threshold_s() - 5)

    assert run(services.sweep_connections) == 0

    conn.refresh_from_db()
    assert conn.closed_at is None
    assert fresh(terminal).status == "online"
    assert run.sent == []


def test_sweep_turns_reconnecting_offline_after_the_grace_period_once(run, store, settings):
    settings.RECONNECT_GRACE_S = 60
    _, _, terminal, _ = store
    close_connection(run, open_connection(run, terminal, "test!term"), 1006)
    Device.objects.filter(pk=terminal.pk).update(
        status_changed_at=timezone.now() - dt.timedelta(seconds=61)
    )

    changed = run(services.sweep_connections)

    assert changed == 1
    assert fresh(terminal).status == "offline"
    assert status_updates(run) == [("TERM-1", "offline")]

    assert run(services.sweep_connections) == 0
    assert run.sent == []
    assert fresh(terminal).status == "offline"


def test_sweep_keeps_reconnecting_within_the_grace_period(run, store, settings):
    settings.RECONNECT_GRACE_S = 60
    _, _, terminal, _ = store
    close_connection(run, open_connection(run, terminal, "test!term"), 1006)
    Device.objects.filter(pk=terminal.pk).update(
        status_changed_at=timezone.now() - dt.timedelta(seconds=50)
    )

    assert run(services.sweep_connections) == 0

    assert fresh(terminal).status == "reconnecting"
    assert run.sent == []


def test_sweep_closes_an_orphan_then_lets_its_grace_expire(run, store, settings):
    settings.RECONNECT_GRACE_S = 60
    _, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")
    make_silent(conn, services.orphan_threshold_s() + 1)
    run(services.sweep_connections)
    Device.objects.filter(pk=terminal.pk).update(
        status_changed_at=timezone.now() - dt.timedelta(seconds=61)
    )

    run(services.sweep_connections)

    assert fresh(terminal).status == "offline"
    assert status_updates(run) == [("TERM-1", "offline")]


# --- terminal ID resolution ------------------------------------------------------------------


def test_resolve_terminal_by_device_id(run, store):
    group, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")

    device, live = resolve_terminal(group_id=group.pk, terminal_id="TERM-1").require()

    assert device == terminal
    assert live == conn


def test_resolve_terminal_by_connection_id(run, store):
    group, _, _, _ = store
    anonymous, _ = make_device(group, DeviceType.TERMINAL, None)
    conn = open_connection(run, anonymous, "test!anon")

    device, live = resolve_terminal(group_id=group.pk, terminal_id=conn.connection_id).require()

    assert device == anonymous
    assert live == conn


def test_device_id_is_looked_up_before_connection_id(run, store):
    group, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")
    # Another terminal whose deviceId happens to equal TERM-1's connectionId.
    lookalike, _ = make_device(group, DeviceType.TERMINAL, conn.connection_id)

    device, live = resolve_terminal(group_id=group.pk, terminal_id=conn.connection_id).require()

    assert device == lookalike
    assert live is None


def test_an_old_connection_id_resolves_to_the_terminals_newest_connection(run, store):
    group, _, terminal, _ = store
    old = open_connection(run, terminal, "test!term-old")
    new = open_connection(run, terminal, "test!term-new")

    device, live = resolve_terminal(group_id=group.pk, terminal_id=old.connection_id).require()

    assert device == terminal
    assert live == new


def test_a_registered_terminal_that_is_not_connected_resolves_without_a_connection(run, store):
    group, _, terminal, _ = store

    assert resolve_terminal(group_id=group.pk, terminal_id="TERM-1").require() == (terminal, None)

    close_connection(run, open_connection(run, terminal, "test!term"), 1000)
    assert resolve_terminal(group_id=group.pk, terminal_id="TERM-1").require() == (terminal, None)


def test_another_stores_connection_id_is_forbidden(run, store):
    group, _, _, _ = store
    foreign, _ = make_device("store-b", DeviceType.TERMINAL, "TERM-9")
    conn = open_connection(run, foreign, "test!foreign")

    with pytest.raises(Forbidden) as error:
        resolve_terminal(group_id=group.pk, terminal_id=conn.connection_id).require()

    assert error.value.message == DIFFERENT_GROUP


def test_another_stores_device_id_is_not_found(run, store):
    group, _, _, _ = store
    make_device("store-b", DeviceType.TERMINAL, "TERM-9")

    with pytest.raises(NotFound) as error:
        resolve_terminal(group_id=group.pk, terminal_id="TERM-9").require()

    assert error.value.message == TERMINAL_NOT_FOUND


@pytest.mark.parametrize("terminal_id", ["NOPE", "POS-1", "desktop-connection"])
def test_unknown_ids_and_desktops_are_not_found(run, store, terminal_id):
    group, _, _, desk_conn = store
    if terminal_id == "desktop-connection":
        terminal_id = desk_conn.connection_id

    with pytest.raises(NotFound) as error:
        resolve_terminal(group_id=group.pk, terminal_id=terminal_id).require()

    assert error.value.message == TERMINAL_NOT_FOUND


def test_a_deactivated_terminal_is_not_found(run, store):
    group, _, terminal, _ = store
    conn = open_connection(run, terminal, "test!term")
    run(services.device_deactivate, device=terminal)

    for terminal_id in ("TERM-1", conn.connection_id):
        with pytest.raises(NotFound):
            resolve_terminal(group_id=group.pk, terminal_id=terminal_id).require()


# --- devices and keys ------------------------------------------------------------------------


def test_device_key_is_stored_only_as_its_sha256_hash():
    device, key = make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    assert len(key) >= 43  # at least 32 random bytes, URL-safe base64
    with db_connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Device._meta.db_table} WHERE id = %s", [device.pk])  # noqa: S608
        row = cursor.fetchone()
    assert all(key not in str(value) for value in row)
    device.refresh_from_db()
    assert device.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert device.key_prefix == key[:8]
    assert len(device.key_prefix) < len(key)


def test_device_for_key_finds_the_device_by_its_key_only():
    device, key = make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    assert device_for_key(key=key) == device
    assert device_for_key(key=device.key_hash) is None
    assert device_for_key(key=key[:-1]) is None
    assert device_for_key(key="") is None


def test_each_device_gets_its_own_key():
    _, first = make_device("store-a", DeviceType.TERMINAL, "TERM-1")
    _, second = make_device("store-a", DeviceType.TERMINAL, "TERM-2")

    assert first != second


def test_a_key_never_starts_with_a_dash_so_a_command_line_takes_it_as_a_value():
    # One key in 64 did: `manage.py simulate_terminal --key -Xb…` then failed with "argument
    # --key: expected one argument" (seen in CI). Still 32 random bytes, URL-safe.
    keys = {generate_key() for _ in range(2000)}
    assert len(keys) == 2000
    assert [key for key in keys if key.startswith("-")] == []
    assert {len(key) for key in keys} == {43}
    assert set("".join(keys)) <= set(string.ascii_letters + string.digits + "-_")
    assert any("-" in key for key in keys)  # the alphabet is unchanged, only the first place


def test_key_rotation_makes_the_old_key_fail_and_closes_live_sockets(run):
    device, old_key = make_device("store-a", DeviceType.TERMINAL, "TERM-1")
    open_connection(run, device, "test!term")

    new_key = run(services.device_rotate_key, device=device)

    assert new_key != old_key
    assert device_for_key(key=old_key) is None
    assert device_for_key(key=new_key) == device
    assert ("test!term", {"type": "gateway.close", "code": 4403}) in run.sent


def test_a_deactivated_device_key_fails(run):
    device, key = make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    run(services.device_deactivate, device=device)

    assert device_for_key(key=key) is None


def test_device_id_is_unique_in_its_store_only():
    make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    with pytest.raises(ValidationError):
        make_device("store-a", DeviceType.DESKTOP, "TERM-1")
    other, _ = make_device("store-b", DeviceType.TERMINAL, "TERM-1")
    make_device("store-a", DeviceType.TERMINAL, None)
    make_device("store-a", DeviceType.TERMINAL, None)  # any number without a deviceId

    assert other.group.slug == "store-b"
    assert Device.objects.filter(device_id="TERM-1").count() == 2


def test_empty_device_id_is_stored_as_none():
    device, _ = make_device("store-a", DeviceType.TERMINAL, "")

    device.refresh_from_db()
    assert device.device_id is None
