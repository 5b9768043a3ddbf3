"""``POST /terminal-api/sync`` and ``/async`` through the ASGI application (an HTTP consumer,
not a Django view): the body limit and the response kept on the session; near-miss paths
through Django's test client."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import ApplicationCommunicator

from posgateway.asgi import application
from posgateway.core.events import Outbox
from sessions.models import SessionState, TerminalSession
from terminals import services as terminals
from terminals.models import DeviceType
from tests.factories import make_device
from tests.sessions.test_services import begin_doc, end_doc

pytestmark = pytest.mark.django_db


@pytest.fixture
def pos(django_capture_on_commit_callbacks):
    desktop, key = make_device("store-a", DeviceType.DESKTOP, "POS-1")
    terminal, _ = make_device("store-a", DeviceType.TERMINAL, "TERM-1")
    with django_capture_on_commit_callbacks(execute=True):
        terminals.connection_open(
            device_pk=terminal.pk, channel_name="chan.t", remote_addr="127.0.0.1", outbox=Outbox()
        )
    return SimpleNamespace(desktop=desktop, key=key, terminal=terminal)


class Answer:
    """An HTTP answer read as Django's test client's: status_code, headers, json()."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = body

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.headers

    def json(self) -> Any:
        return json.loads(self.content)


def post(client, path: str, body: bytes, key: str):
    """POST through the ASGI application; the exact Terminal API paths reach its consumer, the
    rest Django (as under daphne)."""
    if path not in ("/terminal-api/sync", "/terminal-api/async"):
        return client.generic(
            "POST", path, body, content_type="application/json", HTTP_X_API_KEY=key
        )

    async def run() -> Answer:
        comm = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "http_version": "1.1",
                "method": "POST",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": [(b"x-api-key", key.encode())],
            },
        )
        await comm.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await comm.receive_output(5)
        chunks = []
        while True:
            message = await comm.receive_output(5)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await comm.wait(5)
        headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        return Answer(start["status"], headers, b"".join(chunks))

    return async_to_sync(run)()


def padded(document: dict[str, Any], size: int) -> bytes:
    """The document as JSON, padded with trailing white space to exactly ``size`` bytes."""
    raw = json.dumps(document).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def result_of(body: dict[str, Any]) -> dict[str, Any]:
    return body["SaleToPOIResponse"]["AdminResponse"]["Response"]


@pytest.mark.parametrize("path", ["/terminal-api/sync", "/terminal-api/async"])
def test_a_body_over_the_message_limit_is_413_and_creates_nothing(client, pos, path: str) -> None:
    response = post(client, path, padded(begin_doc(), 65537), pos.key)
    assert response.status_code == 413
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "error": "Payload Too Large",
        "message": "The body exceeds 65536 bytes",
    }
    assert TerminalSession.objects.count() == 0


def test_a_body_of_exactly_the_limit_is_read_as_a_document(client, pos) -> None:
    response = post(client, "/terminal-api/sync", padded(begin_doc(), 65536), pos.key)
    assert response.status_code == 200
    assert result_of(response.json()) == {"Result": "Success"}
    assert TerminalSession.objects.get().state == SessionState.ACTIVE


def test_the_limit_is_the_message_limit_setting(client, pos, settings) -> None:
    settings.MAX_MESSAGE_BYTES = 2000
    over = post(client, "/terminal-api/sync", padded(begin_doc(), 2001), pos.key)
    assert over.status_code == 413
    assert over.json()["message"] == "The body exceeds 2000 bytes"
    assert TerminalSession.objects.count() == 0
    at = post(client, "/terminal-api/sync", padded(begin_doc(), 2000), pos.key)
    assert result_of(at.json()) == {"Result": "Success"}


def test_a_sync_begin_keeps_its_response_on_the_session(client, pos) -> None:
    response = post(client, "/terminal-api/sync", json.dumps(begin_doc()).encode(), pos.key)
    assert TerminalSession.objects.get().last_response == response.json()


def test_an_async_begin_and_end_keep_their_response_on_the_session(client, pos) -> None:
    response = post(client, "/terminal-api/async", json.dumps(begin_doc()).encode(), pos.key)
    assert response.content == b"ok"
    kept = TerminalSession.objects.get().last_response
    assert result_of(kept) == {"Result": "Success"}
    assert kept["SaleToPOIResponse"]["MessageHeader"]["MessageType"] == "Response"
    assert kept["SaleToPOIResponse"]["MessageHeader"]["POIID"] == "TERM-1"

    post(client, "/terminal-api/async", json.dumps(end_doc()).encode(), pos.key)
    kept = TerminalSession.objects.get().last_response
    assert result_of(kept) == {"Result": "Success"}
    assert "POIID" not in kept["SaleToPOIResponse"]["MessageHeader"]  # the End's own header


def test_a_failure_is_not_kept_on_the_session(client, pos) -> None:
    post(client, "/terminal-api/sync", json.dumps(begin_doc()).encode(), pos.key)
    busy = post(client, "/terminal-api/sync", json.dumps(begin_doc("other")).encode(), pos.key)
    assert result_of(busy.json())["ErrorCondition"] == "Busy"
    assert result_of(TerminalSession.objects.get().last_response) == {"Result": "Success"}


@pytest.mark.parametrize("path", ["/terminal-api/sync/", "/terminal-api/async/", "/terminal-api/"])
def test_a_near_miss_path_is_a_json_404_naming_the_right_paths(client, pos, path: str) -> None:
    response = post(client, path, json.dumps(begin_doc()).encode(), pos.key)
    assert response.status_code == 404
    assert "Location" not in response
    assert response.json() == {
        "error": "Not Found",
        "message": "The Terminal API is at /terminal-api/sync and /terminal-api/async "
        "(exactly, no trailing slash)",
    }
    assert TerminalSession.objects.count() == 0
