"""/api/groups/, /api/terminals/ and /api/devices/: stores, live status, keys never shown."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from payments.models import TransactionStatus
from posgateway.core.events import Outbox
from terminals import services
from terminals.models import DeviceType
from tests.api.conftest import make_payment
from tests.factories import make_device

pytestmark = pytest.mark.django_db


def test_groups_show_each_stores_time_zone(store_a, store_b, api_root):
    groups = api_root.get("/api/groups/").json()

    assert groups["count"] == 2
    assert [(g["slug"], g["timezone"]) for g in groups["results"]] == [
        ("store-a", "UTC"),
        ("store-b", "Europe/Berlin"),
    ]
    assert api_root.get("/api/groups/store-b/").json()["timezone"] == "Europe/Berlin"


def test_a_store_time_zone_must_be_an_iana_name(store_a):
    store_a.group.timezone = "Mars/Olympus_Mons"

    with pytest.raises(ValidationError) as caught:
        store_a.group.full_clean()

    assert "timezone" in caught.value.message_dict
    store_a.group.timezone = "America/New_York"
    store_a.group.full_clean()


def test_terminal_shows_live_status_last_activity_and_the_payment_in_flight(store_a, api_a):
    outbox = Outbox()
    conn = services.connection_open(
        device_pk=store_a.terminal.pk, channel_name="test.t", remote_addr="", outbox=outbox
    )
    make_payment(store_a, "LIVE-1", amount="42.5", status=TransactionStatus.IN_PROGRESS)
    idle, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-IDLE")

    terminals = {t["deviceId"]: t for t in api_a.get("/api/terminals/").json()["results"]}

    live = terminals["TERM-1"]
    assert live["status"] == "online"
    assert live["connectionId"] == conn.connection_id
    assert live["lastActivity"].endswith("Z")
    assert live["connectedAt"] == live["lastActivity"]
    assert live["paymentInFlight"]["transactionId"] == "LIVE-1"
    assert live["paymentInFlight"]["amount"] == "42.50"
    assert live["paymentInFlight"]["status"] == "IN_PROGRESS"
    offline = terminals["TERM-IDLE"]
    assert (offline["status"], offline["connectionId"], offline["paymentInFlight"]) == (
        "offline",
        None,
        None,
    )
    assert "POS-1" not in terminals  # desktops are not terminals
    detail = api_a.get(f"/api/terminals/{idle.pk}/").json()
    assert detail["deviceId"] == "TERM-IDLE"


def test_terminal_after_a_dropped_connection_is_reconnecting_with_its_last_activity(store_a, api_a):
    outbox = Outbox()
    conn = services.connection_open(
        device_pk=store_a.terminal.pk, channel_name="test.t", remote_addr="", outbox=outbox
    )
    services.connection_close(connection_pk=conn.pk, code=1006, outbox=outbox)

    [terminal] = api_a.get("/api/terminals/").json()["results"]

    assert terminal["status"] == "reconnecting"
    assert terminal["lastActivity"] is not None


def test_terminals_filter_by_status(store_a, api_a):
    services.connection_open(
        device_pk=store_a.terminal.pk, channel_name="test.t", remote_addr="", outbox=Outbox()
    )
    make_device(store_a.group, DeviceType.TERMINAL, "TERM-OFF")

    online = api_a.get("/api/terminals/?status=online").json()["results"]
    offline = api_a.get("/api/terminals/?status=offline").json()["results"]

    assert [t["deviceId"] for t in online] == ["TERM-1"]
    assert [t["deviceId"] for t in offline] == ["TERM-OFF"]
    assert api_a.get("/api/terminals/?status=asleep").json()["message"].startswith("status: ")


def test_terminal_list_queries_do_not_grow_with_terminals(
    store_a, api_a, django_assert_max_num_queries
):
    for n in range(20):
        terminal, _ = make_device(store_a.group, DeviceType.TERMINAL, f"T-{n}")
        make_payment(store_a, f"F-{n}", status=TransactionStatus.IN_PROGRESS, terminal=terminal)

    # token, count, page, in-flight payments
    with django_assert_max_num_queries(4):
        response = api_a.get("/api/terminals/")

    assert sum(1 for t in response.json()["results"] if t["paymentInFlight"]) == 20


def test_devices_never_show_a_key_or_its_hash(store_a, api_a):
    devices = api_a.get("/api/devices/").json()["results"]
    text = str(devices)

    assert {d["type"] for d in devices} == {"desktop", "terminal"}
    assert store_a.desktop_key not in text
    assert store_a.terminal_key not in text
    assert store_a.desktop.key_hash not in text
    assert all("keyHash" not in d and "key_hash" not in d for d in devices)
    desktop = next(d for d in devices if d["type"] == "desktop")
    assert desktop["keyPrefix"] == store_a.desktop_key[:8]


def test_devices_filter_by_type_and_activity(store_a, api_a):
    services.device_deactivate(device=store_a.terminal, outbox=Outbox())

    desktops = api_a.get("/api/devices/?type=desktop").json()["results"]
    inactive = api_a.get("/api/devices/?is_active=false").json()["results"]
    terminals = api_a.get("/api/terminals/").json()["results"]

    assert [d["deviceId"] for d in desktops] == ["POS-1"]
    assert [(d["deviceId"], d["isActive"]) for d in inactive] == [("TERM-1", False)]
    assert terminals == []  # a deactivated terminal is no longer listed as a terminal


def test_device_pages_count_and_link(store_a, api_a):
    for n in range(3):
        make_device(store_a.group, DeviceType.TERMINAL, f"PAGE-{n}")

    first = api_a.get("/api/devices/?page_size=2").json()
    second = api_a.get(first["next"]).json()

    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert second["previous"] is not None
    assert api_a.get("/api/devices/?page=99").status_code == 404
    bad = api_a.get("/api/devices/?page=zero")
    assert (bad.status_code, bad.json()["message"][:6]) == (400, "page: ")


@pytest.mark.parametrize("value", ["maybe", "yes please", "\U00052e34"])
def test_a_boolean_filter_refuses_anything_but_true_or_false(store_a, api_a, value):
    response = api_a.get("/api/devices/", {"is_active": value})

    assert response.status_code == 400
    assert response.json()["message"] == "is_active: Enter true or false."


def test_a_database_outage_is_503_service_unavailable_without_a_traceback(
    store_a, api_a, monkeypatch, caplog
):
    from django.db import OperationalError

    from posgateway.rest import terminals as views

    def unreachable(user):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views, "groups_for_user", unreachable)

    response = api_a.get("/api/groups/")

    assert response.status_code == 503
    assert response.json() == {
        "error": "Service Unavailable",
        "message": "Database unavailable, try again shortly",
    }
    assert not [r for r in caplog.records if r.exc_info]
