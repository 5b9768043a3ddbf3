"""Two stores with their staff, payments in any state, and logged-in test clients."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from payments.models import Transaction, TransactionStatus
from terminals import services
from terminals.models import Device, DeviceType, Group
from tests.factories import make_device, make_group

_serial = itertools.count(1)
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class Store:
    """A store with one desktop (POS-1) and one terminal (TERM-1)."""

    def __init__(self, slug: str, timezone: str = "UTC") -> None:
        self.group: Group = make_group(slug)
        if timezone != "UTC":
            self.group.timezone = timezone
            self.group.save(update_fields=["timezone"])
        self.desktop, self.desktop_key = make_device(self.group, DeviceType.DESKTOP, "POS-1")
        self.terminal, self.terminal_key = make_device(
            self.group, DeviceType.TERMINAL, "TERM-1", label="Counter 1"
        )

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
    terminal: Device | None = None,
    metadata: dict[str, Any] | None = None,
    late: bool = False,
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
        status=status,
        late=late,
        desktop=store.desktop,
        terminal=terminal,
        terminal_ref=terminal.device_id or "",
    )
    if created_at is not None:
        Transaction.objects.filter(pk=txn.pk).update(created_at=created_at)
        txn.refresh_from_db()
    return txn


def staff(username: str, *slugs: str):
    user, _ = services.staff_create_or_update(
        username=username, group_slugs=slugs, password=PASSWORD
    )
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def store_a(db) -> Store:
    return Store("store-a")


@pytest.fixture
def store_b(db) -> Store:
    return Store("store-b", timezone="Europe/Berlin")


@pytest.fixture
def alice(store_a):
    return staff("alice", store_a.slug)


@pytest.fixture
def bob(store_b):
    return staff("bob", store_b.slug)


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


@pytest.fixture
def client_a(alice) -> Client:
    return logged_in(alice)


@pytest.fixture
def client_b(bob) -> Client:
    return logged_in(bob)


class Services:
    """Calls real services with an Outbox, running their after-commit hooks as a commit would."""

    def __init__(self, capture) -> None:
        self.capture = capture
        self.groups: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, service, /, **kwargs: Any) -> Any:
        from posgateway.realtime import Outbox

        outbox = Outbox()
        try:
            with self.capture(execute=True):
                return service(outbox=outbox, **kwargs)
        finally:
            self.groups += outbox.group_messages

    def events(self, group_id: int | None = None) -> list[dict[str, Any]]:
        """The dashboard events queued so far (for one store's group, or all)."""
        from posgateway.dashboard.events import store_group

        return [
            message["event"]
            for name, message in self.groups
            if group_id is None or name == store_group(group_id)
        ]

    def connect(self, device: Device, channel: str):
        return self(
            services.connection_open, device_pk=device.pk, channel_name=channel, remote_addr=""
        )

    def paid(self, store: Store, tid: str, status: str = "SUCCESS", *, ack: bool = True):
        """A payment through the real services: started, answered, and acknowledged."""
        from payments import services as payments

        desk = self.connect(store.desktop, f"test!desk-{store.slug}")
        self.connect(store.terminal, f"test!term-{store.slug}")
        self(
            payments.payment_start,
            desktop=store.desktop,
            desktop_connection_id=desk.connection_id,
            terminal_id=store.terminal.device_id,
            payment_request={
                "transactionId": tid,
                "amount": "12.50",
                "currency": "EUR",
                "metadata": {"orderId": f"order-{tid}"},
            },
        )
        if status:
            self(
                payments.payment_result,
                terminal=store.terminal,
                payment_response={"transactionId": tid, "status": status},
            )
        if status and ack:
            store.desktop.refresh_from_db()
            self(payments.results_ack, desktop=store.desktop, seq=store.desktop.last_seq)
        return Transaction.objects.get(group=store.group, transaction_id=tid)


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Services:
    return Services(django_capture_on_commit_callbacks)


# The sockets' fixtures of the gateway's own consumer tests: real ASGI application, a fresh
# channel layer per test, worker-thread connections closed afterwards.
from tests.terminals.conftest import (  # noqa: E402, F401
    close_worker_db_connections,
    fresh_channel_layer,
    ws_clients,
)
