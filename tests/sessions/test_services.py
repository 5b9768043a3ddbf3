"""Terminal API sessions and display / input requests through their services, on the database.

Channel-layer sends are queued in an Outbox on commit; each test reads what would have been
sent to which socket (a connection's channel name) with ``django_capture_on_commit_callbacks``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from payments import services as payments
from payments.models import Transaction
from posgateway import nexo
from posgateway.core.events import Outbox
from posgateway.core.protocol import BadRequest, Conflict, NotFound
from posgateway.gateway import connections as gateway
from sessions import services
from sessions.models import (
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalApiMessage,
    TerminalRequest,
    TerminalSession,
)
from terminals import services as terminals
from terminals.models import Connection, Device, DeviceType
from tests.factories import Store, make_device, make_payment, render, sent

pytestmark = pytest.mark.django_db

HEADER = {
    "ProtocolVersion": "3.0",
    "MessageClass": "Service",
    "MessageCategory": "Admin",
    "MessageType": "Request",
    "ServiceID": "svc-1",
    "SaleID": "POS-1",
    "POIID": "TERM-1",
}


def op(op_type: str, timeout_ms: int = 5000) -> dict[str, Any]:
    return {
        "Type": op_type,
        "Variant": "WaitingScreen",
        "UserInterfaceData": {"WaitingScreenTimeoutMs": timeout_ms},
    }


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def begin_doc(
    session_id: str = "table-12",
    poi_id: str = "TERM-1",
    operations: Any = None,
    **header: Any,
) -> dict[str, Any]:
    service = {
        "Session": {"Id": session_id, "Type": "Begin"},
        "Operation": operations
        if operations is not None
        else [op("Payment"), op("InputRequest", 3000)],
    }
    return {
        "SaleToPOIRequest": {
            "MessageHeader": {**HEADER, "POIID": poi_id, **header},
            "AdminRequest": {"ServiceIdentification": b64(service)},
        }
    }


def end_doc(session_id: str = "table-12", **header: Any) -> dict[str, Any]:
    return {
        "SaleToPOIRequest": {
            "MessageHeader": {"MessageClass": "Service", "MessageCategory": "Admin", **header},
            "AdminRequest": {
                "ServiceIdentification": b64({"Session": {"Id": session_id, "Type": "End"}})
            },
        }
    }


def result_of(response: dict[str, Any]) -> dict[str, Any]:
    return response["SaleToPOIResponse"]["AdminResponse"]["Response"]


@dataclass
class Sent:
    """What a service call queued for the sockets, by channel name."""

    messages: list[tuple[str, dict[str, Any]]]

    def to(self, channel: str) -> list[dict[str, Any]]:
        return [m["frame"] for c, m in self.messages if c == channel and "frame" in m]

    def one(self, channel: str, action: str) -> dict[str, Any]:
        frames = [f for f in self.to(channel) if f.get("action") == action]
        assert len(frames) == 1, self.messages
        return frames[0]


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Call a service with a fresh Outbox; returns its result and what it sent after commit."""

    def call(fn, **kw: Any) -> tuple[Any, Sent]:
        outbox = Outbox()
        with django_capture_on_commit_callbacks(execute=True):
            value = render(fn(outbox=outbox, **kw))
        return value, Sent([(c, m) for c, m, _ in sent(outbox)[0]])

    return call


@dataclass
class World:
    desktop: Device
    desktop_channel: str
    desktop_conn: Connection
    terminal: Device
    terminal_channel: str
    offline_terminal: Device
    other_desktop: Device
    other_desktop_conn: Connection
    other_terminal: Device
    other_terminal_channel: str


def connect(device: Device, channel: str, django_capture_on_commit_callbacks) -> Connection:
    with django_capture_on_commit_callbacks(execute=True):
        return terminals.connection_open(
            device_pk=device.pk, channel_name=channel, remote_addr="127.0.0.1", outbox=Outbox()
        )


@pytest.fixture
def world(django_capture_on_commit_callbacks) -> World:
    desktop, _ = make_device("store-a", DeviceType.DESKTOP, "POS-1")
    terminal, _ = make_device("store-a", DeviceType.TERMINAL, "TERM-1")
    offline, _ = make_device("store-a", DeviceType.TERMINAL, "TERM-2")
    other_desktop, _ = make_device("store-b", DeviceType.DESKTOP, "POS-1")
    other_terminal, _ = make_device("store-b", DeviceType.TERMINAL, "TERM-B")
    capture = django_capture_on_commit_callbacks
    desktop_conn = connect(desktop, "chan.desk-a", capture)
    connect(terminal, "chan.term-a", capture)
    other_desktop_conn = connect(other_desktop, "chan.desk-b", capture)
    connect(other_terminal, "chan.term-b", capture)
    return World(
        desktop=desktop,
        desktop_channel="chan.desk-a",
        desktop_conn=desktop_conn,
        terminal=terminal,
        terminal_channel="chan.term-a",
        offline_terminal=offline,
        other_desktop=other_desktop,
        other_desktop_conn=other_desktop_conn,
        other_terminal=other_terminal,
        other_terminal_channel="chan.term-b",
    )


def api(run, world: World, document: object, desktop: Device | None = None):
    (response, session), sent = run(
        nexo.terminal_api_request, desktop=desktop or world.desktop, document=document
    )
    return response, session, sent


def begin(run, world: World, **kw: Any) -> TerminalSession:
    response, session, _ = api(run, world, begin_doc(**kw))
    assert result_of(response) == {"Result": "Success"}, response
    return session


# --- Begin -----------------------------------------------------------------------------------


