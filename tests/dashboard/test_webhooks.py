"""/dashboard/webhooks/: managers add endpoints (the secret shown once), test, rotate,
deactivate and redeliver; viewers see the page without the buttons and are refused 403."""

from __future__ import annotations

import pytest
from django.test import Client

from terminals.services import staff_create_or_update
from tests.factories import STAFF_PASSWORD, Store, make_staff
from webhooks import services
from webhooks.models import WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _allow_local(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def store():
    return Store("store-a")


def login(username: str) -> Client:
    client = Client()
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username=username))
    return client


@pytest.fixture
def manager(store):
    make_staff("mia", store.slug)
    return login("mia")


@pytest.fixture
def viewer(store):
    staff_create_or_update(
        username="vic", group_slugs=[store.slug], role="viewer", password=STAFF_PASSWORD
    )
    return login("vic")


def test_a_manager_adds_an_endpoint_and_sees_the_secret_once(manager):
    page = manager.post(
        "/dashboard/webhooks/",
        {"store": "store-a", "url": "http://127.0.0.1:9/in", "events": ["*"], "description": "ERP"},
    )

    assert page.status_code == 200
    secret = page.context["new_secret"]["secret"]
    assert secret.startswith("whsec_")
    assert secret in page.content.decode()
    assert services.signing_secrets(WebhookEndpoint.objects.get()) == [secret]
    again = manager.get("/dashboard/webhooks/").content.decode()
    assert secret not in again
    assert "http://127.0.0.1:9/in" in again
    assert "Send test" in again


def test_a_refused_url_is_a_form_error_and_stores_nothing(manager, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    page = manager.post(
        "/dashboard/webhooks/", {"store": "store-a", "url": "http://127.0.0.1:9/", "events": ["*"]}
    )
    assert page.status_code == 200
    assert "loopback, private, link-local or reserved" in page.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_test_rotate_deactivate_and_redeliver(manager, store):
    endpoint, old = services.endpoint_create(
        group_id=store.group.pk, url="http://127.0.0.1:9/in", events=["*"]
    )
    base = f"/dashboard/webhooks/{endpoint.pk}/"

    assert manager.post(base + "test/").status_code == 302
    event = WebhookEvent.objects.get(type="webhook.test")
    services.events_dispatch(render=lambda e: "{}")
    page = manager.get("/dashboard/webhooks/").content.decode()
    assert event.event_id in page
    assert 'data-status="pending"' in page

    rotated = manager.post(base + "rotate/")
    new = rotated.context["new_secret"]["secret"]
    assert services.signing_secrets(WebhookEndpoint.objects.get()) == [new, old]

    assert (
        manager.post(f"/dashboard/webhooks/events/{event.event_id}/redeliver/").status_code == 302
    )

    assert manager.post(base + "deactivate/").status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.active is False
    assert endpoint.disabled_reason == "Deactivated by a manager"


def test_a_viewer_sees_the_page_read_only_and_is_refused_changes(viewer, store):
    endpoint, _ = services.endpoint_create(
        group_id=store.group.pk, url="http://127.0.0.1:9/in", events=["*"]
    )
    page = viewer.get("/dashboard/webhooks/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "http://127.0.0.1:9/in" in html
    assert "view only" in html
    assert "Send test" not in html
    assert "Add an endpoint" not in html
    for url in [
        f"/dashboard/webhooks/{endpoint.pk}/test/",
        f"/dashboard/webhooks/{endpoint.pk}/rotate/",
        f"/dashboard/webhooks/{endpoint.pk}/deactivate/",
    ]:
        answer = viewer.post(url)
        assert answer.status_code == 403
        assert answer.json()["error"] == "Forbidden"
    answer = viewer.post(
        "/dashboard/webhooks/", {"store": "store-a", "url": "http://127.0.0.1:9/", "events": ["*"]}
    )
    assert answer.status_code == 403
    assert WebhookEndpoint.objects.get().active is True
    assert not WebhookEvent.objects.filter(type="webhook.test").exists()


def test_another_stores_endpoint_is_404(manager):
    other = Store("store-b")
    endpoint, _ = services.endpoint_create(
        group_id=other.group.pk, url="http://127.0.0.1:9/b", events=["*"]
    )
    assert manager.post(f"/dashboard/webhooks/{endpoint.pk}/test/").status_code == 404
    assert "http://127.0.0.1:9/b" not in manager.get("/dashboard/webhooks/").content.decode()
