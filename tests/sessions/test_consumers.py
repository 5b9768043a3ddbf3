"""Display, input and Terminal API actions over the socket, through the real ASGI application."""

from __future__ import annotations

from typing import Any

import pytest

from sessions.models import TerminalRequest, TerminalSession
from tests.sessions.test_services import begin_doc
from tests.terminals.test_consumers import (
    assert_error,
    connect,
    connect_pair,
    db,
    request,
)

pytestmark = pytest.mark.django_db(transaction=True)

DISPLAY = {"lines": ["Total 12.30"]}
INPUT = {"type": "confirmation", "prompt": "Receipt?"}


def display(terminal_id: Any = "TERM-1", **frame: Any) -> dict[str, Any]:
    return {"action": "display", "terminalId": terminal_id, "displayRequest": DISPLAY, **frame}


def ask(terminal_id: Any = "TERM-1", **frame: Any) -> dict[str, Any]:
    return {"action": "input", "terminalId": terminal_id, "inputRequest": INPUT, **frame}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (display(terminal_id=None), "terminalId is required"),
        (display(terminal_id=""), "terminalId is required"),
        ({"action": "display", "displayRequest": DISPLAY}, "terminalId is required"),
        (ask(terminal_id=None), "terminalId is required"),
        ({"action": "input", "inputRequest": INPUT}, "terminalId is required"),
        ({"action": "display", "terminalId": "TERM-1"}, "displayRequest is required"),
        (display(displayRequest=None), "displayRequest is required"),
        ({"action": "input", "terminalId": "TERM-1"}, "inputRequest is required"),
        (ask(inputRequest=None), "inputRequest is required"),
    ],
)
async def test_a_display_or_input_frame_missing_a_part_is_a_bad_request(
    ws_clients, store, frame: dict[str, Any], message: str
) -> None:
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    reply = await request(desktop, frame)
    assert_error(reply, "Bad Request", message, requestAction=frame["action"])
    assert await terminal.receive_nothing(timeout=0.2)
    assert await db(TerminalRequest.objects.count)() == 0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (display(), "Only desktop devices can send display requests"),
        (ask(), "Only desktop devices can send input requests"),
    ],
)
async def test_a_terminal_may_not_send_display_or_input(
    ws_clients, store, frame: dict[str, Any], message: str
) -> None:
    terminal, _ = await connect(ws_clients, store.terminal_key)
    reply = await request(terminal, frame)
    assert_error(reply, "Forbidden", message, requestAction=frame["action"])
    assert await db(TerminalRequest.objects.count)() == 0


@pytest.mark.parametrize(("make", "kind"), [(display, "display"), (ask, "input")])
async def test_display_and_input_may_address_the_terminal_by_connection_id(
    ws_clients, store, make, kind: str
) -> None:
    terminal, terminal_hello, desktop, desktop_hello = await connect_pair(ws_clients, store)
    connection_id = terminal_hello["connectionId"]

    accepted = await request(desktop, make(terminal_id=connection_id))

    assert accepted["action"] == f"{kind}Accepted", accepted
    assert accepted["terminalId"] == connection_id
    assert accepted["deviceId"] == "TERM-1"
    assert accepted["connectionId"] == connection_id
    forwarded = await terminal.receive_json_from(timeout=5)
    assert forwarded["action"] == f"{kind}Request"
    assert forwarded["requestId"] == accepted["requestId"]
    assert forwarded["desktopId"] == desktop_hello["connectionId"]


@pytest.mark.parametrize(("make", "kind"), [(display, "display"), (ask, "input")])
async def test_another_stores_connection_id_is_forbidden_for_display_and_input(
    ws_clients, store, other_store, make, kind: str
) -> None:
    terminal, _, desktop, _ = await connect_pair(ws_clients, store)
    foreign, foreign_hello = await connect(ws_clients, other_store.terminal_key)

    reply = await request(desktop, make(terminal_id=foreign_hello["connectionId"]))

    assert_error(
        reply,
        "Forbidden",
        "Cannot send message to connection in different group",
        requestAction=kind,
    )
    assert await foreign.receive_nothing(timeout=0.3)
    assert await terminal.receive_nothing(timeout=0.1)
    assert await db(TerminalRequest.objects.count)() == 0


async def test_a_terminal_api_begin_over_the_socket_keeps_its_response_on_the_session(
    ws_clients, store
) -> None:
    _, _, desktop, _ = await connect_pair(ws_clients, store)
    reply = await request(desktop, {"action": "terminalApi", **begin_doc(poi_id="TERM-1")})
    assert reply["action"] == "terminalApiResponse"
    response = {"SaleToPOIResponse": reply["SaleToPOIResponse"]}
    assert response["SaleToPOIResponse"]["AdminResponse"]["Response"] == {"Result": "Success"}
    session = await db(TerminalSession.objects.get)()
    assert session.last_response == response