def test_begin_stores_the_session_and_tells_the_terminal(run, world: World) -> None:
    response, session, sent = api(run, world, begin_doc())

    assert response == {
        "SaleToPOIResponse": {
            "MessageHeader": {**HEADER, "MessageType": "Response"},
            "AdminResponse": {"Response": {"Result": "Success"}},
        }
    }
    stored = TerminalSession.objects.get()
    assert stored.pk == session.pk
    assert stored.session_id == "table-12"
    assert stored.group_id == world.desktop.group_id
    assert stored.terminal_id == world.terminal.pk
    assert stored.desktop_id == world.desktop.pk
    assert stored.state == SessionState.ACTIVE
    assert stored.sale_id == "POS-1"
    assert stored.service_id == "svc-1"
    assert stored.ended_at is None
    operations = [
        {"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000},
        {"type": "InputRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 3000},
    ]
    assert stored.operations == operations
    frame = sent.one(world.terminal_channel, "sessionBegin")
    assert frame["session"] == {"id": "table-12", "operations": operations}
    assert sent.to(world.desktop_channel) == []


def test_begin_with_the_same_id_again_succeeds_without_a_second_session(run, world: World) -> None:
    first = begin(run, world)
    response, again, _ = api(run, world, begin_doc())
    assert result_of(response) == {"Result": "Success"}
    assert again.pk == first.pk
    assert TerminalSession.objects.count() == 1


def test_begin_with_a_new_id_while_a_session_is_active_is_busy(run, world: World) -> None:
    begin(run, world)
    response, session, sent = api(run, world, begin_doc("table-13"))
    assert session is None
    assert result_of(response)["Result"] == "Failure"
    assert result_of(response)["ErrorCondition"] == "Busy"
    assert "TERM-1" in result_of(response)["AdditionalResponse"]
    assert list(TerminalSession.objects.values_list("session_id", flat=True)) == ["table-12"]
    assert sent.messages == []


def test_an_active_session_id_cannot_be_begun_on_a_second_terminal(
    run, world: World, django_capture_on_commit_callbacks
) -> None:
    begin(run, world)
    connect(world.offline_terminal, "chan.term-2", django_capture_on_commit_callbacks)
    response, session, sent = api(run, world, begin_doc(poi_id="TERM-2"))
    assert session is None
    assert result_of(response)["ErrorCondition"] == "Busy"
    assert result_of(response)["AdditionalResponse"] == (
        "Session table-12 is already active on another terminal"
    )
    assert TerminalSession.objects.count() == 1
    assert sent.messages == []


def race(monkeypatch, world: World, *, session_id: str, terminal: Device) -> None:
    """Another Begin commits its session after this Begin's check saw none (two Begins at once:
    the check has nothing to lock, the unique constraints decide)."""
    TerminalSession.objects.create(
        group_id=world.desktop.group_id,
        session_id=session_id,
        terminal=terminal,
        desktop=world.desktop,
        operations=[],
        last_request_at=timezone.now(),
    )
    monkeypatch.setattr(services, "_locked_active_session", lambda terminal: None)


def test_a_begin_losing_a_race_for_the_terminal_is_told_the_terminal_is_busy(
    run, world: World, monkeypatch
) -> None:
    race(monkeypatch, world, session_id="table-13", terminal=world.terminal)
    response, session, sent = api(run, world, begin_doc("table-12"))
    assert session is None
    assert result_of(response) == {
        "Result": "Failure",
        "ErrorCondition": "Busy",
        "AdditionalResponse": "Terminal TERM-1 already has an active session",
    }
    assert list(TerminalSession.objects.values_list("session_id", flat=True)) == ["table-13"]
    assert sent.messages == []


def test_a_begin_losing_a_race_to_the_same_begin_succeeds_once(
    run, world: World, monkeypatch
) -> None:
    race(monkeypatch, world, session_id="table-12", terminal=world.terminal)
    response, session, sent = api(run, world, begin_doc("table-12"))
    assert result_of(response) == {"Result": "Success"}
    assert TerminalSession.objects.get().pk == session.pk
    assert sent.messages == []  # the winner told the terminal


def test_a_begin_losing_a_race_for_the_session_id_is_told_it_is_active_elsewhere(
    run, world: World, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    connect(world.offline_terminal, "chan.term-2", django_capture_on_commit_callbacks)
    race(monkeypatch, world, session_id="table-12", terminal=world.offline_terminal)
    response, session, _ = api(run, world, begin_doc("table-12"))
    assert session is None
    assert result_of(response)["ErrorCondition"] == "Busy"
    assert result_of(response)["AdditionalResponse"] == (
        "Session table-12 is already active on another terminal"
    )
    assert TerminalSession.objects.get().terminal_id == world.offline_terminal.pk


def test_unknown_and_other_store_poiids_get_the_same_not_found(run, world: World) -> None:
    unknown, _, _ = api(run, world, begin_doc(poi_id="TERM-X"))
    other, _, _ = api(run, world, begin_doc(poi_id="TERM-B"))
    for response in (unknown, other):
        assert result_of(response)["Result"] == "Failure"
        assert result_of(response)["ErrorCondition"] == "NotFound"
    unknown_text = result_of(unknown)["AdditionalResponse"]
    other_text = result_of(other)["AdditionalResponse"]
    assert unknown_text.replace("TERM-X", "<id>") == other_text.replace("TERM-B", "<id>")
    assert "store-b" not in other_text
    assert TerminalSession.objects.count() == 0


def test_a_terminal_poiid_of_a_desktop_is_not_found(run, world: World) -> None:
    response, _, _ = api(run, world, begin_doc(poi_id="POS-1"))
    assert result_of(response)["ErrorCondition"] == "NotFound"


def test_begin_on_a_terminal_that_is_not_connected_is_unreachable(run, world: World) -> None:
    response, session, sent = api(run, world, begin_doc(poi_id="TERM-2"))
    assert session is None
    assert result_of(response)["ErrorCondition"] == "UnreachableHost"
    assert "TERM-2" in result_of(response)["AdditionalResponse"]
    assert TerminalSession.objects.count() == 0
    assert sent.messages == []


def test_begin_on_a_terminal_whose_socket_closed_is_unreachable(run, world: World) -> None:
    conn = Connection.objects.get(device=world.terminal, closed_at__isnull=True)
    run(terminals.connection_close, connection_pk=conn.pk, code=1000)
    response, _, _ = api(run, world, begin_doc())
    assert result_of(response)["ErrorCondition"] == "UnreachableHost"
    assert TerminalSession.objects.count() == 0


def test_a_malformed_document_creates_nothing(run, world: World) -> None:
    document = begin_doc()
    document["SaleToPOIRequest"]["AdminRequest"]["ServiceIdentification"] = "%%%"
    response, session, sent = api(run, world, document)
    assert session is None
    assert result_of(response)["ErrorCondition"] == "MessageFormat"
    assert result_of(response)["AdditionalResponse"] == (
        "AdminRequest.ServiceIdentification is not valid Base64"
    )
    assert TerminalSession.objects.count() == 0
    assert sent.messages == []


@pytest.mark.parametrize(
    ("case", "condition"),
    [
        ("malformed", "MessageFormat"),
        ("unknown-poiid", "NotFound"),
        ("offline", "UnreachableHost"),
        ("busy", "Busy"),
        ("unknown-session-end", "NotFound"),
    ],
)
def test_every_failure_echoes_the_request_header_as_a_response(
    run, world: World, case: str, condition: str
) -> None:
    header = {**HEADER, "ServiceID": "svc-echo", "SaleID": "TILL-7"}
    if case == "busy":
        begin(run, world)
    if case == "malformed":
        document = begin_doc(operations=[op("Refund")], ServiceID="svc-echo", SaleID="TILL-7")
    elif case == "unknown-session-end":
        document = end_doc("nope", **{k: v for k, v in header.items() if k != "POIID"})
        header = {k: v for k, v in header.items() if k != "POIID"}
    else:
        poi = {"unknown-poiid": "TERM-X", "offline": "TERM-2", "busy": "TERM-1"}[case]
        header["POIID"] = poi
        document = begin_doc("table-99", poi_id=poi, ServiceID="svc-echo", SaleID="TILL-7")
    response, _, _ = api(run, world, document)
    assert response["SaleToPOIResponse"]["MessageHeader"] == {**header, "MessageType": "Response"}
    result = result_of(response)
    assert result["Result"] == "Failure"
    assert result["ErrorCondition"] == condition
    assert isinstance(result["AdditionalResponse"], str)
    assert result["AdditionalResponse"]


def test_a_failure_for_a_body_without_a_header_has_a_response_header(run, world: World) -> None:
    response, _, _ = api(run, world, ["not", "an", "object"])
    assert response["SaleToPOIResponse"]["MessageHeader"] == {"MessageType": "Response"}
    assert result_of(response)["ErrorCondition"] == "MessageFormat"


# --- End -------------------------------------------------------------------------------------


def test_end_ends_the_session_and_does_not_interrupt_the_waiting_screen(run, world: World) -> None:
    begin(run, world)
    response, session, sent = api(run, world, end_doc())
    assert result_of(response) == {"Result": "Success"}
    assert response["SaleToPOIResponse"]["MessageHeader"] == {
        "MessageClass": "Service",
        "MessageCategory": "Admin",
        "MessageType": "Response",
    }
    stored = TerminalSession.objects.get()
    assert stored.state == SessionState.ENDED
    assert stored.ended_at is not None
    assert stored.end_reason == "ended"
    frame = sent.one(world.terminal_channel, "sessionEnd")
    assert frame["session"] == {"id": "table-12"}
    assert frame["interruptWaitingScreen"] is False
    assert session.pk == stored.pk


def test_end_of_an_unknown_session_is_not_found(run, world: World) -> None:
    response, session, sent = api(run, world, end_doc("never-begun"))
    assert session is None
    assert result_of(response)["ErrorCondition"] == "NotFound"
    assert "never-begun" in result_of(response)["AdditionalResponse"]
    assert sent.messages == []


def test_end_twice_is_not_found_the_second_time(run, world: World) -> None:
    begin(run, world)
    api(run, world, end_doc())
    response, _, sent = api(run, world, end_doc())
    assert result_of(response)["ErrorCondition"] == "NotFound"
    assert sent.messages == []


def test_another_store_cannot_end_a_session(run, world: World) -> None:
    begin(run, world)
    response, _, sent = api(run, world, end_doc(), desktop=world.other_desktop)
    assert result_of(response)["ErrorCondition"] == "NotFound"
    assert TerminalSession.objects.get().state == SessionState.ACTIVE
    assert sent.messages == []


def test_end_naming_another_terminal_is_not_found(run, world: World) -> None:
    begin(run, world)
    response, _, _ = api(run, world, end_doc(POIID="TERM-2"))
    assert result_of(response)["ErrorCondition"] == "NotFound"
    assert TerminalSession.objects.get().state == SessionState.ACTIVE


def test_a_session_id_may_be_begun_again_after_its_end(run, world: World) -> None:
    begin(run, world)
    api(run, world, end_doc())
    again = begin(run, world)
    assert TerminalSession.objects.count() == 2
    assert TerminalSession.objects.get(state=SessionState.ACTIVE).pk == again.pk


# --- The waiting screen on forwarded requests -------------------------------------------------


def pay(run, world: World, tid: str) -> dict[str, Any]:
    accepted, sent = run(
        payments.payment_start,
        desktop=world.desktop,
        desktop_connection_id=world.desktop_conn.connection_id,
        terminal_id="TERM-1",
        payment_request={"transactionId": tid, "amount": "10.00", "currency": "USD"},
    )
    assert accepted["action"] == "paymentAccepted", accepted
    frame = sent.one(world.terminal_channel, "paymentRequest")
    run(
        payments.payment_result,
        terminal=world.terminal,
        payment_response={"transactionId": tid, "status": "SUCCESS", "authorizationCode": "A1"},
    )
    return frame


def start(run, world: World, kind: str, body: dict[str, Any], **kw: Any):
    return run(
        services.request_start,
        kind=kind,
        desktop=kw.get("desktop", world.desktop),
        desktop_connection_id=kw.get("connection_id", world.desktop_conn.connection_id),
        terminal_id=kw.get("terminal_id", "TERM-1"),
        body=body,
    )


def show(run, world: World, rid: str) -> dict[str, Any]:
    accepted, sent = start(run, world, RequestKind.DISPLAY, {"requestId": rid, "lines": ["Hi"]})
    assert accepted["action"] == "displayAccepted"
    frame = sent.one(world.terminal_channel, "displayRequest")
    run(
        services.request_result,
        kind=RequestKind.DISPLAY,
        terminal=world.terminal,
        response={"requestId": rid, "status": "SUCCESS"},
    )
    return frame


def ask(run, world: World, rid: str) -> dict[str, Any]:
    body = {"requestId": rid, "type": "confirmation", "prompt": "Receipt?"}
    accepted, sent = start(run, world, RequestKind.INPUT, body)
    assert accepted["action"] == "inputAccepted"
    frame = sent.one(world.terminal_channel, "inputRequest")
    run(
        services.request_result,
        kind=RequestKind.INPUT,
        terminal=world.terminal,
        response={"requestId": rid, "status": "SUCCESS", "value": True},
    )
    return frame


def test_requests_of_named_types_carry_the_waiting_screen(run, world: World) -> None:
    begin(run, world, operations=[op("Payment", 5000), op("InputRequest", 3000)])
    assert pay(run, world, "TXN-1")["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 5000}
    assert ask(run, world, "IN-1")["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 3000}
    # The session does not name DisplayRequest: no waiting screen after it.
    assert "waitingScreen" not in show(run, world, "D-1")
    assert TerminalRequest.objects.get(request_id="IN-1").session.session_id == "table-12"


def test_a_display_only_session_puts_the_waiting_screen_after_displays_only(
    run, world: World
) -> None:
    begin(run, world, operations=op("DisplayRequest", 1500))
    assert show(run, world, "D-1")["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 1500}
    assert "waitingScreen" not in pay(run, world, "TXN-1")
    assert "waitingScreen" not in ask(run, world, "IN-1")


def test_no_request_carries_the_waiting_screen_after_the_end(run, world: World) -> None:
    ops = [op("Payment"), op("InputRequest"), op("DisplayRequest")]
    begin(run, world, operations=ops)
    assert "waitingScreen" in pay(run, world, "TXN-1")
    api(run, world, end_doc())
    assert "waitingScreen" not in pay(run, world, "TXN-2")
    assert "waitingScreen" not in ask(run, world, "IN-1")
    assert "waitingScreen" not in show(run, world, "D-1")
    assert TerminalRequest.objects.get(request_id="IN-1").session is None


def test_a_session_on_another_terminal_puts_no_waiting_screen_here(
    run, world: World, django_capture_on_commit_callbacks
) -> None:
    connect(world.offline_terminal, "chan.term-2", django_capture_on_commit_callbacks)
    begin(run, world, poi_id="TERM-2", operations=[op("Payment"), op("InputRequest")])
    assert "waitingScreen" not in pay(run, world, "TXN-1")
    assert "waitingScreen" not in ask(run, world, "IN-1")


# --- Expiry and resumption -------------------------------------------------------------------


def age(session: TerminalSession, seconds: float) -> None:
    TerminalSession.objects.filter(pk=session.pk).update(
        last_request_at=timezone.now() - dt.timedelta(seconds=seconds)
    )


def test_an_idle_session_expires_and_the_terminal_is_told(run, world: World, settings) -> None:
    settings.SESSION_MAX_AGE_S = 60
    session = begin(run, world)
    age(session, 30)
    count, sent = run(services.sweep_sessions)
    assert count == 0
    assert TerminalSession.objects.get().state == SessionState.ACTIVE

    age(session, 61)
    count, sent = run(services.sweep_sessions)
    assert count == 1
    stored = TerminalSession.objects.get()
    assert stored.state == SessionState.EXPIRED
    assert stored.end_reason == "expired"
    assert stored.ended_at is not None
    frame = sent.one(world.terminal_channel, "sessionEnd")
    assert frame["session"] == {"id": "table-12"}
    assert frame["reason"] == "expired"
    assert frame["interruptWaitingScreen"] is False

    count, sent = run(services.sweep_sessions)
    assert count == 0
    assert sent.messages == []
    assert "waitingScreen" not in pay(run, world, "TXN-1")


def test_a_session_expiring_while_its_terminal_is_offline_is_not_resumed(
    run, world: World, settings
) -> None:
    settings.SESSION_MAX_AGE_S = 60
    session = begin(run, world)
    conn = Connection.objects.get(device=world.terminal, closed_at__isnull=True)
    run(terminals.connection_close, connection_pk=conn.pk, code=1000)
    age(session, 61)

    count, sent = run(services.sweep_sessions)

    assert count == 1
    assert TerminalSession.objects.get().state == SessionState.EXPIRED
    # Nobody to tell: no sessionEnd is sent, to the old socket or any other.
    assert [m for _, m in sent.messages if m.get("frame", {}).get("action") == "sessionEnd"] == []
    (_ctx, backlog), _ = run(
        gateway.device_connected,
        device=world.terminal,
        channel_name="chan.term-a2",
        remote_addr="127.0.0.1",
    )
    assert [f["action"] for f in backlog if f["action"].startswith("session")] == []


def test_a_request_restarts_the_session_clock(run, world: World, settings) -> None:
    settings.SESSION_MAX_AGE_S = 60
    session = begin(run, world)
    age(session, 59)
    pay(run, world, "TXN-1")
    age_now = timezone.now() - TerminalSession.objects.get().last_request_at
    assert age_now < dt.timedelta(seconds=5)
    count, _ = run(services.sweep_sessions)
    assert count == 0
    assert TerminalSession.objects.get().state == SessionState.ACTIVE


def test_a_display_request_restarts_the_session_clock(run, world: World, settings) -> None:
    settings.SESSION_MAX_AGE_S = 60
    session = begin(run, world)
    age(session, 120)
    show(run, world, "D-1")
    count, _ = run(services.sweep_sessions)
    assert count == 0


def test_an_expired_session_id_can_be_begun_again(run, world: World, settings) -> None:
    settings.SESSION_MAX_AGE_S = 60
    age(begin(run, world), 120)
    run(services.sweep_sessions)
    begin(run, world)
    assert TerminalSession.objects.filter(state=SessionState.ACTIVE).count() == 1


def test_an_expired_session_cannot_be_ended(run, world: World, settings) -> None:
    settings.SESSION_MAX_AGE_S = 60
    age(begin(run, world), 120)
    run(services.sweep_sessions)
    response, _, _ = api(run, world, end_doc())
    assert result_of(response)["ErrorCondition"] == "NotFound"


def test_resume_frames_tell_a_reconnecting_terminal_of_its_session(run, world: World) -> None:
    assert render(services.session_resumed(terminal_pk=world.terminal.pk)) == []
    begin(run, world, operations=op("DisplayRequest", 2500))
    frames = render(services.session_resumed(terminal_pk=world.terminal.pk))
    assert len(frames) == 1
    assert frames[0]["action"] == "sessionBegin"
    assert frames[0]["resumed"] is True
    assert frames[0]["session"] == {
        "id": "table-12",
        "operations": [
            {"type": "DisplayRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 2500}
        ],
    }
    assert render(services.session_resumed(terminal_pk=world.other_terminal.pk)) == []
    api(run, world, end_doc())
    assert render(services.session_resumed(terminal_pk=world.terminal.pk)) == []


def test_a_terminal_connecting_during_a_session_gets_it_in_its_backlog(run, world: World) -> None:
    begin(run, world)
    (_ctx, backlog), _ = run(
        gateway.device_connected,
        device=world.terminal,
        channel_name="chan.term-a2",
        remote_addr="127.0.0.1",
    )
    assert [f["action"] for f in backlog] == ["sessionBegin"]
    assert backlog[0]["resumed"] is True
    # A desktop's backlog carries no session frames.
    (_, desktop_backlog), _ = run(
        gateway.device_connected,
        device=world.desktop,
        channel_name="chan.desk-a2",
        remote_addr="127.0.0.1",
    )
    assert all(f["action"] != "sessionBegin" for f in desktop_backlog)


def test_in_flight_display_and_input_requests_are_resent_with_the_waiting_screen(
    run, world: World
) -> None:
    assert render(services.in_flight_requests(terminal_pk=world.terminal.pk, outbox=Outbox())) == []
    begin(run, world, operations=[op("InputRequest", 3000)])
    body = {"requestId": "IN-1", "type": "menu", "prompt": "Tip?", "options": ["0", "10"]}
    _, sent = start(run, world, RequestKind.INPUT, body)
    first = sent.one(world.terminal_channel, "inputRequest")

    frames = render(services.in_flight_requests(terminal_pk=world.terminal.pk, outbox=Outbox()))
    assert len(frames) == 1
    again = frames[0]
    assert again["resent"] is True
    assert again["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 3000}
    assert {k: again[k] for k in ("action", "requestId", "inputRequest", "desktopId")} == {
        k: first[k] for k in ("action", "requestId", "inputRequest", "desktopId")
    }
    assert (
        render(services.in_flight_requests(terminal_pk=world.other_terminal.pk, outbox=Outbox()))
        == []
    )

    # Once answered, nothing is resent.
    answer(run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": "0"})
    assert render(services.in_flight_requests(terminal_pk=world.terminal.pk, outbox=Outbox())) == []


def test_a_resent_request_carries_no_waiting_screen_once_the_session_ended(
    run, world: World
) -> None:
    begin(run, world, operations=[op("DisplayRequest", 3000)])
    _, sent = start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["Hi"]})
    assert "waitingScreen" in sent.one(world.terminal_channel, "displayRequest")
    api(run, world, end_doc())
    (frame,) = render(services.in_flight_requests(terminal_pk=world.terminal.pk, outbox=Outbox()))
    assert frame["action"] == "displayRequest"
    assert frame["resent"] is True
    assert "waitingScreen" not in frame


def test_a_reconnecting_terminal_gets_its_in_flight_request_again(run, world: World) -> None:
    begin(run, world, operations=[op("DisplayRequest", 2000)])
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["Total 12.00"]})
    (_ctx, backlog), _ = run(
        gateway.device_connected,
        device=world.terminal,
        channel_name="chan.term-a2",
        remote_addr="127.0.0.1",
    )
    assert [f["action"] for f in backlog] == ["sessionBegin", "displayRequest"]
    frame = backlog[1]
    assert frame["requestId"] == "D-1"
    assert frame["displayRequest"]["lines"] == ["Total 12.00"]
    assert frame["resent"] is True
    assert frame["waitingScreen"] == {"sessionId": "table-12", "timeoutMs": 2000}
    # Still one request, still in flight: the terminal's answer completes it.
    assert TerminalRequest.objects.get().status == RequestStatus.IN_PROGRESS


def test_a_reconnecting_terminal_gets_an_in_flight_request_outside_a_session(
    run, world: World
) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "text", "prompt": "?"})
    (_ctx, backlog), _ = run(
        gateway.device_connected,
        device=world.terminal,
        channel_name="chan.term-a2",
        remote_addr="127.0.0.1",
    )
    assert [(f["action"], f["requestId"], f["resent"]) for f in backlog] == [
        ("inputRequest", "IN-1", True)
    ]
    assert "waitingScreen" not in backlog[0]


# --- Display and input requests --------------------------------------------------------------


def test_a_display_request_is_stored_and_forwarded(run, world: World) -> None:
    body = {"requestId": "D-1", "lines": ["Total", "12.30"], "durationMs": 4000}
    accepted, sent = start(run, world, RequestKind.DISPLAY, body)
    assert accepted["action"] == "displayAccepted"
    assert accepted["requestId"] == "D-1"
    assert accepted["status"] == "IN_PROGRESS"
    assert accepted["terminalId"] == "TERM-1"
    assert accepted["deviceId"] == "TERM-1"
    req = TerminalRequest.objects.get()
    assert req.request_id == "D-1"
    assert req.kind == RequestKind.DISPLAY
    assert req.status == RequestStatus.IN_PROGRESS
    assert req.terminal_id == world.terminal.pk
    assert req.desktop_id == world.desktop.pk
    assert req.session is None
    assert req.request == {"lines": ["Total", "12.30"], "durationMs": 4000}
    frame = sent.one(world.terminal_channel, "displayRequest")
    assert frame["requestId"] == "D-1"
    assert frame["desktopId"] == world.desktop_conn.connection_id
    assert frame["displayRequest"] == {"lines": ["Total", "12.30"], "durationMs": 4000}
    assert "waitingScreen" not in frame


def test_a_request_without_an_id_gets_one(run, world: World) -> None:
    accepted, sent = start(run, world, RequestKind.INPUT, {"type": "text", "prompt": "Name?"})
    rid = accepted["requestId"]
    assert isinstance(rid, str)
    assert rid
    assert sent.one(world.terminal_channel, "inputRequest")["requestId"] == rid
    assert TerminalRequest.objects.get().request_id == rid


def test_an_input_request_is_stored_with_its_type(run, world: World) -> None:
    body = {"requestId": "IN-1", "type": "menu", "prompt": "Tip?", "options": ["0", "10"]}
    _, sent = start(run, world, RequestKind.INPUT, body)
    req = TerminalRequest.objects.get()
    assert req.input_type == "menu"
    assert req.request["options"] == [{"value": "0", "label": "0"}, {"value": "10", "label": "10"}]
    assert sent.one(world.terminal_channel, "inputRequest")["inputRequest"]["type"] == "menu"


def test_a_bad_request_stores_nothing(run, world: World) -> None:
    with pytest.raises(BadRequest):
        start(run, world, RequestKind.INPUT, {"type": "date", "prompt": "?"})
    assert TerminalRequest.objects.count() == 0


def test_a_request_to_an_offline_or_unknown_terminal_is_not_found(run, world: World) -> None:
    for terminal_id in ("TERM-2", "TERM-X", "TERM-B"):
        with pytest.raises(NotFound) as info:
            start(run, world, RequestKind.DISPLAY, {"lines": ["x"]}, terminal_id=terminal_id)
        assert info.value.message == "Terminal connection not found"
    assert TerminalRequest.objects.count() == 0


def test_a_request_while_a_payment_is_in_flight_is_busy(run, world: World) -> None:
    run(
        payments.payment_start,
        desktop=world.desktop,
        desktop_connection_id=world.desktop_conn.connection_id,
        terminal_id="TERM-1",
        payment_request={"transactionId": "TXN-1", "amount": "5.00", "currency": "EUR"},
    )
    with pytest.raises(Conflict) as info:
        start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    assert info.value.to_frame() == {
        "error": "Conflict",
        "message": "Terminal is busy",
        "requestId": "D-1",
        "inFlightTransactionId": "TXN-1",
    }
    assert TerminalRequest.objects.count() == 0


def test_a_request_while_another_request_is_in_flight_is_busy(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    with pytest.raises(Conflict) as info:
        start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "text", "prompt": "?"})
    assert info.value.message == "Terminal is busy"
    assert info.value.extra["inFlightRequestId"] == "D-1"
    assert TerminalRequest.objects.count() == 1


def test_a_payment_while_a_request_is_in_flight_is_busy(run, world: World) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "text", "prompt": "?"})
    with pytest.raises(Conflict) as info:
        run(
            payments.payment_start,
            desktop=world.desktop,
            desktop_connection_id=world.desktop_conn.connection_id,
            terminal_id="TERM-1",
            payment_request={"transactionId": "TXN-1", "amount": "5.00", "currency": "EUR"},
        )
    assert info.value.message == "Terminal is busy"
    assert info.value.extra["inFlightRequestId"] == "IN-1"
    assert info.value.extra["transactionId"] == "TXN-1"
    assert Transaction.objects.count() == 0


