"""Device management from the dashboard: register (key shown once), rotate, deactivate."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from terminals.models import Device, DeviceStatus, DeviceType, Membership, hash_key
from terminals.selectors import device_for_key
from terminals.services import staff_create_or_update
from tests.dashboard.conftest import PASSWORD, logged_in, staff

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


# --- Roles: only a store's managers change its devices (contract section 8) -----------------


def _viewer(username: str, *slugs: str):
    user, _ = staff_create_or_update(
        username=username, group_slugs=slugs, password=PASSWORD, role="viewer"
    )
    return user


@pytest.fixture
def vera(store_a):
    """A viewer of store-a."""
    return _viewer("vera", store_a.slug)


def _csrf_client(user) -> tuple[Client, str]:
    """A browser that checks CSRF, logged in, with the token its pages hand it."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/dashboard/devices/").status_code == 200
    return client, client.cookies["csrftoken"].value


def _refused(response) -> dict:
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "Forbidden"
    assert body["message"].startswith("Only a manager of the store can")
    return body


def _unchanged(store) -> None:
    assert device_for_key(key=store.terminal_key).pk == store.terminal.pk
    assert Device.objects.filter(group=store.group).count() == 2
    assert Device.objects.filter(group=store.group, is_active=False).count() == 0


@pytest.mark.django_db
def test_a_viewer_sees_the_devices_but_no_register_form_and_no_buttons(vera, store_a):
    client = logged_in(vera)
    for response in (
        client.get("/dashboard/devices/"),
        client.get("/dashboard/devices/", headers={"X-Fragment": "1"}),
    ):
        page = response.content.decode()
        assert 'data-device-id="TERM-1"' in page
        assert "view only" in page
        assert "Rotate key" not in page
        assert "Deactivate</button>" not in page
        assert "/rotate/" not in page
        assert "/deactivate/" not in page
    whole = client.get("/dashboard/devices/").content.decode()
    assert "Register a device" not in whole
    assert 'name="device_type"' not in whole


@pytest.mark.django_db
def test_a_managers_page_offers_the_form_and_the_buttons(client_a, store_a):
    page = client_a.get("/dashboard/devices/").content.decode()
    assert "Register a device" in page
    assert f"/dashboard/devices/{store_a.terminal.pk}/rotate/" in page
    assert f"/dashboard/devices/{store_a.terminal.pk}/deactivate/" in page
    assert "view only" not in page


@pytest.mark.django_db
def test_a_viewers_forged_posts_with_a_valid_csrf_token_get_403_json_and_change_nothing(
    vera, store_a
):
    client, token = _csrf_client(vera)
    target = store_a.terminal.pk

    _refused(register(client, device_id="FORGED", csrfmiddlewaretoken=token))
    _refused(client.post(f"/dashboard/devices/{target}/rotate/", {"csrfmiddlewaretoken": token}))
    body = _refused(
        client.post(f"/dashboard/devices/{target}/deactivate/", {"csrfmiddlewaretoken": token})
    )

    assert body == {
        "error": "Forbidden",
        "message": "Only a manager of the store can register, re-key or deactivate its devices.",
    }
    _unchanged(store_a)
    assert not Device.objects.filter(device_id="FORGED").exists()


@pytest.mark.django_db
def test_a_viewer_posting_another_stores_slug_is_refused_too(vera, store_a, store_b):
    client, token = _csrf_client(vera)
    _refused(register(client, store="store-b", device_id="FORGED", csrfmiddlewaretoken=token))
    _unchanged(store_b)


@pytest.mark.django_db
def test_a_manager_of_one_store_and_viewer_of_another_changes_only_the_first(store_a, store_b):
    alice = staff("alice", store_a.slug)
    Membership.objects.create(user=alice, group=store_b.group, role="viewer")
    client, token = _csrf_client(alice)

    page = client.get("/dashboard/devices/").content.decode()
    assert f"/dashboard/devices/{store_a.terminal.pk}/rotate/" in page
    assert f"/dashboard/devices/{store_b.terminal.pk}/rotate/" not in page
    assert '<option value="store-b"' not in page  # the form offers only the managed store

    _refused(register(client, store="store-b", device_id="B-9", csrfmiddlewaretoken=token))
    _refused(
        client.post(
            f"/dashboard/devices/{store_b.terminal.pk}/rotate/", {"csrfmiddlewaretoken": token}
        )
    )
    _unchanged(store_b)

    registered = register(client, store="store-a", device_id="A-9", csrfmiddlewaretoken=token)
    assert device_for_key(key=shown_key(registered)).group == store_a.group
    rotated = client.post(
        f"/dashboard/devices/{store_a.terminal.pk}/rotate/", {"csrfmiddlewaretoken": token}
    )
    assert device_for_key(key=shown_key(rotated)).pk == store_a.terminal.pk


@pytest.mark.django_db
def test_a_manager_of_another_store_gets_the_answer_of_a_missing_device(client_b, store_a):
    # Another store's device is not one of the user's: 404, as everywhere (docs/security.md).
    target = store_a.terminal.pk
    assert client_b.post(f"/dashboard/devices/{target}/rotate/").status_code == 404
    assert client_b.post(f"/dashboard/devices/{target}/deactivate/").status_code == 404
    response = register(client_b, store="store-a", device_id="SNEAKY")
    assert "Select a valid choice" in response.content.decode()
    _unchanged(store_a)


@pytest.mark.django_db
def test_a_superuser_manages_the_devices_of_every_store(root, store_a, store_b):
    client = logged_in(root)
    page = client.get("/dashboard/devices/").content.decode()
    assert "Register a device" in page
    assert "view only" not in page
    for store in (store_a, store_b):
        rotated = client.post(f"/dashboard/devices/{store.terminal.pk}/rotate/")
        assert device_for_key(key=shown_key(rotated)).pk == store.terminal.pk
    registered = register(client, store="store-b", device_id="ROOT-1")
    assert device_for_key(key=shown_key(registered)).group == store_b.group
