"""Tenancy probes: store A's key, token or login never reaches store B's terminals, payments,
sessions or requests, and cannot even learn that they exist.

Two stores (``conftest.world``; every name of B's contains ``QZX``). For every way in, A asks
about B's objects and about a twin id that exists nowhere (``NOP`` for ``QZX``, same length):
the two answers must be the same bytes once the echoed id is swapped back. The seed's own
``Forbidden`` / ``Cannot send message to connection in different group`` for another store's
connectionId is the one answer that differs, and says no more than that.

REST, CSV, reports, pages and the dashboard socket run in-process; the device WebSocket and the
Terminal API run against a real daphne over real sockets (the end of this file).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.urls import get_resolver

from payments import services as payments
from payments.models import TransactionStatus
from posgateway import nexo
from posgateway.client.terminal_api import Operation, service_identification
from posgateway.core.events import Outbox
from posgateway.gateway.delivery import deliver_sync
from terminals import services as terminals
from terminals.models import Device
from terminals.selectors import device_for_key
from tests.e2e.conftest import DeviceClient, Gateway, Store
from tests.security.conftest import MARK, MARK_RE, World, nope


def body_of(response: Any) -> bytes:
    """The body, read once (a streamed CSV can only be read once)."""
    if not hasattr(response, "probe_body"):
        streamed = getattr(response, "streaming", False)
        response.probe_body = b"".join(response.streaming_content) if streamed else response.content
    return response.probe_body


def leaks(text: bytes | str, world: World) -> list[str]:
    """Which of B's names or secrets ``text`` mentions (empty: none)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = [m.group(0) for m in MARK_RE.finditer(text)][:3]
    found += [secret for secret in world.b_secrets() if secret in text]
    return found


def same_answer(b_response: Any, nope_response: Any, *b_names: str) -> None:
    """The answer about B's object is the answer about one that does not exist, byte for byte
    (status, content type and body) once the ids the request itself carried are swapped."""
    b_body = body_of(b_response)
    for name in b_names:
        b_body = b_body.replace(name.encode(), nope(name).encode())
    assert (b_response.status_code, b_response.get("Content-Type"), b_body) == (
        nope_response.status_code,
        nope_response.get("Content-Type"),
        body_of(nope_response),
    )


# --- REST: every endpoint, list and detail ----------------------------------------------------

pytestmark = pytest.mark.django_db

# For each endpoint of the router: which of B's objects its detail URL can name.
DETAIL_OBJECTS = {
    "group": lambda w: [w.b.group],
    "terminal": lambda w: [w.b.terminal],
    "device": lambda w: [w.b.terminal, w.b.desktop],
    "transaction": lambda w: [w.b.payment, w.b.in_flight],
    "session": lambda w: [w.b.session],
    "terminal-request": lambda w: [w.b.request],
    "webhook-endpoint": lambda w: [w.b.extra["webhook_endpoint"]],
    "webhook-event": lambda w: [w.b.extra["webhook_event"]],
}
# Endpoints outside the router (CSV exports, reports) and the public schema.
OTHER_LIST_URLS = [
    "/api/transactions/export/",
    "/api/reports/daily/",
    "/api/reports/daily/export/",
]
PUBLIC_URLS = {"/api/schema/", "/api/docs/"}


def _router():
    from posgateway.urls import api

    return api.registry


def list_urls() -> list[str]:
    return [f"/api/{prefix}/" for prefix, _, _ in _router()] + OTHER_LIST_URLS


def detail_cases(world: World) -> list[tuple[str, str, str]]:
    """(url of B's object, url of a twin that does not exist, B's id in the url)."""
    cases = []
    for prefix, viewset, basename in _router():
        lookup = viewset.lookup_field
        for obj in DETAIL_OBJECTS[basename](world):
            value = str(getattr(obj, lookup))
            if lookup == "pk":
                missing = str(10**9 + obj.pk)  # no row has it; same answer, other digits
                cases.append((f"/api/{prefix}/{value}/", f"/api/{prefix}/{missing}/", ""))
            elif lookup == "event_id":  # random, not named after the store: a random twin
                missing = "evt_" + "f" * (len(value) - 4)
                cases.append((f"/api/{prefix}/{value}/", f"/api/{prefix}/{missing}/", ""))
            else:
                cases.append((f"/api/{prefix}/{value}/", f"/api/{prefix}/{nope(value)}/", value))
    return cases


