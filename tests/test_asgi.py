"""The ASGI application's lifespan: uvicorn sends it (daphne doesn't), and the sweeper rides it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.testing import ApplicationCommunicator

from posgateway.asgi import application
from posgateway.gateway import background


@pytest.fixture
def sweeper_on(settings):
    settings.SWEEPER_ENABLED = True
    settings.SWEEP_INTERVAL_S = 3600  # started, but it sleeps: nothing here needs a sweep
    yield
    assert background._task is None, "the test left a sweeper running"


async def test_startup_starts_the_sweeper_and_shutdown_stops_it(sweeper_on):
    app = ApplicationCommunicator(application, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await app.send_input({"type": "lifespan.startup"})
    assert await app.receive_output(5) == {"type": "lifespan.startup.complete"}
    task = background._task
    assert task is not None
    assert not task.done()
    assert task.get_name() == "posgw-sweeper"

    await app.send_input({"type": "lifespan.shutdown"})
    assert await app.receive_output(5) == {"type": "lifespan.shutdown.complete"}
    assert task.cancelled()
    assert background._task is None
    await app.wait(5)  # the lifespan coroutine has returned


async def test_shutdown_without_a_sweeper_completes(settings):
    settings.SWEEPER_ENABLED = False  # as under the tests' default, or an operator's choice
    app = ApplicationCommunicator(application, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await app.send_input({"type": "lifespan.startup"})
    assert await app.receive_output(5) == {"type": "lifespan.startup.complete"}
    assert background._task is None
    await app.send_input({"type": "lifespan.shutdown"})
    assert await app.receive_output(5) == {"type": "lifespan.shutdown.complete"}
    await asyncio.wait_for(app.future, 5)
