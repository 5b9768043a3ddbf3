"""The Django admin for every model: lists without N+1, financial records read-only."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payments.models import DesktopMessage, Transaction, TransactionEvent
from sessions.models import TerminalRequest, TerminalSession
from terminals.models import Connection, Device, DeviceType, Group, Membership
from terminals.selectors import device_for_key, role_of
from terminals.services import staff_create_or_update
from tests.dashboard.conftest import logged_in, make_payment
from tests.dashboard.test_consumers import device, live_dashboard, next_of_type
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


# --- Devices: added, re-keyed and deactivated through the services ---------------------------

KEY_RE = re.compile(r'<code class="api-key">([^<]+)</code>')


def _post(client, url: str, data: dict):
    response = client.post(url, data)
    cookies = " ".join(morsel.value for morsel in client.cookies.values())
    return response, cookies


def _shown_keys(response) -> list[str]:
    assert response.status_code == 200, response.status_code
    assert "no-store" in response["Cache-Control"]
    keys = KEY_RE.findall(response.content.decode())
    assert keys, response.content.decode()[:2000]
    return keys


async def _refused(ws_clients, key: str) -> None:
    again = ws_clients("/ws/", [(b"authorization", f"Bearer {key}".encode())])
    await again.connect(timeout=5)
    refused = await again.receive_json_from(timeout=5)
    assert refused == {"error": "Unauthorized", "message": "A valid API key is required"}


async def _closed_with(comm) -> int:
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    return message.get("code")


@pytest.mark.django_db(transaction=True)
async def test_adding_a_device_shows_its_key_once_and_the_store_hears_of_it(
    ws_clients, root, alice, store_a
):
    watching = await live_dashboard(ws_clients, alice)
    client = await sync_to_async(logged_in)(root)
    assert (await sync_to_async(client.get)("/admin/terminals/device/add/")).status_code == 200
    data = {
        "group": store_a.group.pk,
        "device_type": "terminal",
        "device_id": "ADM-NEW",
        "label": "Added in the admin",
        "metadata": "{}",
    }
    response, cookies = await sync_to_async(_post)(client, "/admin/terminals/device/add/", data)
    [key] = _shown_keys(response)
    page = response.content.decode()
    assert page.count(key) == 1
    assert "shown only this once" in page
    assert key not in cookies  # not through messages, whose storage is a cookie

    event = await next_of_type(watching, "device", deviceId="ADM-NEW")
    assert (event["deviceType"], event["active"]) == ("terminal", True)
    added = await sync_to_async(Device.objects.get)(group=store_a.group, device_id="ADM-NEW")
    assert await sync_to_async(device_for_key)(key=key) == added
    assert await device(ws_clients, key)  # connects with it
    for url in ("/admin/terminals/device/", f"/admin/terminals/device/{added.pk}/change/"):
        later = await sync_to_async(client.get)(url)
        assert key not in later.content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["rotate_key", "deactivate"])
async def test_rotating_or_deactivating_in_the_admin_stops_the_old_key_and_its_socket(
    ws_clients, root, alice, store_a, action
):
    watching = await live_dashboard(ws_clients, alice)
    socket = await device(ws_clients, store_a.terminal_key)
    await next_of_type(watching, "device", deviceId="TERM-1", status="online")
    client = await sync_to_async(logged_in)(root)
    data = {"action": action, "_selected_action": [store_a.terminal.pk], "index": 0}
    response, cookies = await sync_to_async(_post)(client, "/admin/terminals/device/", data)

    assert await _closed_with(socket) == 4403
    await _refused(ws_clients, store_a.terminal_key)
    if action == "rotate_key":
        [key] = _shown_keys(response)
        assert key not in cookies
        assert await sync_to_async(device_for_key)(key=key) == store_a.terminal
        assert await device(ws_clients, key)
    else:
        assert response.status_code == 302
        assert not KEY_RE.search(response.content.decode())
        event = await next_of_type(watching, "device", deviceId="TERM-1", active=False)
        assert event["type"] == "device"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["page", "action"])
async def test_deleting_a_device_in_the_admin_closes_its_socket(ws_clients, root, store_a, how):
    socket = await device(ws_clients, store_a.terminal_key)
    client = await sync_to_async(logged_in)(root)
    pk = store_a.terminal.pk
    if how == "page":
        url, data = f"/admin/terminals/device/{pk}/delete/", {"post": "yes"}
    else:
        url = "/admin/terminals/device/"
        data = {"action": "delete_selected", "_selected_action": [pk], "post": "yes"}
    response, _ = await sync_to_async(_post)(client, url, data)
    assert response.status_code == 302
    assert await _closed_with(socket) == 4403
    assert not await Device.objects.filter(pk=pk).aexists()
    await _refused(ws_clients, store_a.terminal_key)


@pytest.mark.django_db
def test_a_device_with_payments_cannot_be_deleted_in_the_admin(root, store_a):
    """Its payments are the store's books: the admin says so and deletes nothing."""
    make_payment(store_a, "KEEP-1")
    client = logged_in(root)
    pk = store_a.terminal.pk
    response = client.post(f"/admin/terminals/device/{pk}/delete/", {"post": "yes"})
    assert "<title>Cannot delete device" in response.content.decode()
    assert Device.objects.filter(pk=pk).exists()
    assert Transaction.objects.filter(transaction_id="KEEP-1").exists()


