"""What the webhook tests share: short timeouts, receivers on 127.0.0.1, and a worker driven
pass by pass until what the test waits for is stored (bounded in time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from posgateway.webhook_delivery.worker import Worker
from tests.webhooks.receivers import Receiver
from webhooks import services
from webhooks.models import WebhookEndpoint


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    settings.WEBHOOK_TIMEOUT_S = 1.0
    settings.WEBHOOK_LEASE_S = 3.0
    settings.WEBHOOK_RETRY_SCHEDULE_S = [0.05, 0.05, 0.05]
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_POLL_INTERVAL_S = 0.05


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        r = Receiver(**kwargs).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def subscribe(group, receiver: Receiver, events=("*",)) -> tuple[WebhookEndpoint, str]:
    """An endpoint of ``group`` for the receiver; the receiver verifies with its secret."""
    endpoint, secret = services.endpoint_create(
        group_id=group.pk, url=receiver.url, events=list(events)
    )
    receiver.secret = secret
    return endpoint, secret


def drive(until: Callable[[], bool], *, timeout: float = 10.0, worker: Worker | None = None):
    """Run worker passes (waiting for each pass's attempts) until ``until()`` holds."""

    async def run() -> None:
        w = worker or Worker()
        deadline = time.monotonic() + timeout
        try:
            while True:
                await w.tick()
                await w.drain()
                if await database_sync_to_async(until)():
                    return
                if time.monotonic() > deadline:
                    raise AssertionError("the webhook worker did not get there in time")
                await asyncio.sleep(0.02)
        finally:
            await w.close()

    asyncio.run(run())


@pytest.fixture
def close_db_connections():
    yield
    for conn in connections.all(initialized_only=True):
        conn.close()
