"""Two stores with their staff, payments in any state, and logged-in test clients."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from payments.models import Transaction
from terminals.models import Device
from tests import factories
from tests.factories import STAFF_PASSWORD, Runner, make_staff, make_superuser, open_connection

# The names the tests import from here.
PASSWORD = STAFF_PASSWORD
staff = make_staff


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class Store(factories.Store):
    """A store with one desktop (POS-1) and one terminal (TERM-1), labelled Counter 1."""

    terminal_label = "Counter 1"


def make_payment(store: Store, transaction_id: str | None = None, **fields: Any) -> Transaction:
    """factories.make_payment, but with no completion time unless one is given (the dashboard's
    tests were written with none)."""
    return factories.make_payment(store, transaction_id, completed=False, **fields)


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
    return make_superuser()


@pytest.fixture
def client_a(alice) -> Client:
    return logged_in(alice)


@pytest.fixture
def client_b(bob) -> Client:
    return logged_in(bob)


class Services(Runner):
    """Calls real services with an Outbox, running their after-commit hooks as a commit would;
    ``groups`` holds the dashboard messages of every call."""

    def events(self, group_id: int | None = None) -> list[dict[str, Any]]:
        """The dashboard events queued so far (for one store's group, or all)."""
        from posgateway.gateway.frames import dashboard_group as store_group

        return [
            message["event"]
            for name, message in self.groups
            if group_id is None or name == store_group(group_id)
        ]

    def connect(self, device: Device, channel: str):
        return open_connection(self, device, channel)

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