def test_every_api_endpoint_has_a_tenancy_probe():
    """A new endpoint must say which of B's objects it could show, or this test fails."""
    registered = {basename for _, _, basename in _router()}
    assert registered <= set(DETAIL_OBJECTS), registered - set(DETAIL_OBJECTS)
    routes = set()
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) == "api/":
            for sub in pattern.url_patterns:
                route = "/api/" + str(sub.pattern).lstrip("^").rstrip("$")
                routes.add(re.sub(r"\(\?P<.*", "", route).replace("\\.", "."))
    probed = set(list_urls()) | PUBLIC_URLS
    # Each route is a list URL probed here, a detail under one (probed by its prefix), or public.
    unprobed = {r for r in routes if not any(r.startswith(p) for p in probed)}
    assert not unprobed, f"no tenancy probe for {sorted(unprobed)}"
    for basename in ("session", "terminal-request"):
        assert basename in registered, f"/api/ has no {basename} endpoint to probe"


@pytest.mark.parametrize("url", list_urls())
def test_lists_exports_and_reports_show_a_nothing_of_b(world, url):
    mine = world.a.api().get(url)
    theirs = world.b.api().get(url)

    assert mine.status_code == 200, body_of(mine)
    assert leaks(body_of(mine), world) == []
    # The probe would have seen B's data: B's own token gets it from the same URL.
    if url != "/api/reports/daily/export/" and url != "/api/reports/daily/":
        assert leaks(body_of(theirs), world), body_of(theirs)[:300]


def test_the_daily_report_of_a_counts_only_a(world):
    rows = world.a.api().get("/api/reports/daily/").json()["results"]

    assert {row["store"] for row in rows} == {world.a.slug}
    assert sum(row["count"] for row in rows) == 3  # A's three payments, none of B's
    assert leaks(json.dumps(world.b.api().get("/api/reports/daily/").json()), world)


def test_b_s_objects_answer_exactly_as_missing_ones(world):
    client = world.a.api()
    cases = detail_cases(world)
    # a store, a terminal, 2 devices, 2 payments, a session, a request, a webhook endpoint and
    # a webhook event
    assert len(cases) == 10
    for b_url, nope_url, name in cases:
        b_response = client.get(b_url)
        assert b_response.status_code == 404, (b_url, body_of(b_response))
        same_answer(b_response, client.get(nope_url), *([name] if name else []))
        # Control: B's own token gets the object.
        assert world.b.api().get(b_url).status_code == 200, b_url


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_writes_on_b_s_objects_answer_as_on_missing_ones(world, method):
    client = world.a.api()
    for b_url, nope_url, name in detail_cases(world):
        b_response = getattr(client, method)(b_url, {"status": "CANCELLED"}, format="json")
        assert b_response.status_code in (404, 405), (b_url, body_of(b_response))
        same_answer(
            b_response,
            getattr(client, method)(nope_url, {"status": "CANCELLED"}, format="json"),
            *([name] if name else []),
        )
    world.b.in_flight.refresh_from_db()
    assert world.b.in_flight.status == TransactionStatus.IN_PROGRESS
    assert Device.objects.filter(group=world.b.group, is_active=True).count() == 2


# Filters that name one of B's objects: each answers as for a name that exists nowhere.
B_FILTERS = {
    "store": lambda w: w.b.slug,
    "group": lambda w: w.b.slug,
    "terminal": lambda w: w.b.terminal.device_id,
    "desktop": lambda w: w.b.desktop.device_id,
    "search": lambda w: w.b.payment.transaction_id,
    "transaction_id": lambda w: w.b.payment.transaction_id,
    "session_id": lambda w: w.b.session.session_id,
    "request_id": lambda w: w.b.request.request_id,
}


