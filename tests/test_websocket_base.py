"""Both consumers drop a send to a socket whose client has gone, on daphne and on uvicorn alike."""

from __future__ import annotations

import pytest
from autobahn.exception import Disconnected
from uvicorn.protocols.utils import ClientDisconnected

from posgateway.gateway.consumers import GatewayConsumer
from posgateway.gateway.dashboard import DashboardConsumer


@pytest.mark.parametrize(
    "gone",
    [
        ClientDisconnected,  # uvicorn, once the client has gone (the ASGI spec)
        # daphne (autobahn), between the client's close frame and daphne's onClose
        lambda: Disconnected("Attempt to send on a closed protocol"),
    ],
    ids=["uvicorn", "daphne"],
)
@pytest.mark.parametrize("consumer_class", [GatewayConsumer, DashboardConsumer])
async def test_a_send_to_a_socket_the_client_closed_is_dropped(consumer_class, gone):
    consumer = consumer_class()
    sent = []

    async def base_send(message):
        if sent:
            raise gone()
        sent.append(message)

    consumer.base_send = base_send
    await consumer.send(text_data='{"action":"pong"}')
    await consumer.send(text_data='{"action":"pong"}')  # gone: dropped, as daphne drops it
    await consumer.close(code=4000)
    assert sent == [{"type": "websocket.send", "text": '{"action":"pong"}'}]


async def test_other_failures_of_a_send_still_raise():
    consumer = GatewayConsumer()

    async def base_send(message):
        raise RuntimeError("a bug, not a closed socket")

    consumer.base_send = base_send
    with pytest.raises(RuntimeError, match="a bug"):
        await consumer.send(text_data="{}")
