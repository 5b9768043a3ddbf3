"""Two stores, their staff, a superuser and API clients: the REST API's permission boundary.

Payments in specific states and at specific times are written with the ORM (``make_payment``);
the event timeline comes from the real services (``paid_through_services``).
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from payments.models import Transaction, TransactionStatus
from terminals import services
from terminals.models import Device, DeviceType, Group
from tests.factories import make_device, make_group

_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle counters live in the cache: each test starts with none."""
    cache.clear()
    yield
    cache.clear()


class Store:
    """A store with one desktop and one terminal (deviceIds POS-1 and TERM-1)."""

    def __init__(self, slug: str, timezone: str = "UTC") -> None:
        self.group: Group = make_group(slug)
        if timezone != "UTC":
            self.group.timezone = timezone
            self.group.save(update_fields=["timezone"])
        self.desktop, self.desktop_key = make_device(self.group, DeviceType.DESKTOP, "POS-1")
        self.terminal, self.terminal_key = make_device(self.group, DeviceType.TERMINAL, "TERM-1")

    @property
    def slug(self) -> str:
        return self.group.slug


def make_payment(
    store: Store,
    transaction_id: str | None = None,
    *,
    amount: str = "10.00",
    currency: str = "EUR",
    status: str = TransactionStatus.SUCCESS,
    created_at: dt.datetime | None = None,
    completed_at: dt.datetime | None = None,
    late: bool = False,
    terminal: Device | None = None,
    desktop: Device | None = None,
    metadata: dict[str, Any] | None = None,
    customer_info: dict[str, Any] | None = None,
    error_message: str = "",
    authorization_code: str = "",
) -> Transaction:
    """A payment as the services would have left it, written directly (any state, any time)."""
    terminal = terminal or store.terminal
    txn = Transaction.objects.create(
        group=store.group,
        transaction_id=transaction_id or f"TXN-{next(_serial)}",
        amount=Decimal(amount),
        currency=currency,
        payment_method="CARD",
        metadata=metadata or {},
        customer_info=customer_info or {},
        status=status,
        late=late,
        error_message=error_message,
        authorization_code=authorization_code,
        desktop=desktop or store.desktop,
        terminal=terminal,
        terminal_ref=terminal.device_id or "",
    )
    created_at = created_at or dt.datetime.now(dt.UTC)
    if completed_at is None and status not in (
        TransactionStatus.PENDING,
        TransactionStatus.IN_PROGRESS,
    ):
        completed_at = created_at + dt.timedelta(seconds=5)
    # auto_now_add would overwrite a created_at given to create().
    Transaction.objects.filter(pk=txn.pk).update(created_at=created_at, completed_at=completed_at)
    txn.refresh_from_db()
    return txn


@pytest.fixture
def store_a(db) -> Store:
    return Store("store-a")


@pytest.fixture
def store_b(db) -> Store:
    return Store("store-b", timezone="Europe/Berlin")


def _staff(username: str, *slugs: str):
    user, token = services.staff_create_or_update(
        username=username, group_slugs=slugs, password="correct horse battery"
    )
    user.api_token = token
    return user


@pytest.fixture
def staff_a(store_a):
    return _staff("alice", store_a.slug)


@pytest.fixture
def staff_b(store_b):
    return _staff("bob", store_b.slug)


@pytest.fixture
def superuser(db):
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
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