@pytest.mark.parametrize("url", list_urls())
@pytest.mark.parametrize("param", sorted(B_FILTERS))
def test_filtering_on_b_s_names_answers_as_for_unknown_names(world, url, param):
    client = world.a.api()
    value = B_FILTERS[param](world)

    b_response = client.get(url, {param: value})
    nope_response = client.get(url, {param: nope(value)})

    assert b_response.status_code in (200, 400), body_of(b_response)
    assert leaks(body_of(b_response), world) == []
    same_answer(b_response, nope_response, value)


def test_store_filter_of_b_is_refused_like_an_unknown_store(world):
    for url in ["/api/transactions/", "/api/transactions/export/", "/api/reports/daily/"]:
        response = world.a.api().get(url, {"store": world.b.slug})
        assert response.status_code == 400, url
        assert response.json()["message"].endswith("Unknown store, or not one of yours.")


def test_a_transaction_id_both_stores_use_is_a_s_own_payment(world):
    client = world.a.api()

    mine = client.get("/api/transactions/SHARED-1/")

    assert mine.status_code == 200
    assert mine.json()["store"] == world.a.slug
    assert mine.json()["status"] == "DECLINED"
    same_answer(
        client.get("/api/transactions/SHARED-1/", {"store": world.b.slug}),
        client.get("/api/transactions/SHARED-1/", {"store": nope(world.b.slug)}),
        world.b.slug,
    )


def test_the_token_of_b_s_desktop_key_is_no_api_token(world):
    """Device keys and API tokens are separate credentials: a key opens no REST door."""
    client = world.a.api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {world.b.desktop_key}")
    assert client.get("/api/transactions/").status_code == 401


# --- Dashboard pages --------------------------------------------------------------------------

