"""Terminal API sessions, display and input requests against a real daphne: real HTTP (the
``/terminal-api`` endpoints) and real sockets (the desktop and the terminal).

Two servers, each with its own deployment: ``api`` with the default session and request timers
(nothing expires while a test runs), and ``short`` (sessions expire after 2 s without a request,
a display or input request times out 1 s after its own time), whose sweeper would otherwise
expire the other tests' sessions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import random
import uuid
from typing import Any

import pytest

from posgateway.backoffice.management.commands.simulate_terminal import Simulator
from posgateway.client import Operation, TerminalApiClient, TerminalApiError
from posgateway.client.terminal_api import admin_request
from tests.e2e.conftest import TIMESTAMP, Gateway, Store
from tests.e2e.conftest import DeviceClient as Device
from tests.e2e.harness import deployment_for_this_run

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("close_clients")]


# Stores are made in batches by one ``manage.py shell`` (through the same services as
# ``create_device``): a process start per device would cost more than the tests themselves.
_BULK_STORES = """
import json, uuid
from terminals import services
out = []
for terminal_id in {terminal_ids!r}:
    group = services.group_get_or_create(slug="e2e-sess-" + uuid.uuid4().hex[:12])
    _, desktop = services.device_create(group=group, device_type="desktop", device_id="POS")
    _, terminal = services.device_create(
        group=group, device_type="terminal", device_id=terminal_id
    )
    out.append([group.slug, desktop, terminal, terminal_id])
print("STORES" + json.dumps(out))
"""


class SessionGateway(Gateway):
    """A Gateway whose ``store()`` hands out stores (desktop POS, one terminal) made in bulk."""

    def __init__(self, deployment, server) -> None:
        super().__init__(deployment, server)
        self.spare: list[Store] = []

    def bulk(self, terminal_ids: list[str]) -> list[Store]:
        script = _BULK_STORES.format(terminal_ids=terminal_ids)
        lines = self.deployment.manage("shell", "-c", script).stdout.splitlines()
        rows = json.loads(next(line for line in lines if line.startswith("STORES"))[6:])
        return [Store(slug, [desktop], [terminal], [tid]) for slug, desktop, terminal, tid in rows]

    def store(self, *, terminal_id: str = "TERM", **_: Any) -> Store:  # type: ignore[override]
        if terminal_id != "TERM":
            return self.bulk([terminal_id])[0]
        if not self.spare:
            self.spare = self.bulk(["TERM"] * 24)
        return self.spare.pop()


@pytest.fixture(scope="module")
def api():
    with deployment_for_this_run() as deployment:
        yield SessionGateway(deployment, deployment.server())


@pytest.fixture(scope="module")
def short():
    with deployment_for_this_run() as deployment:
        yield SessionGateway(
            deployment,
            deployment.server(SESSION_MAX_AGE_S="2", TERMINAL_REQUEST_TIMEOUT_S="1"),
        )


# --- helpers ---------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    gw: Gateway,
    path: str,
    body: object = None,
    *,
    key: str | None = None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One raw HTTP request (no redirect is followed)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.server.port, timeout=15)
    try:
        sent_headers = dict(headers or {})
        if key is not None:
            sent_headers["x-api-key"] = key
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=sent_headers)
        response = conn.getresponse()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


async def post(gw: Gateway, path: str, body: object = None, **kw: Any) -> Reply:
    return await asyncio.to_thread(http_request, gw, path, body, **kw)


OPERATIONS = [
    Operation("Payment", 5000),
    Operation("InputRequest", 3000),
    Operation("DisplayRequest", 2000),
]


def session_id() -> str:
    return f"table-{uuid.uuid4().hex[:8]}"


def begin_document(poi_id: str, sid: str, operations: list[Operation] = OPERATIONS) -> dict:
    return admin_request(
        sale_id="POS-001",
        poi_id=poi_id,
        service_id=uuid.uuid4().hex[:10],
        session_id=sid,
        session_type="Begin",
        operations=operations,
    )


def end_document(sid: str) -> dict:
    """The seed's End: only MessageClass, MessageCategory and the session."""
    service = {"Session": {"Id": sid, "Type": "End"}}
    return {
        "SaleToPOIRequest": {
            "MessageHeader": {"MessageClass": "Service", "MessageCategory": "Admin"},
            "AdminRequest": {
                "ServiceIdentification": base64.b64encode(json.dumps(service).encode()).decode()
            },
        }
    }