def test_a_request_id_is_not_reused_in_a_store(run, world: World) -> None:
    show(run, world, "D-1")
    with pytest.raises(Conflict) as info:
        start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["again"]})
    assert info.value.message == "requestId already used"
    assert TerminalRequest.objects.count() == 1


def test_another_store_may_use_the_same_request_id(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    accepted, sent = start(
        run,
        world,
        RequestKind.DISPLAY,
        {"requestId": "D-1", "lines": ["y"]},
        desktop=world.other_desktop,
        connection_id=world.other_desktop_conn.connection_id,
        terminal_id="TERM-B",
    )
    assert accepted["requestId"] == "D-1"
    assert sent.one(world.other_terminal_channel, "displayRequest")["displayRequest"]["lines"] == [
        "y"
    ]


def answer(run, world: World, kind: str, response: Any, terminal: Device | None = None):
    _, sent = run(
        services.request_result,
        kind=kind,
        terminal=terminal or world.terminal,
        response=response,
    )
    return sent


def test_a_display_result_is_stored_and_pushed(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    sent = answer(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "status": "SUCCESS"})
    req = TerminalRequest.objects.get()
    assert req.status == RequestStatus.SUCCESS
    assert req.completed_at is not None
    assert req.result == {"requestId": "D-1", "status": "SUCCESS", "errorMessage": None}
    frame = sent.one(world.desktop_channel, "displayComplete")
    assert frame["requestId"] == "D-1"
    assert frame["displayResponse"] == {
        "requestId": "D-1",
        "status": "SUCCESS",
        "errorMessage": None,
    }


@pytest.mark.parametrize(
    ("body", "value", "stored"),
    [
        ({"type": "text", "prompt": "Table?"}, "window seat", "window seat"),
        ({"type": "number", "prompt": "Guests?"}, 4, "4"),
        ({"type": "menu", "prompt": "Tip?", "options": ["0", "10", "15"]}, "15", "15"),
        ({"type": "confirmation", "prompt": "Receipt?"}, False, False),
    ],
)
def test_non_personal_input_answers_are_stored(
    run, world: World, body: dict[str, Any], value: Any, stored: Any
) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", **body})
    sent = answer(
        run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": value}
    )
    req = TerminalRequest.objects.get()
    assert req.status == RequestStatus.SUCCESS
    assert req.result["value"] == stored
    assert req.result["type"] == body["type"]
    frame = sent.one(world.desktop_channel, "inputComplete")
    assert frame["requestId"] == "IN-1"
    assert frame["inputResponse"]["value"] == stored
    assert frame["inputResponse"]["status"] == "SUCCESS"


@pytest.mark.parametrize(
    ("input_type", "value"),
    [
        ("email", "ann.private@example.com"),
        ("phone", "+44 20 7946 0958"),
        ("signature", "data:image/png;base64,iVBORw0KGgoSIGNATUREBYTES"),
    ],
)
def test_personal_input_answers_reach_the_desktop_but_are_not_stored(
    run, world: World, input_type: str, value: str
) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": input_type, "prompt": "?"})
    sent = answer(
        run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": value}
    )
    frame = sent.one(world.desktop_channel, "inputComplete")
    assert frame["inputResponse"]["value"] == value
    assert frame["inputResponse"]["type"] == input_type

    row = TerminalRequest.objects.filter(request_id="IN-1").values().get()
    assert row["status"] == "SUCCESS"
    assert row["result"] == {"status": "SUCCESS", "type": input_type}
    assert value not in json.dumps(row, default=str)
    session_rows = list(TerminalSession.objects.values())
    assert value not in json.dumps(session_rows, default=str)


@pytest.mark.parametrize("status", ["TIMEOUT", "CANCELLED"])
def test_a_terminal_reporting_timeout_or_cancel_is_recorded(run, world: World, status: str) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "email", "prompt": "?"})
    sent = answer(
        run,
        world,
        RequestKind.INPUT,
        {"requestId": "IN-1", "status": status, "errorMessage": "customer left"},
    )
    req = TerminalRequest.objects.get()
    assert req.status == status
    assert req.error_message == "customer left"
    assert req.completed_at is not None
    assert sent.one(world.desktop_channel, "inputComplete")["inputResponse"]["status"] == status


