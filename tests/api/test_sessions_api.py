"""/api/sessions/ and /api/terminal-requests/: Terminal API sessions and display / input requests.

Read-only and scoped like every endpoint: a member of one store neither sees nor can probe the
other's sessions and requests; what a terminal was asked or answered is never shown.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from posgateway import nexo
from posgateway.core.events import Outbox
from sessions import services as sessions
from sessions.models import (
    InputType,
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalRequest,
    TerminalSession,
)
from terminals import services as terminals
from terminals.models import Device, DeviceType
from tests.api.conftest import Store
from tests.factories import make_device

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2024, 3, 10, 12, 0, tzinfo=dt.UTC)
OPERATIONS = [{"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000}]
ENDPOINTS = ["/api/sessions/", "/api/terminal-requests/"]

_serial = itertools.count(1)


def make_session(
    store: Store,
    session_id: str = "table-1",
    *,
    state: str = SessionState.ACTIVE,
    begun_at: dt.datetime = T0,
    terminal: Device | None = None,
    desktop: Device | None = None,
    last_response: dict[str, Any] | None = None,
) -> TerminalSession:
    """A session as the services would have left it, written directly (any state, any time)."""
    ended = state != SessionState.ACTIVE
    session = TerminalSession.objects.create(
        group=store.group,
        session_id=session_id,
        terminal=terminal or store.terminal,
        desktop=desktop or store.desktop,
        sale_id="POS-1",
        service_id=f"svc-{next(_serial)}",
        operations=OPERATIONS,
        state=state,
        last_request_at=begun_at + dt.timedelta(minutes=1),
        ended_at=begun_at + dt.timedelta(minutes=2) if ended else None,
        end_reason={SessionState.ENDED: "ended", SessionState.EXPIRED: "expired"}.get(state, ""),
        last_response=last_response,
    )
    # auto_now_add would overwrite a begun_at given to create().
    TerminalSession.objects.filter(pk=session.pk).update(begun_at=begun_at)
    session.refresh_from_db()
    return session


def make_request(
    store: Store,
    request_id: str | None = None,
    *,
    kind: str = RequestKind.DISPLAY,
    input_type: str = "",
    status: str = RequestStatus.SUCCESS,
    session: TerminalSession | None = None,
    created_at: dt.datetime = T0,
    terminal: Device | None = None,
    desktop: Device | None = None,
) -> TerminalRequest:
    done = status != RequestStatus.IN_PROGRESS
    req = TerminalRequest.objects.create(
        group=store.group,
        request_id=request_id or f"R-{next(_serial)}",
        kind=kind,
        input_type=input_type,
        terminal=terminal or store.terminal,
        desktop=desktop or store.desktop,
        session=session,
        status=status,
        request={"lines": ["Welcome"]} if kind == RequestKind.DISPLAY else {"type": input_type},
        result={"status": status} if done else None,
        error_message="No answer from the terminal in time" if status == "TIMEOUT" else "",
        completed_at=created_at + dt.timedelta(seconds=3) if done else None,
        deadline_at=created_at + dt.timedelta(seconds=60),
    )
    TerminalRequest.objects.filter(pk=req.pk).update(created_at=created_at)
    req.refresh_from_db()
    return req


def ids(response, key: str) -> list[str]:
    assert response.status_code == 200, response.content
    return [row[key] for row in response.json()["results"]]


# --- Sessions --------------------------------------------------------------------------------


def test_session_list_shows_a_session_with_camel_case_fields(store_a, api_a):
    session = make_session(store_a, "table-12", state=SessionState.ENDED)

    body = api_a.get("/api/sessions/").json()

    assert body["count"] == 1
    assert body["results"] == [
        {
            "id": session.pk,
            "sessionId": "table-12",
            "store": "store-a",
            "terminal": "TERM-1",
            "desktop": "POS-1",
            "status": "ENDED",
            "saleId": "POS-1",
            "serviceId": session.service_id,
            "operations": OPERATIONS,
            "begunAt": "2024-03-10T12:00:00.000Z",
            "lastRequestAt": "2024-03-10T12:01:00.000Z",
            "endedAt": "2024-03-10T12:02:00.000Z",
            "endReason": "ended",
        }
    ]


def test_session_detail_lists_its_requests_oldest_first_with_the_kept_response(store_a, api_a):
    kept = {"SaleToPOIResponse": {"AdminResponse": {"Response": {"Result": "Success"}}}}
    session = make_session(store_a, "table-7", last_response=kept)
    later = make_request(
        store_a,
        "IN-1",
        kind=RequestKind.INPUT,
        input_type=InputType.CONFIRMATION,
        status=RequestStatus.TIMEOUT,
        session=session,
        created_at=T0 + dt.timedelta(minutes=5),
    )
    earlier = make_request(store_a, "DISP-1", session=session, created_at=T0)
    make_request(store_a, "OUTSIDE", created_at=T0)  # not sent during the session

    body = api_a.get(f"/api/sessions/{session.pk}/").json()

    assert body["sessionId"] == "table-7"
    assert body["status"] == "ACTIVE"
    assert (body["endedAt"], body["endReason"]) == (None, "")
    assert body["lastResponse"] == kept
    assert body["requests"] == [
        {
            "id": earlier.pk,
            "requestId": "DISP-1",
            "type": "display",
            "inputType": None,
            "status": "SUCCESS",
            "errorMessage": "",
            "createdAt": "2024-03-10T12:00:00.000Z",
            "completedAt": "2024-03-10T12:00:03.000Z",
        },
        {
            "id": later.pk,
            "requestId": "IN-1",
            "type": "input",
            "inputType": "confirmation",
            "status": "TIMEOUT",
            "errorMessage": "No answer from the terminal in time",
            "createdAt": "2024-03-10T12:05:00.000Z",
            "completedAt": "2024-03-10T12:05:03.000Z",
        },
    ]


@pytest.fixture
def varied_sessions(store_a):
    """Four sessions of store A on two terminals and two desktops, one day apart."""
    term_2, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    pos_2, _ = make_device(store_a.group, DeviceType.DESKTOP, "POS-2")
    make_session(store_a, "S-ENDED", state=SessionState.ENDED, begun_at=T0)
    make_session(
        store_a,
        "S-EXPIRED",
        state=SessionState.EXPIRED,
        begun_at=T0 + dt.timedelta(days=1),
        terminal=term_2,
    )
    make_session(
        store_a,
        "S-ACTIVE",
        begun_at=T0 + dt.timedelta(days=2),
        terminal=term_2,
        desktop=pos_2,
    )
    # An ended session's Session.Id may be used again.
    make_session(store_a, "S-ENDED", begun_at=T0 + dt.timedelta(days=3))
    return store_a


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["S-ENDED", "S-ACTIVE", "S-EXPIRED", "S-ENDED"]),
        ("store=store-a", ["S-ENDED", "S-ACTIVE", "S-EXPIRED", "S-ENDED"]),
        ("group=store-a&status=EXPIRED", ["S-EXPIRED"]),
        ("status=ACTIVE", ["S-ENDED", "S-ACTIVE"]),
        ("status=ENDED&status=EXPIRED", ["S-EXPIRED", "S-ENDED"]),
        ("terminal=TERM-2", ["S-ACTIVE", "S-EXPIRED"]),
        ("desktop=POS-2", ["S-ACTIVE"]),
        ("session_id=S-ENDED", ["S-ENDED", "S-ENDED"]),
        ("created_after=2024-03-11", ["S-ENDED", "S-ACTIVE", "S-EXPIRED"]),
        ("created_before=2024-03-11T12:00:00Z", ["S-ENDED"]),
        # An offset is honoured: 13:00+01:00 is 12:00 UTC, the second session's start.
        (
            "created_after=2024-03-11T13:00:00%2B01:00&created_before=2024-03-13",
            ["S-ACTIVE", "S-EXPIRED"],
        ),
        ("ordering=begun_at", ["S-ENDED", "S-EXPIRED", "S-ACTIVE", "S-ENDED"]),
        ("ordering=-last_request_at", ["S-ENDED", "S-ACTIVE", "S-EXPIRED", "S-ENDED"]),
        ("ordering=last_request_at&status=ENDED", ["S-ENDED"]),
        ("terminal=NO-SUCH-TERMINAL", []),
    ],
)
def test_session_filters_select_the_matching_sessions(varied_sessions, api_a, query, expected):
    assert ids(api_a.get(f"/api/sessions/?{query}"), "sessionId") == expected


def test_session_list_pages_like_the_other_lists(varied_sessions, api_a):
    first = api_a.get("/api/sessions/?page_size=3").json()
    second = api_a.get(first["next"]).json()

    assert first["count"] == 4
    assert len(first["results"]) == 3
    assert [s["sessionId"] for s in second["results"]] == ["S-ENDED"]
    assert second["next"] is None
    assert api_a.get("/api/sessions/?page=3&page_size=3").status_code == 404


# --- Terminal requests -----------------------------------------------------------------------


def test_terminal_request_shows_its_outcome_and_session(store_a, api_a):
    session = make_session(store_a, "table-3")
    req = make_request(
        store_a,
        "IN-9",
        kind=RequestKind.INPUT,
        input_type=InputType.MENU,
        status=RequestStatus.TIMEOUT,
        session=session,
    )

    body = api_a.get(f"/api/terminal-requests/{req.pk}/").json()

    assert body == {
        "id": req.pk,
        "requestId": "IN-9",
        "type": "input",
        "inputType": "menu",
        "status": "TIMEOUT",
        "errorMessage": "No answer from the terminal in time",
        "createdAt": "2024-03-10T12:00:00.000Z",
        "completedAt": "2024-03-10T12:00:03.000Z",
        "store": "store-a",
        "terminal": "TERM-1",
        "desktop": "POS-1",
        "session": session.pk,
        "sessionId": "table-3",
        "deadlineAt": "2024-03-10T12:01:00.000Z",
    }
    assert api_a.get("/api/terminal-requests/").json()["results"] == [body]


def test_a_request_outside_any_session_has_no_session(store_a, api_a):
    make_request(store_a, "LIVE", status=RequestStatus.IN_PROGRESS)

    (row,) = api_a.get("/api/terminal-requests/").json()["results"]

    assert (row["session"], row["sessionId"]) == (None, None)
    assert (row["status"], row["completedAt"]) == ("IN_PROGRESS", None)


@pytest.fixture
def varied_requests(store_a):
    """Four requests of store A: two terminals, a session, one day apart; ids kept by name."""
    term_2, _ = make_device(store_a.group, DeviceType.TERMINAL, "TERM-2")
    pos_2, _ = make_device(store_a.group, DeviceType.DESKTOP, "POS-2")
    session = make_session(store_a, "table-1")
    make_request(store_a, "D-1", session=session, created_at=T0)
    make_request(
        store_a,
        "I-TEXT",
        kind=RequestKind.INPUT,
        input_type=InputType.TEXT,
        status=RequestStatus.CANCELLED,
        session=session,
        created_at=T0 + dt.timedelta(days=1),
    )
    make_request(
        store_a,
        "I-EMAIL",
        kind=RequestKind.INPUT,
        input_type=InputType.EMAIL,
        status=RequestStatus.FAILED,
        created_at=T0 + dt.timedelta(days=2),
        terminal=term_2,
        desktop=pos_2,
    )
    make_request(
        store_a,
        "D-LIVE",
        status=RequestStatus.IN_PROGRESS,
        created_at=T0 + dt.timedelta(days=3),
        terminal=term_2,
    )
    return session


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["D-LIVE", "I-EMAIL", "I-TEXT", "D-1"]),
        ("store=store-a&type=display", ["D-LIVE", "D-1"]),
        ("group=store-a&type=input", ["I-EMAIL", "I-TEXT"]),
        ("input_type=email", ["I-EMAIL"]),
        ("status=IN_PROGRESS", ["D-LIVE"]),
        ("status=FAILED&status=CANCELLED", ["I-EMAIL", "I-TEXT"]),
        ("terminal=TERM-2", ["D-LIVE", "I-EMAIL"]),
        ("desktop=POS-2", ["I-EMAIL"]),
        ("request_id=I-TEXT", ["I-TEXT"]),
        ("created_after=2024-03-11T12:00:00Z", ["D-LIVE", "I-EMAIL", "I-TEXT"]),
        ("created_before=2024-03-12", ["I-TEXT", "D-1"]),
        ("created_after=2024-03-11&created_before=2024-03-12T12:00:00", ["I-TEXT"]),
        ("ordering=created_at", ["D-1", "I-TEXT", "I-EMAIL", "D-LIVE"]),
        ("ordering=-created_at&type=input", ["I-EMAIL", "I-TEXT"]),
    ],
)
def test_terminal_request_filters_select_the_matching_requests(
    varied_requests, api_a, query, expected
):
    assert ids(api_a.get(f"/api/terminal-requests/?{query}"), "requestId") == expected


def test_terminal_requests_filter_by_session(varied_requests, api_a):
    response = api_a.get(f"/api/terminal-requests/?session={varied_requests.pk}")

    assert ids(response, "requestId") == ["I-TEXT", "D-1"]


def test_an_answer_is_never_shown_personal_or_not(store_a, api_a):
    """Through the real services: the values a customer typed appear nowhere in the API."""
    outbox = Outbox()
    terminals.connection_open(
        device_pk=store_a.terminal.pk, channel_name="test.t", remote_addr="", outbox=outbox
    )
    service = {
        "Session": {"Id": "table-5", "Type": "Begin"},
        "Operation": [
            {
                "Type": "InputRequest",
                "Variant": "WaitingScreen",
                "UserInterfaceData": {"WaitingScreenTimeoutMs": 3000},
            }
        ],
    }
    document = {
        "SaleToPOIRequest": {
            "MessageHeader": {
                "ProtocolVersion": "3.0",
                "MessageClass": "Service",
                "MessageCategory": "Admin",
                "MessageType": "Request",
                "ServiceID": "svc-1",
                "SaleID": "POS-1",
                "POIID": "TERM-1",
            },
            "AdminRequest": {
                "ServiceIdentification": base64.b64encode(json.dumps(service).encode()).decode()
            },
        }
    }
    _, session = nexo.terminal_api_request(
        desktop=store_a.desktop, document=document, outbox=outbox
    )
    answers = {"email": "jane.doe@example.com", "text": "Jane Doe, 12 Elm Street"}
    for input_type, value in answers.items():
        sessions.request_start(
            kind=RequestKind.INPUT,
            desktop=store_a.desktop,
            desktop_connection_id="desk-conn",
            terminal_id="TERM-1",
            body={"requestId": f"ASK-{input_type}", "type": input_type, "prompt": "Your details"},
            outbox=outbox,
        )
        sessions.request_result(
            kind=RequestKind.INPUT,
            terminal=store_a.terminal,
            response={"requestId": f"ASK-{input_type}", "status": "SUCCESS", "value": value},
            outbox=outbox,
        )

    pages = [
        api_a.get("/api/terminal-requests/"),
        api_a.get(f"/api/sessions/{session.pk}/"),
        api_a.get("/api/sessions/"),
    ]

    assert ids(pages[0], "requestId") == ["ASK-text", "ASK-email"]
    assert {r["sessionId"] for r in pages[0].json()["results"]} == {"table-5"}
    assert [r["status"] for r in pages[1].json()["requests"]] == ["SUCCESS", "SUCCESS"]
    for page in pages:
        text = page.content.decode()
        assert "Jane" not in text
        assert "example.com" not in text
        assert "Your details" not in text  # nor what the terminal was asked


# --- Scope -----------------------------------------------------------------------------------


@pytest.fixture
def both_stores(store_a, store_b):
    session_a = make_session(store_a, "table-1")
    session_b = make_session(store_b, "table-1")  # the same Session.Id in the other store
    request_a = make_request(store_a, "REQ-1", session=session_a)
    request_b = make_request(store_b, "REQ-1", session=session_b)
    return {"a": (session_a, request_a), "b": (session_b, request_b)}


def test_each_member_sees_only_their_own_stores_sessions_and_requests(both_stores, api_a, api_b):
    for client, store in ((api_a, "a"), (api_b, "b")):
        session, req = both_stores[store]
        sessions_page = client.get("/api/sessions/").json()["results"]
        requests_page = client.get("/api/terminal-requests/").json()["results"]

        assert [(s["id"], s["store"]) for s in sessions_page] == [(session.pk, f"store-{store}")]
        assert [(r["id"], r["store"]) for r in requests_page] == [(req.pk, f"store-{store}")]
        assert client.get(f"/api/sessions/{session.pk}/").status_code == 200
        assert client.get(f"/api/terminal-requests/{req.pk}/").status_code == 200


def test_another_stores_session_or_request_is_404_like_one_that_does_not_exist(both_stores, api_a):
    session_b, request_b = both_stores["b"]
    missing = max(session_b.pk, request_b.pk) + 1000

    for url, absent in (
        (f"/api/sessions/{session_b.pk}/", f"/api/sessions/{missing}/"),
        (f"/api/terminal-requests/{request_b.pk}/", f"/api/terminal-requests/{missing}/"),
        ("/api/sessions/99999999999999999999999/", f"/api/sessions/{missing}/"),
    ):
        other, nothing = api_a.get(url), api_a.get(absent)

        assert other.status_code == nothing.status_code == 404, url
        assert other.json() == nothing.json() == {"error": "Not Found", "message": "Not found."}


def test_another_store_cannot_be_probed_through_the_filters(both_stores, api_a):
    session_b, _ = both_stores["b"]

    # The other store's session id selects nothing, exactly like an id that does not exist.
    assert api_a.get(f"/api/terminal-requests/?session={session_b.pk}").json()["results"] == []
    for url in ENDPOINTS:
        response = api_a.get(f"{url}?store=store-b")
        unknown = api_a.get(f"{url}?store=no-such-store")

        assert response.status_code == unknown.status_code == 400
        assert response.json() == unknown.json()
        assert list(response.json()["fields"]) == ["store"]


def test_a_superuser_sees_every_store(both_stores, api_root):
    assert {s["store"] for s in api_root.get("/api/sessions/").json()["results"]} == {
        "store-a",
        "store-b",
    }
    assert {r["store"] for r in api_root.get("/api/terminal-requests/").json()["results"]} == {
        "store-a",
        "store-b",
    }
    session_b, request_b = both_stores["b"]
    assert api_root.get(f"/api/sessions/{session_b.pk}/").json()["store"] == "store-b"
    assert api_root.get(f"/api/terminal-requests/{request_b.pk}/").status_code == 200


@pytest.mark.parametrize("url", [*ENDPOINTS, "/api/sessions/1/", "/api/terminal-requests/1/"])
def test_anonymous_request_is_401_with_token_challenge(both_stores, url):
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": "Unauthorized",
        "message": "Authentication credentials were not provided.",
    }


# --- Bad filter values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "query", "parameter"),
    [
        ("/api/sessions/", "status=active", "status"),
        ("/api/sessions/", "status=BOGUS", "status"),
        ("/api/sessions/", "created_after=yesterday", "created_after"),
        ("/api/sessions/", "created_before=2024-13-45", "created_before"),
        ("/api/sessions/", "ordering=amount", "ordering"),
        ("/api/sessions/", "store=no-such-store", "store"),
        ("/api/sessions/", "group=store-b", "group"),
        ("/api/sessions/", "page=0", "page"),
        ("/api/sessions/", "page_size=ten", "page_size"),
        ("/api/sessions/", "session_id=a%00b", "session_id"),
        ("/api/terminal-requests/", "type=print", "type"),
        ("/api/terminal-requests/", "input_type=voice", "input_type"),
        ("/api/terminal-requests/", "status=DECLINED", "status"),
        ("/api/terminal-requests/", "session=abc", "session"),
        ("/api/terminal-requests/", "session=0", "session"),
        ("/api/terminal-requests/", "session=99999999999999999999999", "session"),
        ("/api/terminal-requests/", "created_after=2024-01-15T25:00:00Z", "created_after"),
        ("/api/terminal-requests/", "created_before=0001-01-01T00:00:00%2B05:00", "created_before"),
        ("/api/terminal-requests/", "ordering=begun_at", "ordering"),
        ("/api/terminal-requests/", "terminal=T%00", "terminal"),
    ],
)
def test_bad_filter_value_is_400_naming_the_parameter(both_stores, api_a, url, query, parameter):
    response = api_a.get(f"{url}?{query}")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "Bad Request"
    assert body["message"].startswith(f"{parameter}: ")
    assert list(body["fields"]) == [parameter]


# --- No N+1 ----------------------------------------------------------------------------------


def _fill(store: Store, count: int) -> None:
    for n in range(count):
        terminal, _ = make_device(store.group, DeviceType.TERMINAL, f"TERM-Q{n}")
        session = make_session(
            store, f"Q-{n}", begun_at=T0 + dt.timedelta(minutes=n), terminal=terminal
        )
        make_request(store, session=session, terminal=terminal)
        make_request(store, session=session, terminal=terminal, kind=RequestKind.INPUT)


@pytest.mark.parametrize("count", [2, 30])
def test_listing_takes_a_fixed_number_of_queries(
    store_a, api_a, django_assert_max_num_queries, count
):
    _fill(store_a, count)
    detail = TerminalSession.objects.filter(session_id="Q-0").get()

    # token lookup, the store named, the count, the page (store and devices joined): no N+1.
    with django_assert_max_num_queries(4):
        sessions_page = api_a.get("/api/sessions/?store=store-a").json()
    # token lookup, the count, the page (store, devices and session joined).
    with django_assert_max_num_queries(3):
        requests_page = api_a.get("/api/terminal-requests/?type=input").json()
    # token lookup, the session, its requests.
    with django_assert_max_num_queries(3):
        one = api_a.get(f"/api/sessions/{detail.pk}/").json()

    assert sessions_page["count"] == count
    assert requests_page["count"] == count
    assert len(one["requests"]) == 2