def result_of(document: dict[str, Any]) -> dict[str, Any]:
    return document["SaleToPOIResponse"]["AdminResponse"]["Response"]


async def devices(gw: Gateway) -> tuple[Any, Device, Device]:
    store = gw.store()
    desktop = await gw.connect(store.desktop)
    terminal = await gw.connect(store.terminal)
    await desktop.recv_action("terminalStatusUpdate")  # the terminal came online
    return store, desktop, terminal


async def begin_sync(gw: Gateway, key: str, poi_id: str, sid: str, **kw: Any) -> dict[str, Any]:
    reply = await post(gw, "/terminal-api/sync", begin_document(poi_id, sid, **kw), key=key)
    assert reply.status == 200, reply.body
    document = reply.json()
    assert result_of(document) == {"Result": "Success"}, document
    return document


async def display(desktop: Device, rid: str, terminal_id: str = "TERM") -> dict[str, Any]:
    frame = {
        "action": "display",
        "terminalId": terminal_id,
        "displayRequest": {"requestId": rid, "lines": ["Thank you", "Please wait"]},
    }
    accepted = await desktop.request(frame, "displayAccepted")
    assert accepted["requestId"] == rid
    return accepted


async def shown(desktop: Device, terminal: Device, rid: str) -> dict[str, Any]:
    """Display a request end to end; returns the frame the terminal got."""
    await display(desktop, rid)
    forwarded = await terminal.recv_action("displayRequest", requestId=rid)
    await terminal.send(
        {"action": "displayResponse", "displayResponse": {"requestId": rid, "status": "SUCCESS"}}
    )
    done = await desktop.recv_action("displayComplete", requestId=rid)
    assert done["displayResponse"]["status"] == "SUCCESS"
    return forwarded


# --- The seed's flow -------------------------------------------------------------------------