@pytest.mark.django_db(transaction=True)
async def test_a_deactivated_device_reactivated_in_the_admin_connects_with_its_key(
    ws_clients, root, store_a
):
    client = await sync_to_async(logged_in)(root)
    pk = store_a.terminal.pk
    for action in ("deactivate", "reactivate"):
        data = {"action": action, "_selected_action": [pk], "index": 0}
        response, _ = await sync_to_async(_post)(client, "/admin/terminals/device/", data)
        assert response.status_code == 302
        if action == "deactivate":
            await _refused(ws_clients, store_a.terminal_key)
    assert (await Device.objects.aget(pk=pk)).is_active
    assert await device(ws_clients, store_a.terminal_key)


# --- Roles: staff given admin rights work within their stores and roles (contract section 8) --

DEVICE_PERMISSIONS = ["view_device", "add_device", "change_device", "delete_device"]
DEVICES = "/admin/terminals/device/"


def _with_admin_rights(user, *codenames: str):
    """What an operator would grant a staff user in the admin: the models' permissions."""
    codenames = codenames or (*DEVICE_PERMISSIONS, "view_group", "change_group")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer_a(store_a):
    user, _ = staff_create_or_update(username="vera", group_slugs=[store_a.slug], role="viewer")
    return _with_admin_rights(user)


@pytest.fixture
def manager_a(alice):
    return _with_admin_rights(alice)


def _label(device) -> str:
    device.refresh_from_db()
    return device.label


def _change_data(device, label: str) -> dict:
    return {"device_id": device.device_id, "label": label, "metadata": "{}"}


def test_an_admin_viewer_sees_their_stores_devices_read_only(viewer_a, store_a, store_b):
    client = logged_in(viewer_a)

    listing = client.get(DEVICES)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert f"/admin/terminals/device/{store_a.terminal.pk}/change/" in html
    assert f"/admin/terminals/device/{store_b.terminal.pk}/change/" not in html
    assert "Add device" not in html
    assert "Rotate the API key" not in html  # no actions offered
    assert "Delete selected" not in html

    page = client.get(f"{DEVICES}{store_a.terminal.pk}/change/")
    assert page.status_code == 200
    assert 'name="label"' not in page.content.decode()  # shown, not editable
    assert 'name="_save"' not in page.content.decode()


def test_an_admin_viewers_changes_are_refused_and_change_nothing(viewer_a, store_a):
    client = logged_in(viewer_a)
    terminal = store_a.terminal

    refused = client.post(f"{DEVICES}{terminal.pk}/change/", _change_data(terminal, "X"))
    assert refused.status_code == 403
    assert _label(terminal) == "Counter 1"
    assert client.get(f"{DEVICES}add/").status_code == 403
    assert client.post(f"{DEVICES}{terminal.pk}/delete/", {"post": "yes"}).status_code == 403
    for action in ("rotate_key", "deactivate", "delete_selected"):
        client.post(DEVICES, {"action": action, "_selected_action": [terminal.pk], "post": "yes"})
    assert device_for_key(key=store_a.terminal_key) == terminal
    assert Device.objects.filter(group=store_a.group).count() == 2