def test_a_cancelled_display_is_recorded(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    answer(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "status": "CANCELLED"})
    assert TerminalRequest.objects.get().status == RequestStatus.CANCELLED


def test_the_terminal_is_free_again_after_an_answer(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    answer(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "status": "SUCCESS"})
    accepted, _ = start(run, world, RequestKind.DISPLAY, {"requestId": "D-2", "lines": ["y"]})
    assert accepted["status"] == "IN_PROGRESS"


def test_an_answer_that_does_not_fit_the_question_changes_nothing(run, world: World) -> None:
    body = {"requestId": "IN-1", "type": "menu", "prompt": "Tip?", "options": ["0", "10"]}
    start(run, world, RequestKind.INPUT, body)
    with pytest.raises(BadRequest) as info:
        answer(
            run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": "99"}
        )
    assert info.value.message == "inputResponse.value must be one of the menu's option values"
    req = TerminalRequest.objects.get()
    assert req.status == RequestStatus.IN_PROGRESS
    assert req.result is None


def test_a_missing_answer_body_is_a_bad_request(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    with pytest.raises(BadRequest) as info:
        answer(run, world, RequestKind.DISPLAY, None)
    assert info.value.message == "displayResponse is required"
    with pytest.raises(BadRequest) as info:
        answer(run, world, RequestKind.DISPLAY, {"status": "SUCCESS"})
    assert info.value.message == "displayResponse.requestId is required"
    assert TerminalRequest.objects.get().status == RequestStatus.IN_PROGRESS


def test_the_timeout_sweep_times_a_request_out_once(run, world: World) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "phone", "prompt": "?"})
    count, sent = run(services.sweep_request_timeouts)
    assert count == 0
    assert sent.messages == []

    TerminalRequest.objects.update(deadline_at=timezone.now() - dt.timedelta(seconds=1))
    count, sent = run(services.sweep_request_timeouts)
    assert count == 1
    req = TerminalRequest.objects.get()
    assert req.status == RequestStatus.TIMEOUT
    assert req.completed_at is not None
    assert req.result == {"status": "TIMEOUT", "type": "phone"}
    frame = sent.one(world.desktop_channel, "inputComplete")
    assert frame["requestId"] == "IN-1"
    assert frame["inputResponse"]["status"] == "TIMEOUT"

    count, sent = run(services.sweep_request_timeouts)
    assert count == 0
    assert sent.messages == []
    # A terminal answering after the timeout is told the request is over.
    with pytest.raises(Conflict):
        answer(
            run,
            world,
            RequestKind.INPUT,
            {"requestId": "IN-1", "status": "SUCCESS", "value": "+1 555 0100"},
        )
    assert TerminalRequest.objects.get().status == RequestStatus.TIMEOUT


