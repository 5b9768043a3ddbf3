"""Who may read what: tokens and sessions, anonymous 401, and the wall between two stores."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from tests.api.conftest import make_payment, token_client

pytestmark = pytest.mark.django_db

LIST_URLS = [
    "/api/groups/",
    "/api/terminals/",
    "/api/devices/",
    "/api/transactions/",
    "/api/transactions/export/",
    "/api/reports/daily/",
    "/api/reports/daily/export/",
]


def csv_rows(response) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("url", [*LIST_URLS, "/api/transactions/T-1/", "/api/groups/store-a/"])
def test_anonymous_request_is_401_with_token_challenge(store_a, url):
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": "Unauthorized",
        "message": "Authentication credentials were not provided.",
    }


def test_wrong_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get("/api/transactions/")

    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


def test_token_of_a_deactivated_user_is_refused(staff_a, api_a):
    staff_a.is_active = False
    staff_a.save()

    assert api_a.get("/api/groups/").status_code == 401


def test_session_login_reads_the_api(staff_a, store_a):
    make_payment(store_a, "SESSION-1")
    client = APIClient()
    login = client.post(
        "/accounts/login/", {"username": "alice", "password": "correct horse battery"}
    )
    assert login.status_code == 302

    response = client.get("/api/transactions/")

    assert response.status_code == 200
    assert [t["transactionId"] for t in response.json()["results"]] == ["SESSION-1"]


def test_token_from_create_staff_reads_the_api(store_a):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("create_staff", "carol", "--group", store_a.slug, stdout=out, stderr=io.StringIO())
    token = out.getvalue().strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = client.get("/api/groups/")

    assert response.status_code == 200
    assert [g["slug"] for g in response.json()["results"]] == [store_a.slug]


def _drf_create_token(*args: str) -> str:
    """DRF's own command, as docs/api.md shows it; returns the token it printed."""
    from django.core.management import call_command

    out = io.StringIO()
    call_command("drf_create_token", *args, stdout=out, stderr=io.StringIO())
    printed = re.fullmatch(r"Generated token (\w+) for user (\S+)", out.getvalue().strip())
    assert printed, out.getvalue()
    assert printed.group(2) == args[0]
    return printed.group(1)


def test_token_from_drf_create_token_reads_the_api_in_its_users_stores(staff_a, store_a, store_b):
    make_payment(store_b, "THEIRS-1")
    # Tokens are stored as digests: only a new one can be printed, so alice's is replaced.
    token = _drf_create_token("alice", "-r")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = client.get("/api/groups/")

    assert response.status_code == 200
    assert [g["slug"] for g in response.json()["results"]] == [store_a.slug]
    assert client.get("/api/transactions/THEIRS-1/").status_code == 404

    # -r replaces it: the old token stops working at once.
    replaced = _drf_create_token("alice", "-r")
    assert replaced != token
    assert client.get("/api/groups/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {replaced}")
    assert client.get("/api/groups/").status_code == 200


