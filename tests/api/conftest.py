"""Two stores, their staff, a superuser and API clients: the REST API's permission boundary.

The data comes from tests/factories.py: payments in specific states and at specific times are
written with the ORM (``make_payment``); the event timeline comes from the real services
(``pay_through_services`` in test_transactions.py).
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import (
    Store,
    clear_own_cache,
    make_payment,  # noqa: F401 (the tests import it from here)
    make_staff,
    make_superuser,
)

_staff = make_staff  # the name the tests import


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle counters live in the cache: each test starts with none."""
    clear_own_cache()
    yield
    clear_own_cache()


@pytest.fixture
def store_a(db) -> Store:
    return Store("store-a")


@pytest.fixture
def store_b(db) -> Store:
    return Store("store-b", timezone="Europe/Berlin")


@pytest.fixture
def staff_a(store_a):
    return make_staff("alice", store_a.slug)


@pytest.fixture
def staff_b(store_b):
    return make_staff("bob", store_b.slug)


@pytest.fixture
def superuser(db):
    from rest_framework.authtoken.models import Token

    user = make_superuser()
    user.api_token = Token.objects.create(user=user).key
    return user


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user.api_token}")
    return client


@pytest.fixture
def api_a(staff_a) -> APIClient:
    return token_client(staff_a)


@pytest.fixture
def api_b(staff_b) -> APIClient:
    return token_client(staff_b)


@pytest.fixture
def api_root(superuser) -> APIClient:
    return token_client(superuser)