PAGES = ["/dashboard/", "/dashboard/payments/", "/dashboard/sessions/", "/dashboard/devices/"]
CSRF = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"|"csrfToken": "[^"]*"')


def page_body(response: Any, *names: str) -> bytes:
    """A page's bytes without its per-request CSRF token, B's names swapped for their twins."""
    body = CSRF.sub(b"csrf", body_of(response))
    for name in names:
        body = body.replace(name.encode(), nope(name).encode())
    return body


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("fragment", [False, True])
def test_dashboard_pages_show_a_nothing_of_b(world, url, fragment):
    headers = {"X-Fragment": "1"} if fragment else {}

    mine = world.a.browser().get(url, headers=headers)
    theirs = world.b.browser().get(url, headers=headers)

    assert mine.status_code == 200
    assert leaks(body_of(mine), world) == []
    assert leaks(body_of(theirs), world)  # the same page shows B everything of B's


def test_b_s_payment_page_answers_as_a_missing_one(world):
    browser = world.a.browser()
    for txn in (world.b.payment, world.b.in_flight):
        tid = txn.transaction_id
        b_page = browser.get(f"/dashboard/payments/{tid}/")
        nope_page = browser.get(f"/dashboard/payments/{nope(tid)}/")
        assert b_page.status_code == nope_page.status_code == 404
        assert page_body(b_page, tid) == page_body(nope_page)
        assert world.b.browser().get(f"/dashboard/payments/{tid}/").status_code == 200


def test_a_shared_transaction_id_opens_a_s_payment_not_a_store_chooser(world):
    browser = world.a.browser()

    page = browser.get("/dashboard/payments/SHARED-1/")

    assert page.status_code == 200
    assert "payment_choose" not in [t.name for t in page.templates]
    assert leaks(body_of(page), world) == []
    b_store = browser.get("/dashboard/payments/SHARED-1/", {"store": world.b.slug})
    nope_store = browser.get("/dashboard/payments/SHARED-1/", {"store": nope(world.b.slug)})
    assert b_store.status_code == nope_store.status_code == 404
    assert page_body(b_store, world.b.slug) == page_body(nope_store)


@pytest.mark.parametrize(
    "param", ["store", "terminal", "search", "status"], ids=lambda p: f"payments?{p}"
)
def test_payment_filters_naming_b_answer_as_unknown_names(world, param):
    value = {
        "store": world.b.slug,
        "terminal": world.b.terminal.device_id,
        "search": world.b.payment.transaction_id,
        "status": f"{MARK}-STATUS",
    }[param]
    browser = world.a.browser()

    b_page = browser.get("/dashboard/payments/", {param: value})
    nope_page = browser.get("/dashboard/payments/", {param: nope(value)})

    assert b_page.status_code == 200
    assert leaks(page_body(b_page, value), world) == []
    assert page_body(b_page, value) == page_body(nope_page)


@pytest.mark.parametrize("action", ["rotate", "deactivate"])
def test_rotating_or_deactivating_b_s_device_is_404_like_a_missing_one(world, action):
    browser = world.a.browser()
    for device in (world.b.terminal, world.b.desktop):
        b_post = browser.post(f"/dashboard/devices/{device.pk}/{action}/")
        nope_post = browser.post(f"/dashboard/devices/{10**9 + device.pk}/{action}/")
        assert b_post.status_code == nope_post.status_code == 404
        assert page_body(b_post) == page_body(nope_post)
    # B's keys still work, untouched.
    assert device_for_key(key=world.b.terminal_key) == world.b.terminal
    assert device_for_key(key=world.b.desktop_key) == world.b.desktop


def test_registering_a_device_in_b_s_store_is_refused_like_an_unknown_store(world):
    browser = world.a.browser()
    form = {"device_type": "terminal", "device_id": "SNEAKY", "label": "x"}

    b_post = browser.post("/dashboard/devices/", {**form, "store": world.b.slug})
    nope_post = browser.post("/dashboard/devices/", {**form, "store": nope(world.b.slug)})

    assert b_post.status_code == nope_post.status_code == 200
    assert page_body(b_post, world.b.slug) == page_body(nope_post)
    assert not Device.objects.filter(device_id="SNEAKY").exists()


def test_the_admin_shows_a_store_manager_nothing(world):
    """Staff of a store have no model permissions: the admin is for operators (superusers)."""
    browser = world.a.browser()
    for url in [
        "/admin/terminals/device/",
        f"/admin/terminals/device/{world.b.terminal.pk}/change/",
        f"/admin/payments/transaction/{world.b.payment.pk}/change/",
    ]:
        assert browser.get(url).status_code == 403, url


# --- The dashboard socket ---------------------------------------------------------------------

ORIGIN = b"http://127.0.0.1:8000"


def _cookie(side) -> bytes:
    return f"sessionid={side.browser().cookies['sessionid'].value}".encode()


async def _dashboard(ws_clients, side):
    headers = [
        (b"cookie", await sync_to_async(_cookie)(side)),
        (b"origin", ORIGIN),
        (b"host", b"127.0.0.1:8000"),
    ]
    comm = ws_clients("/ws/dashboard/", headers)
    accepted, _ = await comm.connect(timeout=5)
    assert accepted
    assert (await comm.receive_json_from(timeout=5))["type"] == "ready"
    return comm


def _b_changes_everything(world: World) -> None:
    """Through the real services: B's device, payment, session and request all change."""
    outbox = Outbox()
    b = world.b
    terminals.connection_close(connection_pk=b.terminal_conn.pk, code=1000, outbox=outbox)
    terminals.device_rotate_key(device=b.desktop, outbox=outbox)
    payments.payment_cancel(group_id=b.group.pk, transaction_id="QZX-TXN-2", outbox=outbox)
    end = {
        "SaleToPOIRequest": {
            "MessageHeader": {"MessageClass": "Service", "MessageCategory": "Admin"},
            "AdminRequest": {
                "ServiceIdentification": base64.b64encode(
                    json.dumps({"Session": {"Id": "QZX-SESSION-1", "Type": "End"}}).encode()
                ).decode()
            },
        }
    }
    response, _ = nexo.terminal_api_request(desktop=b.desktop, document=end, outbox=outbox)
    assert response["SaleToPOIResponse"]["AdminResponse"]["Response"]["Result"] == "Success"
    deliver_sync(outbox)


def _a_changes_one_thing(world: World) -> None:
    outbox = Outbox()
    terminals.connection_close(connection_pk=world.a.terminal_conn.pk, code=1000, outbox=outbox)
    deliver_sync(outbox)


@pytest.mark.django_db(transaction=True)
async def test_a_s_dashboard_socket_gets_no_event_of_b(world, ws_clients):
    mine = await _dashboard(ws_clients, world.a)
    theirs = await _dashboard(ws_clients, world.b)

    await sync_to_async(_b_changes_everything)(world)
    await sync_to_async(_a_changes_one_thing)(world)  # the sentinel: after all of B's

    seen = []
    while True:
        event = await mine.receive_json_from(timeout=5)
        seen.append(event)
        if event == {**event, "type": "device", "deviceId": "AAA-TERM", "status": "offline"}:
            break
    assert leaks(json.dumps(seen), world) == [], seen
    assert len(seen) == 1
    # B's own dashboard got B's events (so there was something to leak).
    b_seen = [await theirs.receive_json_from(timeout=5) for _ in range(4)]
    assert {e["type"] for e in b_seen} >= {"device", "payment", "session"}


# --- The device WebSocket and the Terminal API, over a real daphne ----------------------------


B_NAME = re.compile(rf"[\w-]*{MARK_RE.pattern}[\w-]*", re.IGNORECASE)

# Both stores in one ``manage.py shell`` (through the services create_device uses): a process
# start per device would cost more than the probes.
_STORES = """
import json, uuid
from terminals import services
out = []
for desktop_id, terminal_id in {ids!r}:
    group = services.group_get_or_create(slug="sec-" + uuid.uuid4().hex[:12])
    _, desktop = services.device_create(group=group, device_type="desktop", device_id=desktop_id)
    _, terminal = services.device_create(group=group, device_type="terminal", device_id=terminal_id)
    out.append([group.slug, desktop, terminal, terminal_id])
print("STORES" + json.dumps(out))
"""


def make_stores(gw: Gateway, ids: list[tuple[str, str]]) -> list[Store]:
    lines = gw.deployment.manage("shell", "-c", _STORES.format(ids=ids)).stdout.splitlines()
    rows = json.loads(next(line for line in lines if line.startswith("STORES"))[6:])
    return [Store(slug, [desktop], [terminal], [tid]) for slug, desktop, terminal, tid in rows]


class Wire:
    """Store A and store B on a real server, each with a desktop and a terminal connected.

    B has a finished payment (QZX-TXN-1), one in flight (QZX-TXN-2), an active Terminal API
    session (QZX-SESSION-1) and an answered display request (QZX-REQ-1), all made over the wire.
    """

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.a, self.b = make_stores(gw, [("POS", "TERM"), ("QZX-POS", "QZX-TERM")])
        self.leaks: list[str] = []  # B's names in A's replies that A's request did not carry

    async def connect(self) -> None:
        gw = self.gw
        self.b_term = await gw.connect(self.b.terminal)
        self.b_desk = await gw.connect(self.b.desktop)
        self.a_term = await gw.connect(self.a.terminal)
        self.a_desk = await gw.connect(self.a.desktop)

    @property
    def b_connection_ids(self) -> list[str]:
        return [self.b_term.connection_id, self.b_desk.connection_id]

    def leaked(self, text: str, sent: str = "") -> list[str]:
        """B's names and ids in ``text``, except those A itself ``sent`` (echoed back)."""
        found = [m.group(0) for m in B_NAME.finditer(text)]
        found += [s for s in [*self.b_connection_ids, self.b.slug] if s in text]
        return [name for name in found if name not in sent]

    async def answer(self, client: DeviceClient, frame: dict[str, Any]) -> str:
        """Send a frame; the raw text of the reply (pongs skipped)."""
        sent = json.dumps(frame)
        await client.send(sent)
        identification = frame.get("SaleToPOIRequest", {}).get("AdminRequest", {})
        if "ServiceIdentification" in identification:  # what A sent, Base64-encoded
            sent += base64.b64decode(identification["ServiceIdentification"]).decode()
        while True:
            raw = await asyncio.wait_for(client.ws.recv(), 10)
            self.leaks += self.leaked(raw, sent)
            if json.loads(raw).get("action") != "pong":
                return raw

    async def same(self, client: DeviceClient, make: Any, b_name: str) -> dict[str, Any]:
        """A's answer about B's ``b_name`` is the answer about its twin, byte for byte."""
        about_b = await self.answer(client, make(b_name))
        about_nothing = await self.answer(client, make(nope(b_name)))
        assert about_b.replace(b_name, nope(b_name)) == about_nothing
        return json.loads(about_b)

    def http(self, path: str, document: Any, key: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.server.port, timeout=15)
        try:
            conn.request(
                "POST",
                path,
                body=json.dumps(document).encode(),
                headers={"x-api-key": key, "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    async def http_same(self, path: str, make: Any, b_name: str) -> dict[str, Any]:
        b_status, about_b = await asyncio.to_thread(self.http, path, make(b_name), self.a.desktop)
        n_status, about_nothing = await asyncio.to_thread(
            self.http, path, make(nope(b_name)), self.a.desktop
        )
        assert (b_status, about_b.replace(b_name.encode(), nope(b_name).encode())) == (
            n_status,
            about_nothing,
        )
        return json.loads(about_b)


def _identification(session: dict[str, Any], operations: bool) -> str:
    data: dict[str, Any] = {"Session": session}
    if operations:
        data["Operation"] = [Operation("Payment", 5000).to_nexo()]
    return service_identification(data)


def begin(poi_id: str, sid: str = "A-SESSION-1") -> dict[str, Any]:
    header = {
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": "Admin",
        "MessageType": "Request",
        "ServiceID": "svc-1",
        "SaleID": "POS",
        "POIID": poi_id,
    }
    return {
        "SaleToPOIRequest": {
            "MessageHeader": header,
            "AdminRequest": {
                "ServiceIdentification": _identification({"Id": sid, "Type": "Begin"}, True)
            },
        }
    }


def end(sid: str) -> dict[str, Any]:
    return {
        "SaleToPOIRequest": {
            "MessageHeader": {"MessageClass": "Service", "MessageCategory": "Admin"},
            "AdminRequest": {
                "ServiceIdentification": _identification({"Id": sid, "Type": "End"}, False)
            },
        }
    }


def result_of(document: dict[str, Any]) -> dict[str, Any]:
    return document["SaleToPOIResponse"]["AdminResponse"]["Response"]


def payment(terminal_id: str, tid: str = "A-PROBE-1") -> dict[str, Any]:
    return {
        "action": "payment",
        "terminalId": terminal_id,
        "paymentRequest": {"transactionId": tid, "amount": "1.00", "currency": "EUR"},
    }


def display(terminal_id: str, rid: str = "A-PROBE-REQ") -> dict[str, Any]:
    return {
        "action": "display",
        "terminalId": terminal_id,
        "displayRequest": {"requestId": rid, "lines": ["hello"]},
    }


def input_(terminal_id: str) -> dict[str, Any]:
    return {
        "action": "input",
        "terminalId": terminal_id,
        "inputRequest": {"requestId": "A-PROBE-IN", "type": "confirmation", "prompt": "OK?"},
    }


async def _b_does_business(w: Wire) -> None:
    """B's own payments, request and session, made as a POS and a terminal make them."""
    b_desk, b_term = w.b_desk, w.b_term
    await b_desk.request(display("QZX-TERM", "QZX-REQ-1"), "displayAccepted")
    await b_term.recv_action("displayRequest", requestId="QZX-REQ-1")
    await b_term.send(
        {
            "action": "displayResponse",
            "displayResponse": {"requestId": "QZX-REQ-1", "status": "SUCCESS"},
        }
    )
    await b_desk.recv_action("displayComplete", requestId="QZX-REQ-1")

    await b_desk.request(payment("QZX-TERM", "QZX-TXN-1"), "paymentAccepted")
    await b_term.recv_action("paymentRequest")
    await b_term.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "QZX-TXN-1", "status": "SUCCESS"},
        }
    )
    await b_desk.recv_action("paymentComplete", transactionId="QZX-TXN-1")

    status, body = await asyncio.to_thread(
        w.http, "/terminal-api/sync", begin("QZX-TERM", "QZX-SESSION-1"), w.b.desktop
    )
    assert (status, result_of(json.loads(body))) == (200, {"Result": "Success"}), body
    await b_term.recv_action("sessionBegin")

    await b_desk.request(payment("QZX-TERM", "QZX-TXN-2"), "paymentAccepted")
    await b_term.recv_action("paymentRequest")