async def test_the_seeds_session_flow_over_http_end_to_end(api: Gateway):
    store, desktop, terminal = await devices(api)
    sid = session_id()

    # Step 1: Begin over /terminal-api/sync, the seed's document (Session.ID, three operations).
    service = {
        "Session": {"ID": sid, "Type": "Begin"},
        "Operation": [op.to_nexo() for op in OPERATIONS],
    }
    header = {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": "Admin",
        "MessageType": "Request",
        "ServiceID": "svc-begin-1",
        "SaleID": "POS-001",
        "POIID": "TERM",
    }
    document = {
        "SaleToPOIRequest": {
            "MessageHeader": header,
            "AdminRequest": {
                "ServiceIdentification": base64.b64encode(json.dumps(service).encode()).decode()
            },
        }
    }
    reply = await post(api, "/terminal-api/sync", document, key=store.desktop)
    assert reply.status == 200
    assert reply.content_type.startswith("application/json")
    assert reply.json() == {
        "SaleToPOIResponse": {
            "MessageHeader": {**header, "MessageType": "Response"},
            "AdminResponse": {"Response": {"Result": "Success"}},
        }
    }
    begun = await terminal.recv_action("sessionBegin")
    assert begun["session"] == {
        "id": sid,
        "operations": [
            {"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000},
            {"type": "InputRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 3000},
            {"type": "DisplayRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 2000},
        ],
    }
    assert TIMESTAMP.match(begun["timestamp"])

    # Step 2: payment, input and display requests, each followed by the waiting screen.
    tid = f"TXN-{uuid.uuid4().hex[:8]}"
    payment = {
        "action": "payment",
        "terminalId": "TERM",
        "paymentRequest": {"transactionId": tid, "amount": "42.5", "currency": "EUR"},
    }
    await desktop.request(payment, "paymentAccepted")
    forwarded = await terminal.recv_action("paymentRequest")
    assert forwarded["paymentRequest"]["amount"] == "42.50"
    assert forwarded["waitingScreen"] == {"sessionId": sid, "timeoutMs": 5000}
    await terminal.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": tid,
                "status": "SUCCESS",
                "authorizationCode": "A",
            },
        }
    )
    complete = await desktop.recv_action("paymentComplete", transactionId=tid)
    await desktop.send({"action": "ack", "seq": complete["seq"]})

    ask = {
        "action": "input",
        "terminalId": "TERM",
        "inputRequest": {"requestId": "IN-1", "type": "email", "prompt": "Receipt by email?"},
    }
    accepted = await desktop.request(ask, "inputAccepted")
    assert accepted["status"] == "IN_PROGRESS"
    asked = await terminal.recv_action("inputRequest", requestId="IN-1")
    assert asked["inputRequest"]["type"] == "email"
    assert asked["waitingScreen"] == {"sessionId": sid, "timeoutMs": 3000}
    await terminal.send(
        {
            "action": "inputResponse",
            "inputResponse": {"requestId": "IN-1", "status": "SUCCESS", "value": "a@example.com"},
        }
    )
    answered = await desktop.recv_action("inputComplete", requestId="IN-1")
    assert answered["inputResponse"]["value"] == "a@example.com"
    assert answered["inputResponse"]["status"] == "SUCCESS"

    forwarded_display = await shown(desktop, terminal, "D-1")
    assert forwarded_display["waitingScreen"] == {"sessionId": sid, "timeoutMs": 2000}

    # Step 3: End over /terminal-api/async: "ok" now, the response on the desktop's socket.
    reply = await post(api, "/terminal-api/async", end_document(sid), key=store.desktop)
    assert reply.status == 200
    assert reply.body == b"ok"
    assert reply.content_type.startswith("text/plain")
    pushed = await desktop.recv_action("terminalApiResponse")
    assert pushed["SaleToPOIResponse"] == {
        "MessageHeader": {
            "MessageClass": "Service",
            "MessageCategory": "Admin",
            "MessageType": "Response",
        },
        "AdminResponse": {"Response": {"Result": "Success"}},
    }
    ended = await terminal.recv_action("sessionEnd")
    assert ended["session"] == {"id": sid}
    assert ended["interruptWaitingScreen"] is False

    # After the end no request carries the waiting screen.
    assert "waitingScreen" not in await shown(desktop, terminal, "D-2")


async def test_the_python_client_begins_and_ends_a_session(api: Gateway):
    store, desktop, terminal = await devices(api)
    sid = session_id()
    client = TerminalApiClient(api.server.url, store.desktop, sale_id="POS-001")
    response = await asyncio.to_thread(
        client.begin_session,
        poi_id="TERM",
        session_id=sid,
        operations=[Operation("DisplayRequest", 1500)],
    )
    assert result_of(response) == {"Result": "Success"}
    assert (await terminal.recv_action("sessionBegin"))["session"]["id"] == sid
    assert (await shown(desktop, terminal, "D-1"))["waitingScreen"] == {
        "sessionId": sid,
        "timeoutMs": 1500,
    }

    # A second Begin while this one is active is Busy; the same Id again is a Success.
    with pytest.raises(TerminalApiError) as info:
        await asyncio.to_thread(
            client.begin_session, poi_id="TERM", session_id=session_id(), operations=OPERATIONS
        )
    assert info.value.condition == "Busy"
    again = await asyncio.to_thread(
        client.begin_session, poi_id="TERM", session_id=sid, operations=OPERATIONS
    )
    assert result_of(again) == {"Result": "Success"}

    ok = await asyncio.to_thread(client.end_session, session_id=sid, asynchronous=True)
    assert ok == "ok"
    assert (await terminal.recv_action("sessionEnd"))["session"] == {"id": sid}
    assert result_of(await desktop.recv_action("terminalApiResponse")) == {"Result": "Success"}
    with pytest.raises(TerminalApiError) as info:
        await asyncio.to_thread(client.end_session, session_id=sid)
    assert info.value.condition == "NotFound"


