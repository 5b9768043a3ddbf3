"""Device management from the dashboard: register (key shown once), rotate, deactivate."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from terminals.models import Device, DeviceStatus, DeviceType, hash_key
from terminals.selectors import device_for_key
from tests.dashboard.conftest import logged_in

KEY_RE = re.compile(r'<code id="api-key" class="api-key">([^<]+)</code>')


def shown_key(response) -> str:
    match = KEY_RE.search(response.content.decode())
    assert match, response.content.decode()[:2000]
    return match.group(1)


def register(client: Client, **fields) -> object:
    data = {"store": "store-a", "device_type": "terminal", "device_id": "", "label": ""}
    data.update(fields)
    return client.post("/dashboard/devices/", data)


# --- Register --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_registering_a_terminal_shows_its_key_once(client_a, store_a):
    response = register(client_a, device_id="TERM-9", label="Till 9")
    assert response.status_code == 200
    key = shown_key(response)
    assert "shown only this once" in response.content.decode()
    assert "no-store" in response["Cache-Control"]

    device = Device.objects.get(group=store_a.group, device_id="TERM-9")
    assert (device.device_type, device.label, device.is_active) == ("terminal", "Till 9", True)
    assert device_for_key(key=key) == device
    # Only its hash is stored, and the key is never shown again.
    assert device.key_hash == hash_key(key)
    assert key not in str(Device.objects.filter(pk=device.pk).values().get())
    again = client_a.get("/dashboard/devices/").content.decode()
    assert key not in again
    assert 'data-device-id="TERM-9"' in again


@pytest.mark.django_db
def test_registering_a_desktop_without_a_device_id(client_a, store_a):
    key = shown_key(register(client_a, device_type="desktop"))
    device = device_for_key(key=key)
    assert device.device_type == DeviceType.DESKTOP
    assert device.device_id is None
    assert device.group == store_a.group


@pytest.mark.django_db
def test_a_device_id_already_used_in_the_store_is_refused(client_a, store_a):
    before = Device.objects.count()
    response = register(client_a, device_id="TERM-1")
    page = response.content.decode()
    assert 'id="api-key"' not in page
    assert "store-a already has a device with this ID." in page
    assert Device.objects.count() == before


@pytest.mark.django_db
def test_a_device_cannot_be_registered_in_another_store(client_a, store_a, store_b):
    before = Device.objects.filter(group=store_b.group).count()
    response = register(client_a, store="store-b", device_id="SNEAKY")
    assert 'id="api-key"' not in response.content.decode()
    assert "Select a valid choice" in response.content.decode()
    assert Device.objects.filter(group=store_b.group).count() == before


@pytest.mark.django_db
def test_device_forms_need_the_csrf_token(alice, store_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert register(client, device_id="NO-CSRF").status_code == 403
    assert client.post(f"/dashboard/devices/{store_a.terminal.pk}/rotate/").status_code == 403
    assert client.post(f"/dashboard/devices/{store_a.terminal.pk}/deactivate/").status_code == 403
    assert not Device.objects.filter(device_id="NO-CSRF").exists()
    assert device_for_key(key=store_a.terminal_key) is not None


# --- Rotate and deactivate -------------------------------------------------------------------


@pytest.mark.django_db
def test_rotating_a_key_shows_the_new_one_once_and_the_old_one_stops_working(client_a, store_a):
    response = client_a.post(f"/dashboard/devices/{store_a.terminal.pk}/rotate/")
    assert response.status_code == 200
    new_key = shown_key(response)
    assert device_for_key(key=store_a.terminal_key) is None
    assert device_for_key(key=new_key).pk == store_a.terminal.pk
    assert new_key not in client_a.get("/dashboard/devices/").content.decode()


@pytest.mark.django_db
def test_deactivating_a_device_stops_its_key(client_a, store_a):
    response = client_a.post(f"/dashboard/devices/{store_a.terminal.pk}/deactivate/")
    assert response.status_code == 302
    assert device_for_key(key=store_a.terminal_key) is None
    page = client_a.get("/dashboard/devices/").content.decode()
    assert "is deactivated; its live connections were closed" in page
    assert 'data-status="deactivated">deactivated</span>' in page
    # A deactivated terminal is no longer on the terminals page.
    assert 'data-device-id="TERM-1"' not in client_a.get("/dashboard/").content.decode()


@pytest.mark.django_db
def test_another_stores_device_cannot_be_rotated_or_deactivated(client_a, store_b):
    target = store_b.terminal.pk
    assert client_a.post(f"/dashboard/devices/{target}/rotate/").status_code == 404
    assert client_a.post(f"/dashboard/devices/{target}/deactivate/").status_code == 404
    assert device_for_key(key=store_b.terminal_key).pk == target


@pytest.mark.django_db
def test_device_actions_are_posts_only(client_a, store_a):
    assert client_a.get(f"/dashboard/devices/{store_a.terminal.pk}/rotate/").status_code == 405
    assert client_a.get(f"/dashboard/devices/{store_a.terminal.pk}/deactivate/").status_code == 405
    assert device_for_key(key=store_a.terminal_key) is not None


@pytest.mark.django_db
def test_the_devices_page_lists_every_device_of_the_users_stores_only(client_a, store_a, store_b):
    page = client_a.get("/dashboard/devices/").content.decode()
    assert re.findall(r'<tr data-device-id="([^"]*)" data-store="([^"]+)"', page) == [
        ("POS-1", "store-a"),
        ("TERM-1", "store-a"),
    ]
    assert store_a.terminal.key_prefix in page
    assert store_a.terminal_key not in page


# --- Live connections are closed at once -------------------------------------------------------


async def _device_socket(ws_clients, key: str):
    comm = ws_clients("/ws/", [(b"authorization", f"Bearer {key}".encode())])
    accepted, _ = await comm.connect(timeout=5)
    assert accepted
    frame = await comm.receive_json_from(timeout=5)
    assert frame["action"] == "connected"
    return comm


async def _closed_with(comm) -> int:
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message.get("code")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["rotate", "deactivate"])
async def test_rotating_or_deactivating_closes_the_devices_live_connection(
    ws_clients, store_a, alice, action
):
    socket = await _device_socket(ws_clients, store_a.terminal_key)
    client = await sync_to_async(logged_in)(alice)
    response = await sync_to_async(client.post)(
        f"/dashboard/devices/{store_a.terminal.pk}/{action}/"
    )
    assert response.status_code in (200, 302)
    assert await _closed_with(socket) == 4403
    # The client answers the close (any code): the device shows offline, not reconnecting,
    # since a revoked key does not come back by itself.
    await socket.send_input({"type": "websocket.disconnect", "code": 1006})
    await socket.wait(timeout=5)
    terminal = await Device.objects.aget(pk=store_a.terminal.pk)
    assert terminal.status == DeviceStatus.OFFLINE
    # And the old key cannot come back.
    again = ws_clients("/ws/", [(b"authorization", f"Bearer {store_a.terminal_key}".encode())])
    await again.connect(timeout=5)
    refused = await again.receive_json_from(timeout=5)
    assert refused == {"error": "Unauthorized", "message": "A valid API key is required"}
    assert await _closed_with(again) == 4401