@pytest.fixture
async def wire(security_gateway, close_clients) -> Wire:
    w = await asyncio.to_thread(Wire, security_gateway)
    await w.connect()
    await _b_does_business(w)
    return w


NOT_FOUND_TERMINAL = {"error": "Not Found", "message": "Terminal connection not found"}
FORBIDDEN = {
    "error": "Forbidden",
    "message": "Cannot send message to connection in different group",
}


@pytest.mark.e2e
@pytest.mark.django_db(False)
async def test_a_s_desktop_cannot_reach_or_detect_b_over_the_websocket(wire: Wire):
    w, desk = wire, wire.a_desk

    # Payment, display and input to B's deviceIds: exactly what an unknown deviceId gets.
    for name in ("QZX-TERM", "QZX-POS"):
        got = await w.same(desk, payment, name)
        assert got == {
            **NOT_FOUND_TERMINAL,
            "requestAction": "payment",
            "transactionId": "A-PROBE-1",
        }
        got = await w.same(desk, display, name)
        assert {k: got[k] for k in ("error", "message")} == NOT_FOUND_TERMINAL
        await w.same(desk, input_, name)
    # B's connectionIds: the seed's own Forbidden, the one allowed difference, nothing more.
    for connection_id in w.b_connection_ids:
        for make in (payment, display, input_):
            got = json.loads(await w.answer(desk, make(connection_id)))
            assert {k: got[k] for k in ("error", "message")} == FORBIDDEN, got

    # B's transactions, finished and in flight: cancel and status as for an unknown id.
    for tid in ("QZX-TXN-1", "QZX-TXN-2"):
        for action in ("cancelPayment", "getTransactionStatus"):
            got = await w.same(desk, lambda t, a=action: {"action": a, "transactionId": t}, tid)
            assert got == {
                "error": "Not Found",
                "message": "Transaction not found",
                "transactionId": tid,
                "requestAction": action,
            }

    # The Terminal API over the socket: B's POIID and B's session as unknown ones.
    got = await w.same(desk, lambda p: {"action": "terminalApi", **begin(p)}, "QZX-TERM")
    assert result_of(got)["ErrorCondition"] == "NotFound"
    got = await w.same(desk, lambda s: {"action": "terminalApi", **end(s)}, "QZX-SESSION-1")
    assert result_of(got)["ErrorCondition"] == "NotFound"

    # getTerminals lists A's terminal only.
    listed = json.loads(await w.answer(desk, {"action": "getTerminals"}))
    assert [t["deviceId"] for t in listed["terminals"]] == ["TERM"]

    await _b_is_untouched(w)
    assert w.leaks == []