async def test_sessions_over_the_websocket_terminal_api_action(api: Gateway):
    _store, desktop, terminal = await devices(api)
    sid = session_id()
    begin = begin_document("TERM", sid, [Operation("DisplayRequest", 2500)])
    reply = await desktop.request({"action": "terminalApi", **begin}, "terminalApiResponse")
    assert set(reply) == {"action", "SaleToPOIResponse"}
    assert result_of(reply) == {"Result": "Success"}
    header = begin["SaleToPOIRequest"]["MessageHeader"]
    assert reply["SaleToPOIResponse"]["MessageHeader"] == {**header, "MessageType": "Response"}
    assert (await terminal.recv_action("sessionBegin"))["session"]["id"] == sid

    assert (await shown(desktop, terminal, "D-1"))["waitingScreen"] == {
        "sessionId": sid,
        "timeoutMs": 2500,
    }

    reply = await desktop.request(
        {"action": "terminalApi", **end_document(sid)}, "terminalApiResponse"
    )
    assert result_of(reply) == {"Result": "Success"}
    ended = await terminal.recv_action("sessionEnd")
    assert ended["interruptWaitingScreen"] is False
    assert "waitingScreen" not in await shown(desktop, terminal, "D-2")

    # A malformed document is a Failure answer, not an error frame, and the socket stays open.
    bad = {"action": "terminalApi", "SaleToPOIRequest": {"MessageHeader": {}}}
    reply = await desktop.request(bad, "terminalApiResponse")
    assert result_of(reply)["Result"] == "Failure"
    assert result_of(reply)["ErrorCondition"] == "MessageFormat"
    await desktop.ping()


async def test_a_terminal_may_not_send_terminal_api_requests(api: Gateway):
    _store, _, terminal = await devices(api)
    await terminal.send({"action": "terminalApi", **begin_document("TERM", session_id())})
    error = await terminal.recv_error()
    assert error == {
        "error": "Forbidden",
        "message": "Only desktop devices can send Terminal API requests",
        "requestAction": "terminalApi",
    }


# --- HTTP: keys, methods, paths, bodies ------------------------------------------------------


@pytest.mark.parametrize("path", ["/terminal-api/sync", "/terminal-api/async"])
async def test_a_wrong_or_missing_key_is_401_with_a_json_body(api: Gateway, path: str):
    store = api.store()
    terminal = await api.connect(store.terminal)
    document = begin_document("TERM", session_id())
    for key in (None, "", "wrong-key-0123456789abcdefghijklmnopqrstuv", store.terminal):
        reply = await post(api, path, document, key=key)
        assert reply.status == 401, (key, reply.body)
        assert reply.content_type.startswith("application/json")
        body = reply.json()
        assert isinstance(body, dict)
        assert body["error"] == "Unauthorized"
        assert isinstance(body["message"], str)
    # Nothing reached the terminal.
    assert await terminal.frames_until_pong() == []


async def test_the_key_header_name_is_case_insensitive(api: Gateway):
    store = api.store()
    terminal = await api.connect(store.terminal)
    reply = await post(
        api,
        "/terminal-api/sync",
        begin_document("TERM", session_id()),
        headers={"X-API-KEY": store.desktop},
    )
    assert result_of(reply.json()) == {"Result": "Success"}
    await terminal.recv_action("sessionBegin")


