"""Password guessing: logins are throttled per account and per address, weak passwords refused,
and the REST API's throttle counts refused requests.

The counts are django-axes rows in the database every server process shares.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from tests.factories import clear_own_cache, make_group
from tests.security.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LIMIT = 10  # LOGIN_FAILURE_LIMIT's default


@pytest.fixture
def manager(db):
    make_group("sec-logins")
    call_command(
        "create_staff",
        "mona",
        "--group",
        "sec-logins",
        "--password",
        PASSWORD,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    return get_user_model().objects.get(username="mona")


def login(url: str, username: str, password: str, address: str = "203.0.113.7") -> int:
    return (
        Client(REMOTE_ADDR=address)
        .post(url, {"username": username, "password": password})
        .status_code
    )


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_forty_wrong_passwords_lock_the_account_even_for_the_right_one(manager, url):
    wrong = [login(url, "mona", f"guess-{n}") for n in range(40)]

    assert wrong[: LIMIT - 1] == [200] * (LIMIT - 1)  # the form again, "wrong password"
    assert set(wrong[LIMIT:]) == {429}
    assert login(url, "mona", PASSWORD) == 429


def test_one_account_is_locked_from_every_address(manager):
    for n in range(LIMIT):
        login("/accounts/login/", "mona", "guess", address=f"198.51.100.{n}")

    assert login("/accounts/login/", "mona", PASSWORD, address="192.0.2.1") == 429


def test_one_address_is_locked_for_every_account(manager):
    for n in range(LIMIT):
        login("/accounts/login/", f"someone-{n}", "guess", address="198.51.100.9")

    assert login("/accounts/login/", "mona", PASSWORD, address="198.51.100.9") == 429
    assert login("/accounts/login/", "mona", PASSWORD, address="192.0.2.1") == 302


def test_a_right_password_before_the_limit_resets_the_count(manager):
    for _ in range(LIMIT - 1):
        login("/accounts/login/", "mona", "guess")
    assert login("/accounts/login/", "mona", PASSWORD) == 302
    for _ in range(LIMIT - 1):
        login("/accounts/login/", "mona", "guess")
    assert login("/accounts/login/", "mona", PASSWORD) == 302


@pytest.mark.parametrize(
    "password", ["a", "short-1", "password123", "12345678901234", "qwertyuiop"]
)
def test_create_staff_refuses_a_weak_password_and_changes_nothing(db, password):
    with pytest.raises(CommandError, match="The password is refused"):
        call_command(
            "create_staff",
            "mona",
            "--group",
            "sec-weak",
            "--password",
            password,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not get_user_model().objects.filter(username="mona").exists()


def test_wrong_tokens_are_throttled_like_any_anonymous_request(db, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "rate", "5/min", raising=False)
    clear_own_cache()  # the throttle's counts of earlier tests in this process
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    statuses = [client.get("/api/groups/").status_code for _ in range(7)]
    anonymous = APIClient().get("/api/groups/").status_code

    assert statuses == [401] * 5 + [429] * 2
    assert anonymous == 429  # the same address