@pytest.mark.e2e
@pytest.mark.django_db(False)
async def test_a_s_terminal_cannot_answer_for_b(wire: Wire):
    w, term = wire, wire.a_term

    got = await w.same(
        term,
        lambda t: {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": t, "status": "SUCCESS", "authorizationCode": "X"},
        },
        "QZX-TXN-2",
    )
    assert got == {
        "error": "Not Found",
        "message": "Transaction not found",
        "transactionId": "QZX-TXN-2",
        "requestAction": "paymentResponse",
    }
    for kind in ("display", "input"):
        got = await w.same(
            term,
            lambda r, k=kind: {
                "action": f"{k}Response",
                f"{k}Response": {"requestId": r, "status": "SUCCESS", "type": "confirmation"},
            },
            "QZX-REQ-1",
        )
        assert (got["error"], got["message"]) == ("Not Found", "Request not found")

    await _b_is_untouched(w)
    assert w.leaks == []


@pytest.mark.e2e
@pytest.mark.django_db(False)
async def test_the_terminal_api_over_http_answers_b_s_names_as_unknown_ones(wire: Wire):
    w = wire
    for path in ("/terminal-api/sync", "/terminal-api/async"):
        got = await w.http_same(path, begin, "QZX-TERM")
        assert result_of(got) == {
            "Result": "Failure",
            "ErrorCondition": "NotFound",
            "AdditionalResponse": "No terminal with POIID QZX-TERM in this store",
        }
        got = await w.http_same(path, end, "QZX-SESSION-1")
        assert result_of(got)["ErrorCondition"] == "NotFound"
    # A terminal's key is no desktop key, and B's desktop key works only for B.
    status, _ = await asyncio.to_thread(w.http, "/terminal-api/sync", begin("TERM"), w.b.terminal)
    assert status == 401

    await _b_is_untouched(w)