@pytest.mark.parametrize("path", ["/terminal-api/sync", "/terminal-api/async"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_other_methods_are_405(api: Gateway, path: str, method: str):
    store = api.store()
    reply = await post(api, path, key=store.desktop, method=method)
    assert reply.status == 405
    assert "POST" in reply.headers.get("allow", "")
    assert isinstance(reply.json(), dict)


@pytest.mark.parametrize("path", ["/terminal-api/sync/", "/terminal-api/async/"])
async def test_a_trailing_slash_is_not_found_and_not_a_redirect(api: Gateway, path: str):
    """Only the exact paths serve the Terminal API (contract section 4): the slashed path is
    404, with no Location to follow (a redirect would make clients re-send the body as GET)."""
    store = api.store()
    terminal = await api.connect(store.terminal)
    reply = await post(api, path, begin_document("TERM", session_id()), key=store.desktop)
    assert reply.status == 404
    assert "location" not in reply.headers
    assert await terminal.frames_until_pong() == []


@pytest.mark.parametrize("path", ["/terminal-api/sync", "/terminal-api/async"])
@pytest.mark.parametrize(
    "body", [b"not json", b"", b"{", b'{"SaleToPOIRequest": NaN}', b"\xff\xfe", b"[1, 2]"]
)
async def test_a_body_that_is_not_a_json_document_is_a_message_format_failure(
    api: Gateway, path: str, body: bytes
):
    store = api.store()
    reply = await post(
        api, path, body, key=store.desktop, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 200
    assert reply.content_type.startswith("application/json")
    document = reply.json()
    assert document["SaleToPOIResponse"]["MessageHeader"]["MessageType"] == "Response"
    result = result_of(document)
    assert result["Result"] == "Failure"
    assert result["ErrorCondition"] == "MessageFormat"
    assert isinstance(result["AdditionalResponse"], str)
    assert result["AdditionalResponse"]


async def test_async_answers_a_failure_itself_and_pushes_nothing(api: Gateway):
    store, desktop, terminal = await devices(api)
    reply = await post(api, "/terminal-api/async", end_document("never-begun"), key=store.desktop)
    assert reply.status == 200
    result = result_of(reply.json())
    assert result["Result"] == "Failure"
    assert result["ErrorCondition"] == "NotFound"
    assert await desktop.frames_until_pong() == []
    assert await terminal.frames_until_pong() == []


async def test_unknown_and_unreachable_terminals_are_named_failures(api: Gateway):
    store = api.store()  # its terminal TERM is registered but never connects
    desktop = await api.connect(store.desktop)
    unknown = await post(api, "/terminal-api/sync", begin_document("NOPE", "s1"), key=store.desktop)
    offline = await post(api, "/terminal-api/sync", begin_document("TERM", "s1"), key=store.desktop)
    assert result_of(unknown.json())["ErrorCondition"] == "NotFound"
    assert result_of(offline.json())["ErrorCondition"] == "UnreachableHost"
    assert await desktop.frames_until_pong() == []


async def test_another_stores_terminal_looks_unknown(api: Gateway):
    mine = api.store()  # its own terminal is TERM
    other = api.store(terminal_id="ONLY-B")
    other_terminal = await api.connect(other.terminal)
    foreign = await post(
        api, "/terminal-api/sync", begin_document("ONLY-B", "s1"), key=mine.desktop
    )
    unknown = await post(
        api, "/terminal-api/sync", begin_document("NEVER-SEEN", "s1"), key=mine.desktop
    )
    foreign_result = result_of(foreign.json())
    unknown_result = result_of(unknown.json())
    assert foreign_result["ErrorCondition"] == "NotFound"
    assert unknown_result["ErrorCondition"] == "NotFound"
    assert foreign_result["AdditionalResponse"].replace("ONLY-B", "X") == (
        unknown_result["AdditionalResponse"].replace("NEVER-SEEN", "X")
    )
    assert other.slug not in foreign.body.decode()
    assert await other_terminal.frames_until_pong() == []


# --- Reconnects, busy terminals, answers ------------------------------------------------------


async def test_a_terminal_reconnecting_during_a_session_is_told_it_is_still_active(api: Gateway):
    store, _desktop, terminal = await devices(api)
    sid = session_id()
    await begin_sync(api, store.desktop, "TERM", sid)
    await terminal.recv_action("sessionBegin")

    # Replaced by a new connection with the same key.
    again = await api.connect(store.terminal)
    resumed = await again.recv_action("sessionBegin")
    assert resumed["resumed"] is True
    assert resumed["session"]["id"] == sid
    assert [op["type"] for op in resumed["session"]["operations"]] == [
        "Payment",
        "InputRequest",
        "DisplayRequest",
    ]

    # Lost without a goodbye, then back.
    again.ws.transport.abort()
    back = await api.connect(store.terminal)
    assert (await back.recv_action("sessionBegin"))["resumed"] is True

    # After the end a reconnecting terminal hears of no session.
    await post(api, "/terminal-api/sync", end_document(sid), key=store.desktop)
    await back.recv_action("sessionEnd")
    await back.close()
    last = await api.connect(store.terminal)
    assert all(f.get("action") != "sessionBegin" for f in await last.frames_until_pong())


async def test_display_and_input_follow_the_busy_rule(api: Gateway):
    _store, desktop, terminal = await devices(api)
    tid = f"TXN-{uuid.uuid4().hex[:8]}"
    payment = {
        "action": "payment",
        "terminalId": "TERM",
        "paymentRequest": {"transactionId": tid, "amount": "5.00", "currency": "USD"},
    }
    await desktop.request(payment, "paymentAccepted")
    await desktop.send(
        {
            "action": "display",
            "terminalId": "TERM",
            "displayRequest": {"requestId": "D-1", "lines": ["x"]},
        }
    )
    busy = await desktop.recv_error()
    assert busy == {
        "error": "Conflict",
        "message": "Terminal is busy",
        "requestId": "D-1",
        "inFlightTransactionId": tid,
        "requestAction": "display",
    }
    await terminal.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": tid, "status": "DECLINED"},
        }
    )
    await desktop.recv_action("paymentComplete", transactionId=tid)

    ask = {
        "action": "input",
        "terminalId": "TERM",
        "inputRequest": {"requestId": "IN-1", "type": "number", "prompt": "Guests?"},
    }
    await desktop.request(ask, "inputAccepted")
    await desktop.send(
        {**payment, "paymentRequest": {**payment["paymentRequest"], "transactionId": "TXN-B"}}
    )
    busy = await desktop.recv_error()
    assert busy["error"] == "Conflict"
    assert busy["message"] == "Terminal is busy"
    assert busy["inFlightRequestId"] == "IN-1"


async def test_bad_terminal_answers_are_refused_on_the_socket(api: Gateway):
    _store, desktop, terminal = await devices(api)
    ask = {
        "action": "input",
        "terminalId": "TERM",
        "inputRequest": {
            "requestId": "IN-1",
            "type": "menu",
            "prompt": "Tip?",
            "options": ["0", "10", "15"],
        },
    }
    await desktop.request(ask, "inputAccepted")
    await terminal.recv_action("inputRequest")

    await terminal.send({"action": "inputResponse"})
    assert (await terminal.recv_error())["message"] == "inputResponse is required"
    await terminal.send(
        {
            "action": "inputResponse",
            "inputResponse": {"requestId": "IN-1", "status": "SUCCESS", "value": "99"},
        }
    )
    error = await terminal.recv_error()
    assert error["error"] == "Bad Request"
    assert error["message"] == "inputResponse.value must be one of the menu's option values"
    await terminal.send(
        {"action": "inputResponse", "inputResponse": {"requestId": "NOPE", "status": "SUCCESS"}}
    )
    assert (await terminal.recv_error())["message"] == "Request not found"
    await desktop.send({"action": "inputResponse", "inputResponse": {"requestId": "IN-1"}})
    assert (await desktop.recv_error())["error"] == "Forbidden"

    await terminal.send(
        {
            "action": "inputResponse",
            "inputResponse": {"requestId": "IN-1", "status": "SUCCESS", "value": "15"},
        }
    )
    done = await desktop.recv_action("inputComplete", requestId="IN-1")
    assert done["inputResponse"]["value"] == "15"
    await terminal.send(
        {
            "action": "inputResponse",
            "inputResponse": {"requestId": "IN-1", "status": "SUCCESS", "value": "10"},
        }
    )
    second = await terminal.recv_error()
    assert second["error"] == "Conflict"
    assert second["message"] == "Request already completed"


# --- Short timers ----------------------------------------------------------------------------


async def test_a_session_without_requests_expires_and_the_terminal_is_told(short: Gateway):
    store, _desktop, terminal = await devices(short)
    sid = session_id()
    await begin_sync(short, store.desktop, "TERM", sid)
    await terminal.recv_action("sessionBegin")
    ended = await terminal.recv_action("sessionEnd", timeout=15)
    assert ended["session"] == {"id": sid}
    assert ended["reason"] == "expired"
    assert ended["interruptWaitingScreen"] is False
    # The session is over: its End is NotFound, and a new one may begin.
    reply = await post(short, "/terminal-api/sync", end_document(sid), key=store.desktop)
    assert result_of(reply.json())["ErrorCondition"] == "NotFound"
    await begin_sync(short, store.desktop, "TERM", session_id())


async def test_an_unanswered_input_request_times_out_to_the_desktop(short: Gateway):
    _store, desktop, terminal = await devices(short)
    ask = {
        "action": "input",
        "terminalId": "TERM",
        "inputRequest": {
            "requestId": "IN-1",
            "type": "phone",
            "prompt": "Phone?",
            "maxInputTimeMs": 500,
        },
    }
    await desktop.request(ask, "inputAccepted")
    await terminal.recv_action("inputRequest")
    done = await desktop.recv_action("inputComplete", timeout=15, requestId="IN-1")
    assert done["inputResponse"]["status"] == "TIMEOUT"
    assert done["inputResponse"]["type"] == "phone"
    assert "value" not in done["inputResponse"]
    # The terminal is free again.
    await desktop.request(
        {**ask, "inputRequest": {**ask["inputRequest"], "requestId": "IN-2"}}, "inputAccepted"
    )


async def test_an_unanswered_display_request_times_out_to_the_desktop(short: Gateway):
    _store, desktop, terminal = await devices(short)
    await display(desktop, "D-1")
    await terminal.recv_action("displayRequest")
    done = await desktop.recv_action("displayComplete", timeout=15, requestId="D-1")
    assert done["displayResponse"]["status"] == "TIMEOUT"
    # An answer after the timeout is too late.
    await terminal.send(
        {"action": "displayResponse", "displayResponse": {"requestId": "D-1", "status": "SUCCESS"}}
    )
    late = await terminal.recv_error()
    assert late["error"] == "Conflict"
    assert await desktop.frames_until_pong() == []


# --- Reconnects re-send what is in flight, and the simulated terminal -------------------------


async def test_a_reconnecting_terminal_gets_its_in_flight_display_and_input_again(api: Gateway):
    store, desktop, terminal = await devices(api)
    sid = session_id()
    await begin_sync(api, store.desktop, "TERM", sid, operations=[Operation("DisplayRequest", 900)])
    await terminal.recv_action("sessionBegin")
    rid = f"D-{uuid.uuid4().hex[:8]}"
    await display(desktop, rid)
    first = await terminal.recv_action("displayRequest", requestId=rid)
    assert "resent" not in first

    # Replaced by a new connection with the same key before answering.
    again = await api.connect(store.terminal)
    assert (await again.recv_action("sessionBegin"))["resumed"] is True
    resent = await again.recv_action("displayRequest", requestId=rid)
    assert resent["resent"] is True
    assert resent["displayRequest"] == first["displayRequest"]
    assert resent["waitingScreen"] == {"sessionId": sid, "timeoutMs": 900}
    await again.send(
        {"action": "displayResponse", "displayResponse": {"requestId": rid, "status": "SUCCESS"}}
    )
    done = await desktop.recv_action("displayComplete", requestId=rid)
    assert done["displayResponse"]["status"] == "SUCCESS"

    # Outside a session, lost without a goodbye: the input request comes again, no waiting screen.
    await post(api, "/terminal-api/sync", end_document(sid), key=store.desktop)
    await again.recv_action("sessionEnd")
    iid = f"IN-{uuid.uuid4().hex[:8]}"
    ask = {"requestId": iid, "type": "number", "prompt": "Guests?"}
    await desktop.request(
        {"action": "input", "terminalId": "TERM", "inputRequest": ask}, "inputAccepted"
    )
    await again.recv_action("inputRequest", requestId=iid)
    again.ws.transport.abort()
    back = await api.connect(store.terminal)
    resent = await back.recv_action("inputRequest", requestId=iid)
    assert resent["resent"] is True
    assert "waitingScreen" not in resent
    await back.send(
        {
            "action": "inputResponse",
            "inputResponse": {"requestId": iid, "status": "SUCCESS", "value": 4},
        }
    )
    done = await desktop.recv_action("inputComplete", requestId=iid)
    assert done["inputResponse"]["value"] == "4"


async def test_simulate_terminal_answers_display_and_input_requests(api: Gateway):
    store = api.store()
    desktop = await api.connect(store.desktop)
    log: list[str] = []
    simulator = Simulator(
        url=api.server.ws_url,
        key=store.terminal,
        behaviour="approve",
        delay=0,
        count=0,
        duration=60,
        heartbeat=30,
        rng=random.Random(1),
        write=log.append,
    )
    task = asyncio.create_task(simulator.run())
    try:
        await desktop.recv_action("terminalStatusUpdate")  # the simulator came online
        sid = session_id()
        ops = [Operation("DisplayRequest", 500), Operation("InputRequest", 500)]
        await begin_sync(api, store.desktop, "TERM", sid, operations=ops)
        rid = f"D-{uuid.uuid4().hex[:8]}"
        await display(desktop, rid)
        done = await desktop.recv_action("displayComplete", requestId=rid)
        assert done["displayResponse"]["status"] == "SUCCESS"
        asks = [
            ({"type": "confirmation"}, True),
            ({"type": "text"}, "simulated text"),
            ({"type": "number"}, "42"),
            ({"type": "email"}, "customer@example.com"),
            ({"type": "phone"}, "+1 555 0100"),
            ({"type": "menu", "options": ["0", "10", "15"]}, "0"),
        ]
        for body, value in asks:
            iid = f"IN-{uuid.uuid4().hex[:8]}"
            ask = {"requestId": iid, "prompt": "?", **body}
            frame = {"action": "input", "terminalId": "TERM", "inputRequest": ask}
            await desktop.request(frame, "inputAccepted")
            done = await desktop.recv_action("inputComplete", requestId=iid)
            assert done["inputResponse"]["status"] == "SUCCESS", done
            assert done["inputResponse"]["value"] == value
        iid = f"IN-{uuid.uuid4().hex[:8]}"
        ask = {"requestId": iid, "prompt": "Sign", "type": "signature"}
        await desktop.request(
            {"action": "input", "terminalId": "TERM", "inputRequest": ask}, "inputAccepted"
        )
        done = await desktop.recv_action("inputComplete", requestId=iid)
        assert done["inputResponse"]["value"].startswith("data:image/png;base64,")
        await post(api, "/terminal-api/sync", end_document(sid), key=store.desktop)
        for _ in range(50):  # the sessionEnd reaches the simulator's log
            if any(line.startswith(f"sessionEnd {sid}") for line in log):
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert any(line.startswith(f"sessionBegin {sid}:") for line in log), log
    assert any(line.startswith(f"displayRequest {rid}: Thank you | Please wait") for line in log)
    assert any(line.startswith(f"sessionEnd {sid} (ended)") for line in log), log
    assert not any("gateway error" in line for line in log), log
