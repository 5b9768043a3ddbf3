import pytest
from django.db import connections


@pytest.fixture(autouse=True)
def _no_background_sweeper(settings):
    """Unit tests drive the sweeps themselves; the e2e servers run their own."""
    settings.SWEEPER_ENABLED = False


@pytest.fixture(autouse=True)
def _dependencies_up():
    """Every test starts with the database and the channel layer counted as up: what a test
    logs about an outage must not depend on the test before it (posgateway.core.health)."""
    from posgateway.gateway import health

    health.DATABASE.reset()
    health.CHANNEL_LAYER.reset()


@pytest.fixture
def close_db_connections():
    """Close the worker-thread connections consumers opened (they outlive the test otherwise)."""
    yield
    for conn in connections.all(initialized_only=True):
        conn.close()
