"""GET /healthz through Django's async client: 200 when every part answers, 503 naming the part
that does not."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import AsyncClient

from posgateway.gateway import health

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _parts_up_again(close_db_connections, fresh_channel_layer):
    yield
    health.DATABASE.ok()
    health.CHANNEL_LAYER.ok()


async def test_healthz_is_200_when_database_and_channel_layer_answer():
    response = await AsyncClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "channelLayer": "ok"}


@pytest.mark.parametrize(
    "failure",
    [OperationalError("connection refused"), RuntimeError("driver bug")],
    ids=["database-error", "other-error"],
)
async def test_healthz_is_503_naming_the_database_when_it_fails(monkeypatch, failure):
    def broken() -> None:
        raise failure

    monkeypatch.setattr(health, "_database_ok", broken)

    response = await AsyncClient().get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "error", "channelLayer": "ok"}


async def test_healthz_is_503_degraded_naming_the_channel_layer_and_what_waits(monkeypatch):
    async def broken() -> None:
        raise ConnectionError("redis refused")

    monkeypatch.setattr(health, "_channel_layer_ok", broken)

    response = await AsyncClient().get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "database": "ok",
        "channelLayer": "error",
        "forwardsWaiting": 0,
    }
