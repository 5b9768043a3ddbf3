"""Two stores side by side, A and B, for the tenancy and secrets probes.

Store B's names all contain ``QZX`` (its slug, deviceIds, transactionIds, session and request
ids): a response given to A that mentions ``qzx`` in any case has shown A something of B's.
Each B name has a same-length twin with ``NOP`` that exists nowhere, for the probes that must
get exactly the answer an unknown id gets.

In-process fixtures (``world``) build both stores with the ORM and the services; the real-daphne
fixture (``security_gateway``) is one server of its own, shared by the e2e probes of this
package, its log kept for the secrets tests.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from payments.models import Transaction, TransactionStatus
from posgateway.core.events import Outbox
from sessions.models import (
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalRequest,
    TerminalSession,
)
from terminals import services
from terminals.models import Connection, Device, DeviceType, Group
from tests.e2e.conftest import Gateway, close_clients  # noqa: F401 (a fixture)
from tests.e2e.harness import deployment_for_this_run
from tests.factories import make_device, make_group

# The WebSocket fixtures of the gateway's own consumer tests (real ASGI application).
from tests.terminals.conftest import (  # noqa: F401
    close_worker_db_connections,
    fresh_channel_layer,
    ws_clients,
)
from webhooks import services as webhooks

MARK = "QZX"
# B's names hold MARK between non-alphanumerics ("store-qzx", "QZX-TXN-1"). Random strings
# (keys, connectionIds, tokens) hold it inside a run of letters and digits now and then
# ("IgSqZxh2…", about one key in 5,000), which is no leak: only a bounded MARK counts.
MARK_RE = re.compile(rf"(?<![A-Za-z0-9]){MARK}(?![A-Za-z0-9])", re.IGNORECASE)
NOPE = "NOP"
PASSWORD = "correct horse battery"


def nope(value: str) -> str:
    """The never-existing twin of one of B's names (same length, so echoes line up)."""
    assert MARK in value.upper(), value
    return value.replace(MARK, NOPE).replace(MARK.lower(), NOPE.lower())