def test_an_admin_manager_changes_their_stores_devices_and_no_others(manager_a, store_a, store_b):
    client = logged_in(manager_a)
    terminal = store_a.terminal

    saved = client.post(f"{DEVICES}{terminal.pk}/change/", _change_data(terminal, "Till 7"))
    assert saved.status_code == 302
    assert _label(terminal) == "Till 7"
    rotated = client.post(DEVICES, {"action": "rotate_key", "_selected_action": [terminal.pk]})
    assert device_for_key(key=_shown_keys(rotated)[0]) == terminal
    # Another store's device is not there at all.
    other = client.get(f"{DEVICES}{store_b.terminal.pk}/change/")
    assert other.status_code == 302  # to the admin index: "doesn't exist"
    client.post(DEVICES, {"action": "deactivate", "_selected_action": [store_b.terminal.pk]})
    assert device_for_key(key=store_b.terminal_key) == store_b.terminal
    # A new device can only go to the store they manage.
    form = client.get(f"{DEVICES}add/").content.decode()
    assert f'<option value="{store_a.group.pk}"' in form
    assert f'<option value="{store_b.group.pk}"' not in form


def test_an_admin_manager_of_one_store_and_viewer_of_another(manager_a, store_a, store_b):
    Membership.objects.create(user=manager_a, group=store_b.group, role="viewer")
    client = logged_in(manager_a)

    page = client.get(f"{DEVICES}{store_b.terminal.pk}/change/").content.decode()
    assert 'name="label"' not in page
    client.post(f"{DEVICES}{store_b.terminal.pk}/change/", _change_data(store_b.terminal, "X"))
    assert _label(store_b.terminal) == "Counter 1"

    both = [store_a.terminal.pk, store_b.terminal.pk]
    response = client.post(DEVICES, {"action": "deactivate", "_selected_action": both})
    assert response.status_code == 302
    assert device_for_key(key=store_a.terminal_key) is None
    assert device_for_key(key=store_b.terminal_key) == store_b.terminal
    listing = client.get(DEVICES).content.decode()
    assert "1 selected row left alone: only a manager of the store can deactivate" in listing


def test_a_superuser_sets_a_members_role_in_the_stores_page(root, alice, store_a):
    client = logged_in(root)
    url = f"/admin/terminals/group/{store_a.group.pk}/change/"
    page = client.get(url).content.decode()
    assert "memberships-0-role" in page
    membership = Membership.objects.get(user=alice, group=store_a.group)
    data = {
        "slug": store_a.slug,
        "name": store_a.group.name,
        "timezone": "UTC",
        "memberships-TOTAL_FORMS": "1",
        "memberships-INITIAL_FORMS": "1",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
        "memberships-0-id": membership.pk,
        "memberships-0-group": store_a.group.pk,
        "memberships-0-user": alice.pk,
        "memberships-0-role": "viewer",
    }

    assert client.post(url, data).status_code == 302

    assert role_of(alice, store_a.group.pk) == "viewer"


def test_only_superusers_see_or_edit_memberships(manager_a, store_a, store_b):
    client = logged_in(manager_a)
    page = client.get(f"/admin/terminals/group/{store_a.group.pk}/change/")
    assert page.status_code == 200
    assert "memberships-0-role" not in page.content.decode()
    stores = client.get("/admin/terminals/group/").content.decode()
    assert f"/admin/terminals/group/{store_b.group.pk}/change/" not in stores


# --- For operators: managers are sent to the dashboard, nothing to edit offers no Save ---------


def test_a_staff_manager_without_admin_rights_is_sent_to_the_dashboard(client_a):
    response = client_a.get("/admin/", follow=True)

    assert response.redirect_chain[0] == ("/dashboard/", 302)
    assert "The admin is for operators" in response.content.decode()


def test_a_superuser_gets_the_admin_index(root):
    response = logged_in(root).get("/admin/")
    assert response.status_code == 200
    assert "Site administration" in response.content.decode()


def test_a_page_with_nothing_to_edit_offers_no_save_and_times_show_seconds(root, store_a, run):
    txn = run.paid(store_a, "ADM-NOSAVE")
    event = TransactionEvent.objects.filter(transaction=txn).first()
    client = logged_in(root)

    payment = client.get(f"/admin/payments/transaction/{txn.pk}/change/").content.decode()
    record = client.get(f"/admin/payments/transactionevent/{event.pk}/change/").content.decode()
    device = client.get(f"/admin/terminals/device/{store_a.terminal.pk}/change/").content.decode()

    for html in (payment, record):
        assert 'name="_save"' not in html
        assert 'name="_continue"' not in html
    assert 'name="_save"' in device  # its label can be edited
    created = txn.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert created in payment
