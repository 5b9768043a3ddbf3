import os
import secrets

import pytest
from django.conf import settings
from django.db import connections

# A server refuses the public development key with DEBUG off (posgateway/asgi.py), and the tests
# import the application in this process (conftests of the packages do, before any hook runs):
# a random key of its own, as a deployment has. In the environment too: the processes the tests
# start (a `manage.py webhook_worker`, a server) must share it, or they could not decrypt the
# webhook secrets this process stored (keys derived from SECRET_KEY).
if settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
    settings.SECRET_KEY = os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)


def pytest_configure(config):
    """With REDIS_URL every test process (each pytest-xdist worker, and any other checkout's run
    on the same machine) shares one Redis: give this process's channel layer a key prefix of its
    own, or one worker's store groups (named after database ids, the same in every worker's test
    database) would get the other's messages. The e2e deployments have prefixes of their own
    (tests/e2e/harness.py); the test databases get pytest-django's per-worker suffix
    (test_…_gw0)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    layer = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    if "prefix" in layer:
        layer["prefix"] = f"{layer['prefix']}-test-{worker}-{os.getpid()}"
    # The cache (REST throttle counts) too, in the same Redis: tests clear their own keys only
    # (tests/factories.py clear_own_cache).
    cache = settings.CACHES["default"]
    if cache["BACKEND"].endswith("RedisCache"):
        cache["KEY_PREFIX"] = f"{cache['KEY_PREFIX']}-test-{worker}-{os.getpid()}"


# Markers of the modules that start real servers (the bench smoke run's too), Node or Chromium:
# the slow ones.
_HEAVY = ("e2e", "production", "browser", "node")


def _deselect_production_pass_only(config, items) -> None:
    """Tests marked production_pass_only (scenario 6's smoke run, races that need PostgreSQL's
    test database) belong to the PostgreSQL + Redis pass of the suite: the embedded pass leaves
    them out rather than run them twice or skip them (they are deselected, not skipped)."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    kept = [item for item in items if "production_pass_only" not in item.keywords]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The production_pass_only tests are left out of the embedded pass.

    Under pytest-xdist (the Makefile: --dist loadfile --no-loadscope-reorder) the modules that
    start real servers come first, in their own order, and the quick ones after: a worker done
    with its last slow module then fills in with quick ones instead of the other still starting
    one. The order within a module is kept; a run in one process keeps the order it had."""
    _deselect_production_pass_only(config, items)
    if not hasattr(config, "workerinput"):
        return
    heavy = {item.path for item in items if any(item.get_closest_marker(m) for m in _HEAVY)}
    items.sort(key=lambda item: item.path not in heavy)


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