@dataclass
class Side:
    """One store: its devices (with keys and live connections), staff, payments, sessions."""

    group: Group
    desktop: Device
    desktop_key: str
    terminal: Device
    terminal_key: str
    desktop_conn: Connection
    terminal_conn: Connection
    staff: Any
    token: str
    payment: Transaction  # finished
    in_flight: Transaction
    shared: Transaction  # a transactionId both stores use
    session: TerminalSession
    request: TerminalRequest
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.group.slug

    def api(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")
        return client

    def browser(self) -> Client:
        client = Client()
        client.force_login(self.staff)
        return client


def _payment(
    group: Group, desktop: Device, terminal: Device, tid: str, status: str, **fields: Any
) -> Transaction:
    now = timezone.now()
    return Transaction.objects.create(
        group=group,
        transaction_id=tid,
        amount=Decimal("12.50"),
        currency="EUR",
        payment_method="CARD",
        metadata={"orderId": f"order-{tid}"},
        status=status,
        desktop=desktop,
        terminal=terminal,
        terminal_ref=terminal.device_id or "",
        completed_at=None if status == TransactionStatus.IN_PROGRESS else now,
        deadline_at=now + dt.timedelta(minutes=5),
        **fields,
    )


def build_side(prefix: str, *, username: str, timezone_name: str = "UTC") -> Side:
    """A store named after ``prefix`` (``QZX`` for B), everything in it named alike."""
    lower = prefix.lower()
    group = make_group(f"store-{lower}")
    group.name = f"Store {prefix}"
    group.timezone = timezone_name
    group.save()
    desktop, desktop_key = make_device(group, DeviceType.DESKTOP, f"{prefix}-POS")
    terminal, terminal_key = make_device(group, DeviceType.TERMINAL, f"{prefix}-TERM")
    outbox = Outbox()
    desktop_conn = services.connection_open(
        device_pk=desktop.pk, channel_name=f"test!{lower}-desk", remote_addr="", outbox=outbox
    )
    terminal_conn = services.connection_open(
        device_pk=terminal.pk, channel_name=f"test!{lower}-term", remote_addr="", outbox=outbox
    )
    desktop.refresh_from_db()
    terminal.refresh_from_db()
    staff, token = services.staff_create_or_update(
        username=username, group_slugs=[group.slug], password=PASSWORD
    )
    payment = _payment(
        group,
        desktop,
        terminal,
        f"{prefix}-TXN-1",
        TransactionStatus.SUCCESS,
        authorization_code=f"{prefix}-AUTH",
    )
    in_flight = _payment(group, desktop, terminal, f"{prefix}-TXN-2", TransactionStatus.IN_PROGRESS)
    shared = _payment(group, desktop, terminal, "SHARED-1", TransactionStatus.DECLINED)
    now = timezone.now()
    session = TerminalSession.objects.create(
        group=group,
        session_id=f"{prefix}-SESSION-1",
        terminal=terminal,
        desktop=desktop,
        sale_id=f"{prefix}-POS",
        service_id=f"{prefix}-SVC",
        operations=[
            {"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 1000}
        ],
        state=SessionState.ACTIVE,
        last_request_at=now,
    )
    request = TerminalRequest.objects.create(
        group=group,
        request_id=f"{prefix}-REQ-1",
        kind=RequestKind.DISPLAY,
        terminal=terminal,
        desktop=desktop,
        session=session,
        status=RequestStatus.SUCCESS,
        request={"lines": [f"{prefix} says hello"], "durationMs": 1000},
        result={"status": "SUCCESS", "requestId": f"{prefix}-REQ-1"},
        completed_at=now,
        deadline_at=now + dt.timedelta(minutes=1),
    )
    # A webhook endpoint (its URL and description named after the store) and a test event.
    with override_settings(WEBHOOK_ALLOW_HTTP=True, WEBHOOK_ALLOWED_HOSTS=["127.0.0.1"]):
        endpoint, _ = webhooks.endpoint_create(
            group_id=group.pk,
            url=f"http://127.0.0.1:9/{prefix}-hooks",
            events=["*"],
            description=f"{prefix} ERP",
        )
    webhook_event = webhooks.endpoint_test(endpoint=endpoint)
    return Side(
        extra={"webhook_endpoint": endpoint, "webhook_event": webhook_event},
        group=group,
        desktop=desktop,
        desktop_key=desktop_key,
        terminal=terminal,
        terminal_key=terminal_key,
        desktop_conn=desktop_conn,
        terminal_conn=terminal_conn,
        staff=staff,
        token=token,
        payment=payment,
        in_flight=in_flight,
        shared=shared,
        session=session,
        request=request,
    )


@dataclass
class World:
    a: Side
    b: Side

    def b_secrets(self) -> list[str]:
        """Strings only B's data holds besides its ``QZX`` names: its connectionIds and keys."""
        return [
            self.b.desktop_conn.connection_id,
            self.b.terminal_conn.connection_id,
            self.b.desktop.key_prefix,
            self.b.terminal.key_prefix,
        ]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db) -> World:
    """Store A (alice) and store B (bob, every name with QZX), in the same database."""
    return World(
        a=build_side("AAA", username="alice"),
        b=build_side(MARK, username="bob", timezone_name="Europe/Berlin"),
    )


@pytest.fixture(scope="session")
def security_gateway():
    """One real server for this package's end-to-end probes; its log is grepped for secrets.

    Every logger the gateway has runs at DEBUG and the access log is on (daphne's and uvicorn's
    default), so whatever any of them would ever print is in the log.
    """
    with deployment_for_this_run() as deployment:
        gw = Gateway(deployment, deployment.server(LOG_LEVEL="DEBUG", ACCESS_LOG_LEVEL="DEBUG"))
        try:
            yield gw
        finally:
            gw.close()