def test_a_display_request_times_out_after_its_duration_plus_the_request_timeout(
    run, world: World, settings
) -> None:
    settings.TERMINAL_REQUEST_TIMEOUT_S = 30
    body = {"requestId": "D-1", "lines": ["x"], "durationMs": 20_000}
    start(run, world, RequestKind.DISPLAY, body)
    req = TerminalRequest.objects.get()
    assert dt.timedelta(seconds=45) < req.deadline_at - req.created_at < dt.timedelta(seconds=55)
    TerminalRequest.objects.update(deadline_at=timezone.now() - dt.timedelta(seconds=1))
    _, sent = run(services.sweep_request_timeouts)
    assert sent.one(world.desktop_channel, "displayComplete")["displayResponse"]["status"] == (
        "TIMEOUT"
    )


def test_an_input_deadline_includes_the_max_input_time(run, world: World, settings) -> None:
    settings.TERMINAL_REQUEST_TIMEOUT_S = 30
    body = {"requestId": "IN-1", "type": "text", "prompt": "?", "maxInputTimeMs": 120_000}
    start(run, world, RequestKind.INPUT, body)
    req = TerminalRequest.objects.get()
    assert dt.timedelta(seconds=145) < req.deadline_at - req.created_at < dt.timedelta(seconds=155)


