"""The webhook REST endpoints (contract section 11): managers change, viewers read, another
store's objects are 404, the secret is shown once, and the schema lists them."""

from __future__ import annotations

import pytest

from terminals.services import staff_create_or_update
from tests.api.conftest import token_client
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _allow_local(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]


@pytest.fixture
def viewer_a(store_a):
    _user, token = staff_create_or_update(
        username="vera", group_slugs=[store_a.slug], role="viewer"
    )
    return token_client(type("U", (), {"api_token": token})())


URL = "http://127.0.0.1:9/hooks"


def create(api, **body):
    return api.post(
        "/api/webhook-endpoints/",
        {"group": "store-a", "url": URL, "events": ["*"], **body},
        format="json",
    )


def test_a_manager_creates_an_endpoint_and_sees_its_secret_once(api_a):
    answer = create(api_a, description="ERP")

    assert answer.status_code == 201
    body = answer.json()
    assert body["secret"].startswith("whsec_")
    assert len(__import__("base64").b64decode(body["secret"][6:])) >= 24
    assert {k: body[k] for k in ("group", "url", "events", "description", "active")} == {
        "group": "store-a",
        "url": URL,
        "events": ["*"],
        "description": "ERP",
        "active": True,
    }
    assert body["disabledReason"] == ""
    assert set(body) == {
        "id", "group", "url", "events", "description", "active", "createdAt",
        "disabledReason", "secret",
    }  # fmt: skip
    listed = api_a.get("/api/webhook-endpoints/").json()["results"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in api_a.get(f"/api/webhook-endpoints/{body['id']}/").json()


def test_refused_urls_and_event_types_answer_400_and_store_nothing(api_a, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    answer = create(api_a)
    assert answer.status_code == 400
    assert answer.json()["error"] == "Bad Request"
    assert "loopback, private, link-local or reserved" in answer.json()["message"]
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    assert (
        create(api_a, events=["payment.nope"])
        .json()["message"]
        .startswith("events: unknown event type 'payment.nope'")
    )
    assert create(api_a, events=[]).status_code == 400
    assert create(api_a, group="store-b").status_code == 400
    assert create(api_a, secret="whsec_mine").status_code == 400
    assert not WebhookEndpoint.objects.exists()


def test_a_viewer_reads_but_changes_nothing(api_a, viewer_a):
    endpoint = create(api_a).json()

    assert viewer_a.get("/api/webhook-endpoints/").json()["results"][0]["id"] == endpoint["id"]
    for answer in [
        create(viewer_a),
        viewer_a.patch(
            f"/api/webhook-endpoints/{endpoint['id']}/", {"active": False}, format="json"
        ),
        viewer_a.delete(f"/api/webhook-endpoints/{endpoint['id']}/"),
        viewer_a.post(f"/api/webhook-endpoints/{endpoint['id']}/rotate-secret/"),
        viewer_a.post(f"/api/webhook-endpoints/{endpoint['id']}/test/"),
    ]:
        assert answer.status_code == 403
        assert answer.json()["error"] == "Forbidden"
        assert answer.json()["message"] == "Only a manager of the store can manage its webhooks."
    assert WebhookEndpoint.objects.get().active is True
    assert not WebhookEvent.objects.filter(type="webhook.test").exists()


def test_another_stores_endpoint_and_events_are_404(api_a, api_b):
    endpoint = create(api_a).json()
    event = api_a.post(f"/api/webhook-endpoints/{endpoint['id']}/test/").json()

    assert api_b.get(f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 404
    assert (
        api_b.patch(f"/api/webhook-endpoints/{endpoint['id']}/", {}, format="json").status_code
        == 404
    )
    assert api_b.delete(f"/api/webhook-endpoints/{endpoint['id']}/").status_code == 404
    assert api_b.get(f"/api/webhook-events/{event['id']}/").status_code == 404
    assert api_b.post(f"/api/webhook-events/{event['id']}/redeliver/").status_code == 404
    assert api_b.get("/api/webhook-endpoints/").json()["results"] == []
    assert api_b.get("/api/webhook-events/").json()["results"] == []


def test_patch_rotate_test_and_delete(api_a):
    endpoint = create(api_a).json()
    url = f"/api/webhook-endpoints/{endpoint['id']}/"

    patched = api_a.patch(url, {"events": ["refund.succeeded"], "active": False}, format="json")
    assert patched.status_code == 200
    assert patched.json()["events"] == ["refund.succeeded"]
    assert patched.json()["disabledReason"] == "Deactivated by a manager"
    assert api_a.post(url + "test/").status_code == 409  # inactive
    assert api_a.patch(url, {"active": True}, format="json").json()["disabledReason"] == ""
    assert api_a.put(url, {}, format="json").status_code == 405

    rotated = api_a.post(url + "rotate-secret/").json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != endpoint["secret"]
    stored = WebhookEndpoint.objects.get()
    assert services.signing_secrets(stored) == [rotated["secret"], endpoint["secret"]]

    tested = api_a.post(url + "test/")
    assert tested.status_code == 202
    assert tested.json()["type"] == "webhook.test"
    assert tested.json()["id"].startswith("evt_")

    assert api_a.delete(url).status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_events_list_filters_and_detail_with_deliveries(api_a, store_a):
    endpoint = create(api_a).json()
    test_event = api_a.post(f"/api/webhook-endpoints/{endpoint['id']}/test/").json()
    services.event_record(
        group_id=store_a.group.pk, type="terminal.offline", subject_pk=store_a.terminal.pk
    )
    services.events_dispatch(render=lambda e: '{"data":{}}')

    listed = api_a.get("/api/webhook-events/").json()["results"]
    assert [e["type"] for e in listed] == ["terminal.offline", "webhook.test"]
    assert set(listed[0]) == {"id", "type", "group", "createdAt"}
    only = api_a.get("/api/webhook-events/?type=webhook.test").json()["results"]
    assert [e["id"] for e in only] == [test_event["id"]]
    assert api_a.get("/api/webhook-events/?created_after=2999-01-01").json()["results"] == []
    assert len(api_a.get("/api/webhook-events/?created_before=2999-01-01").json()["results"]) == 2
    assert api_a.get("/api/webhook-events/?created_after=yesterday").status_code == 400
    assert api_a.get("/api/webhook-events/?type=nope").status_code == 400

    detail = api_a.get(f"/api/webhook-events/{test_event['id']}/").json()
    assert detail["deliveries"] == [
        {
            "endpoint": endpoint["id"],
            "attempt": 1,
            "status": "pending",
            "httpStatus": None,
            "durationMs": None,
            "error": "",
            "attemptedAt": None,
            "nextAttemptAt": detail["deliveries"][0]["nextAttemptAt"],
        }
    ]
    WebhookDelivery.objects.update(status="failed", attempts=12)
    again = api_a.post(f"/api/webhook-events/{test_event['id']}/redeliver/")
    assert again.status_code == 202
    assert again.json()["deliveries"][-1]["status"] == "pending"
    assert again.json()["deliveries"][-1]["attempt"] == 13


def test_the_schema_lists_the_webhook_endpoints(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/webhook-endpoints/"])
    assert {"get", "patch", "delete"} <= set(paths["/api/webhook-endpoints/{id}/"])
    assert "put" not in paths["/api/webhook-endpoints/{id}/"]
    assert "post" in paths["/api/webhook-endpoints/{id}/rotate-secret/"]
    assert "post" in paths["/api/webhook-endpoints/{id}/test/"]
    assert "get" in paths["/api/webhook-events/"]
    assert "get" in paths["/api/webhook-events/{event_id}/"]
    assert "post" in paths["/api/webhook-events/{event_id}/redeliver/"]