def test_a_user_who_is_not_staff_sees_no_store(store_a):
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_user("mallory", password="pw-12345678")
    store_a.group.members.add(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    make_payment(store_a)

    assert client.get("/api/groups/").json()["results"] == []
    assert client.get("/api/transactions/").json()["results"] == []


# --- Two stores ----------------------------------------------------------------------------


@pytest.fixture
def two_stores(store_a, store_b):
    make_payment(store_a, "A-1", amount="11.00")
    make_payment(store_b, "B-1", amount="22.00")
    return store_a, store_b


def test_each_member_lists_only_their_own_store(two_stores, api_a, api_b):
    store_a, store_b = two_stores
    for client, store in ((api_a, store_a), (api_b, store_b)):
        groups = client.get("/api/groups/").json()["results"]
        terminals = client.get("/api/terminals/").json()["results"]
        devices = client.get("/api/devices/").json()["results"]
        payments = client.get("/api/transactions/").json()["results"]

        assert [g["slug"] for g in groups] == [store.slug]
        assert {t["store"] for t in terminals} == {store.slug}
        assert {d["store"] for d in devices} == {store.slug}
        assert {p["store"] for p in payments} == {store.slug}


def test_another_stores_objects_answer_404_like_missing_ones(two_stores, api_a):
    _, store_b = two_stores
    foreign = [
        "/api/transactions/B-1/",
        f"/api/groups/{store_b.slug}/",
        f"/api/terminals/{store_b.terminal.pk}/",
        f"/api/devices/{store_b.desktop.pk}/",
    ]
    missing = [
        "/api/transactions/NO-SUCH/",
        "/api/groups/no-such-store/",
        "/api/terminals/999999/",
        "/api/devices/999999/",
    ]
    for foreign_url, missing_url in zip(foreign, missing, strict=True):
        answer = api_a.get(foreign_url)
        assert answer.status_code == 404, foreign_url
        assert answer.json()["error"] == "Not Found"
        # No hint that the other store's object exists.
        assert answer.json()["message"] == api_a.get(missing_url).json()["message"]


def test_another_stores_transaction_id_is_not_found_even_with_its_store_named(two_stores, api_a):
    _, store_b = two_stores

    response = api_a.get(f"/api/transactions/B-1/?store={store_b.slug}")

    assert response.status_code == 404
    assert response.json() == {
        "error": "Not Found",
        "message": "Transaction not found",
        "transactionId": "B-1",
    }


def test_export_holds_only_the_members_store(two_stores, api_a):
    rows = csv_rows(api_a.get("/api/transactions/export/"))

    assert [(r["transactionId"], r["store"]) for r in rows] == [("A-1", "store-a")]


def test_daily_totals_hold_only_the_members_store(two_stores, api_a):
    report = api_a.get("/api/reports/daily/").json()
    exported = csv_rows(api_a.get("/api/reports/daily/export/"))

    assert [(r["store"], r["succeededAmount"]) for r in report["results"]] == [("store-a", "11.00")]
    assert [(r["store"], r["succeededAmount"]) for r in exported] == [("store-a", "11.00")]


@pytest.mark.parametrize(
    "url",
    [
        "/api/transactions/?store=store-b",
        "/api/transactions/?group=store-b",
        "/api/transactions/export/?store=store-b",
        "/api/terminals/?store=store-b",
        "/api/devices/?store=store-b",
        "/api/reports/daily/?store=store-b",
        "/api/reports/daily/export/?store=store-b",
    ],
)
def test_naming_another_store_is_refused_like_an_unknown_one(two_stores, api_a, url):
    foreign = api_a.get(url)
    unknown = api_a.get(url.replace("store-b", "no-such-store"))

    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json()["message"] == unknown.json()["message"]
    assert foreign.json()["message"].startswith(url.split("?")[1].split("=")[0] + ": ")


def test_superuser_sees_every_store(two_stores, api_root):
    groups = api_root.get("/api/groups/").json()["results"]
    payments = api_root.get("/api/transactions/").json()["results"]
    totals = api_root.get("/api/reports/daily/").json()["results"]
    exported = csv_rows(api_root.get("/api/transactions/export/"))

    assert [g["slug"] for g in groups] == ["store-a", "store-b"]
    assert {p["transactionId"] for p in payments} == {"A-1", "B-1"}
    assert {r["store"] for r in totals} == {"store-a", "store-b"}
    assert {r["transactionId"] for r in exported} == {"A-1", "B-1"}


def test_member_of_two_stores_sees_both_and_names_the_store_for_a_shared_id(store_a, store_b):
    from tests.api.conftest import _staff

    make_payment(store_a, "SAME", amount="1.00")
    make_payment(store_b, "SAME", amount="2.00")
    client = token_client(_staff("dora", store_a.slug, store_b.slug))

    ambiguous = client.get("/api/transactions/SAME/")
    chosen = client.get(f"/api/transactions/SAME/?store={store_b.slug}")

    assert ambiguous.status_code == 400
    assert ambiguous.json()["fields"]["store"]
    assert "store-a, store-b" in ambiguous.json()["message"]
    assert chosen.status_code == 200
    assert (chosen.json()["store"], chosen.json()["amount"]) == ("store-b", "2.00")


# --- Throttling and errors -----------------------------------------------------------------


def test_throttled_client_gets_429_with_retry_after(api_a, monkeypatch):
    monkeypatch.setattr(
        UserRateThrottle, "rate", "3/min", raising=False
    )  # instead of the settings' rate

    statuses = [api_a.get("/api/groups/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    last = api_a.get("/api/groups/")
    assert last.json()["error"] == "Too Many Requests"
    assert "throttled" in last.json()["message"]
    assert int(last["Retry-After"]) > 0


def test_unknown_api_url_answers_json_404(api_a):
    response = api_a.get("/api/no-such-endpoint/")

    assert response.status_code == 404
    assert response.json() == {"error": "Not Found", "message": "Not found."}


def test_writes_are_not_allowed(api_a):
    response = api_a.post("/api/transactions/", {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"] == "Method Not Allowed"