def test_an_answer_for_another_stores_request_is_not_found(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    with pytest.raises(NotFound) as info:
        answer(
            run,
            world,
            RequestKind.DISPLAY,
            {"requestId": "D-1", "status": "SUCCESS"},
            terminal=world.other_terminal,
        )
    assert info.value.message == "Request not found"
    assert TerminalRequest.objects.get().status == RequestStatus.IN_PROGRESS


def test_an_answer_for_an_unknown_request_is_not_found(run, world: World) -> None:
    with pytest.raises(NotFound) as info:
        answer(run, world, RequestKind.INPUT, {"requestId": "nope", "status": "SUCCESS"})
    assert info.value.message == "Request not found"


def test_an_answer_of_the_wrong_kind_is_not_found(run, world: World) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    with pytest.raises(NotFound):
        answer(run, world, RequestKind.INPUT, {"requestId": "D-1", "status": "SUCCESS"})


def test_a_second_answer_is_a_conflict(run, world: World) -> None:
    start(run, world, RequestKind.INPUT, {"requestId": "IN-1", "type": "text", "prompt": "?"})
    answer(run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": "a"})
    with pytest.raises(Conflict) as info:
        answer(
            run, world, RequestKind.INPUT, {"requestId": "IN-1", "status": "SUCCESS", "value": "b"}
        )
    assert info.value.message == "Request already completed"
    assert TerminalRequest.objects.get().result["value"] == "a"


def test_a_result_reaches_the_desktop_on_its_current_connection(
    run, world: World, django_capture_on_commit_callbacks
) -> None:
    start(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "lines": ["x"]})
    connect(world.desktop, "chan.desk-a-new", django_capture_on_commit_callbacks)
    sent = answer(run, world, RequestKind.DISPLAY, {"requestId": "D-1", "status": "SUCCESS"})
    assert sent.to(world.desktop_channel) == []
    assert sent.one("chan.desk-a-new", "displayComplete")["requestId"] == "D-1"


def test_session_requests_are_linked_to_the_session(run, world: World) -> None:
    session = begin(run, world, operations=[op("DisplayRequest")])
    show(run, world, "D-1")
    assert list(session.requests.values_list("request_id", flat=True)) == ["D-1"]


def test_a_document_is_kept_unchanged_by_the_service(run, world: World) -> None:
    document = begin_doc()
    before = copy.deepcopy(document)
    api(run, world, document)
    assert document == before


# --- Terminal API messages: remembered 48 h -------------------------------------------------


def test_the_sweep_forgets_terminal_api_messages_older_than_48_hours():
    store = Store("store-nexo")
    now = timezone.now()
    ages = {"S-OLD": dt.timedelta(hours=48, minutes=1), "S-NEW": dt.timedelta(hours=47)}
    for service_id, age in ages.items():
        message = TerminalApiMessage.objects.create(
            group=store.group,
            sale_id="POS-A",
            service_id=service_id,
            poi_id="TERM-1",
            category="Payment",
            desktop=store.desktop,
            transaction=make_payment(store, f"T-{service_id}"),
        )
        # auto_now_add would overwrite a created_at given to create().
        TerminalApiMessage.objects.filter(pk=message.pk).update(created_at=now - age)

    gateway.sweep(outbox=Outbox())  # what every process runs every SWEEP_INTERVAL_S

    assert list(TerminalApiMessage.objects.values_list("service_id", flat=True)) == ["S-NEW"]
    # The payments stay, as any payment does; the old key may start a new one.
    assert Transaction.objects.filter(transaction_id__in=["T-S-OLD", "T-S-NEW"]).count() == 2
    assert (
        services.terminal_api_message(
            group_id=store.group.pk, sale_id="POS-A", service_id="S-OLD", poi_id="TERM-1"
        )
        is None
    )


def test_a_display_request_the_channel_layer_refused_is_retried_until_handed_off(
    world: World, django_capture_on_commit_callbacks
) -> None:
    outbox = Outbox()
    with django_capture_on_commit_callbacks(execute=True):
        services.request_start(
            kind=RequestKind.DISPLAY,
            desktop=world.desktop,
            desktop_connection_id=world.desktop_conn.connection_id,
            terminal_id="TERM-1",
            body={"requestId": "D-1", "lines": ["Hi"]},
            outbox=outbox,
        )
    [(channel, _, on_fail)] = sent(outbox)[0]
    assert channel == world.terminal_channel

    on_fail(Outbox())  # the channel layer refused the hand-off
    TerminalRequest.objects.update(forward_retry_at=timezone.now())
    [(claim, event)] = services.forwards_due()

    frame = render(event)
    assert (event.channel_name, frame["action"], frame["requestId"], frame["resent"]) == (
        world.terminal_channel,
        "displayRequest",
        "D-1",
        True,
    )
    services.forwards_confirmed(claims=[claim])
    TerminalRequest.objects.filter(forward_retry_at__isnull=False).update(
        forward_retry_at=timezone.now()
    )
    assert services.forwards_due() == []
    assert TerminalRequest.objects.get(request_id="D-1").status == "IN_PROGRESS"