@pytest.mark.e2e
@pytest.mark.django_db(False)
async def test_a_may_use_the_same_ids_as_b_without_learning_b_has_them(wire: Wire):
    """Ids are per store: A reusing B's transactionId, requestId or Session.Id gets no Conflict
    (which would tell A they exist) and touches nothing of B's."""
    w, desk, term = wire, wire.a_desk, wire.a_term

    status, body = await asyncio.to_thread(
        w.http, "/terminal-api/sync", begin("TERM", "QZX-SESSION-1"), w.a.desktop
    )
    assert (status, result_of(json.loads(body))) == (200, {"Result": "Success"})
    await term.recv_action("sessionBegin")

    accepted = json.loads(await w.answer(desk, display("TERM", "QZX-REQ-1")))
    assert accepted["action"] == "displayAccepted", accepted
    await term.recv_action("displayRequest", requestId="QZX-REQ-1")
    await term.send(
        {
            "action": "displayResponse",
            "displayResponse": {"requestId": "QZX-REQ-1", "status": "SUCCESS"},
        }
    )
    await desk.recv_action("displayComplete", requestId="QZX-REQ-1")

    accepted = json.loads(await w.answer(desk, payment("TERM", "QZX-TXN-2")))
    assert accepted["action"] == "paymentAccepted", accepted
    await term.recv_action("paymentRequest")
    await term.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "QZX-TXN-2", "status": "DECLINED"},
        }
    )
    done = await desk.recv_action("paymentComplete", transactionId="QZX-TXN-2")
    assert done["paymentResponse"]["status"] == "DECLINED"

    _, body = await asyncio.to_thread(
        w.http, "/terminal-api/sync", end("QZX-SESSION-1"), w.a.desktop
    )
    assert result_of(json.loads(body)) == {"Result": "Success"}

    await _b_is_untouched(w)


