"""/api/schema/ and /api/docs/: public, complete, valid OpenAPI 3, and a docs UI with no CDN."""

from __future__ import annotations

import re

import pytest
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

# Every endpoint that reads (GET), and every one that writes with its method
# (tests/api/test_schemathesis.py fuzzes each one).
ENDPOINTS = [
    "/api/groups/",
    "/api/groups/{slug}/",
    "/api/terminals/",
    "/api/terminals/{id}/",
    "/api/devices/",
    "/api/devices/{id}/",
    "/api/transactions/",
    "/api/transactions/{transaction_id}/",
    "/api/transactions/export/",
    "/api/reports/daily/",
    "/api/reports/daily/export/",
    "/api/sessions/",
    "/api/sessions/{id}/",
    "/api/terminal-requests/",
    "/api/terminal-requests/{id}/",
    "/api/webhook-events/",
    "/api/webhook-events/{event_id}/",
]
WRITES = {"/api/transactions/{transaction_id}/refunds/": "post"}
# The webhook endpoints (contract section 11): paths with their methods, reads among them.
WEBHOOKS = {
    "/api/webhook-endpoints/": {"get", "post"},
    "/api/webhook-endpoints/{id}/": {"get", "patch", "delete"},
    "/api/webhook-endpoints/{id}/rotate-secret/": {"post"},
    "/api/webhook-endpoints/{id}/test/": {"post"},
    "/api/webhook-events/{event_id}/redeliver/": {"post"},
}

TRANSACTION_FILTERS = {
    "store",
    "type",
    "status",
    "terminal",
    "desktop",
    "currency",
    "created_after",
    "created_before",
    "amount_min",
    "amount_max",
    "date_from",
    "date_to",
    "search",
    "ordering",
}


@pytest.fixture
def schema() -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def params(schema: dict, path: str) -> set[str]:
    return {p["name"] for p in schema["paths"][path]["get"].get("parameters", [])}


def test_schema_is_public_and_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_schema_lists_every_endpoint(schema):
    assert set(schema["paths"]) == set(ENDPOINTS) | set(WRITES) | set(WEBHOOKS)
    # Reads are GET only; the refund is POST only; the webhooks' as the contract lists them.
    for path, operations in schema["paths"].items():
        assert set(operations) == WEBHOOKS.get(path, {WRITES.get(path, "get")}), path


def test_every_filter_of_the_contract_is_documented(schema):
    assert TRANSACTION_FILTERS | {"cursor", "page_size"} <= params(schema, "/api/transactions/")
    assert params(schema, "/api/transactions/export/") >= TRANSACTION_FILTERS
    assert {"store", "date_from", "date_to"} <= params(schema, "/api/reports/daily/")
    assert {"store", "date_from", "date_to"} <= params(schema, "/api/reports/daily/export/")
    assert {"store", "status", "page", "page_size"} <= params(schema, "/api/terminals/")
    assert {"store", "type", "status", "is_active"} <= params(schema, "/api/devices/")
    assert {
        "store",
        "group",
        "terminal",
        "desktop",
        "status",
        "session_id",
        "created_after",
        "created_before",
        "ordering",
        "page",
        "page_size",
    } <= params(schema, "/api/sessions/")
    assert {
        "store",
        "group",
        "terminal",
        "desktop",
        "type",
        "input_type",
        "status",
        "session",
        "request_id",
        "created_after",
        "created_before",
        "ordering",
        "page",
        "page_size",
    } <= params(schema, "/api/terminal-requests/")


def test_every_error_is_documented_in_the_one_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert {"error", "message"} <= set(error["required"])
    for path, operations in schema["paths"].items():
        if path in WEBHOOKS:
            for method, operation in operations.items():
                responses = operation["responses"]
                assert {"401", "429"} <= set(responses), (path, method)
                if method != "get":
                    assert "403" in responses, (path, method)
                if "{" in path:
                    assert "404" in responses, (path, method)
                for code in (code for code in responses if code >= "400"):
                    ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (path, method, code)
            continue
        if path in WRITES:
            responses = operations[WRITES[path]]["responses"]
            expected = {"200", "202", "400", "401", "403", "404", "409", "429"}
            assert responses["202"]["content"]["application/json"]["schema"]["$ref"] == (
                "#/components/schemas/Transaction"
            )
        else:
            responses = operations["get"]["responses"]
            expected = {"200", "401", "429"}
            expected |= {"404"} if "{" in path else {"400"}
        assert expected <= set(responses), path
        for code in {code for code in expected if code >= "400"}:
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref in ("#/components/schemas/Error", "#/components/schemas/RefundError")


def test_exports_are_documented_as_csv(schema):
    for path in ("/api/transactions/export/", "/api/reports/daily/export/"):
        assert "text/csv" in schema["paths"][path]["get"]["responses"]["200"]["content"]


def test_token_and_session_auth_are_documented(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"]["name"] == "Authorization"
    assert schemes["cookieAuth"]["in"] == "cookie"


def test_docs_ui_works_offline_with_assets_served_locally():
    client = APIClient()
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"https?://", html), "the docs page must not load anything remote"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    # Swagger UI's start-up script is the page's own second request (no inline script under
    # the Content-Security-Policy); everything else comes from /static/.
    assert "/api/docs/?script=" in assets
    for asset in assets:
        assert asset.startswith("/static/") or asset == "/api/docs/?script=", asset
        response = client.get(asset)
        assert response.status_code == 200, asset
        content = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(content) > 0
        assert not re.search(rb"https?://", content) or asset.startswith("/static/"), asset
    script = client.get("/api/docs/?script=")
    assert "javascript" in script["Content-Type"]
    assert b'url: "/api/schema/"' in script.content


def test_schema_generates_without_a_warning(tmp_path):
    """drf-spectacular warns about anything it had to guess: nothing is left to guess."""
    from django.core.management import call_command

    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )

    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3")