async def _b_is_untouched(w: Wire) -> None:
    """B's sockets got nothing of A's probes; B's payment, session and request are as left."""
    assert await w.b_term.frames_until_pong() == []
    assert await w.b_desk.frames_until_pong() == []
    status = await w.b_desk.request(
        {"action": "getTransactionStatus", "transactionId": "QZX-TXN-2"}, "transactionStatus"
    )
    assert status["status"] == "IN_PROGRESS"
    status = await w.b_desk.request(
        {"action": "getTransactionStatus", "transactionId": "QZX-TXN-1"}, "transactionStatus"
    )
    assert status["status"] == "SUCCESS"
    # B's session is still active: ending it works, and B's terminal is told.
    _, body = await asyncio.to_thread(
        w.http, "/terminal-api/sync", end("QZX-SESSION-1"), w.b.desktop
    )
    assert result_of(json.loads(body)) == {"Result": "Success"}, body
    await w.b_term.recv_action("sessionEnd")
    # B's in-flight payment still completes for B, and only for B.
    await w.b_term.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {"transactionId": "QZX-TXN-2", "status": "SUCCESS"},
        }
    )
    done = await w.b_desk.recv_action("paymentComplete", transactionId="QZX-TXN-2")
    assert done["paymentResponse"]["status"] == "SUCCESS"
