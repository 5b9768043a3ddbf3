"""Secrets at rest and in logs, and card numbers: what the gateway must never keep.

- Device keys and REST API tokens exist only as digests: after every way of making and using
  them, a raw read of every cell of every table finds none of them.
- Neither reaches a log: a real server (access log on, every logger of ours at DEBUG) is used
  with keys in headers and in ``?key=``, right and wrong, tokens right and wrong, and its log is
  grepped for them.
- A full card number in a payment request is refused naming the field; in a terminal's answer
  it is masked before the database, the log or the desktop sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import logging
import re
import sys
import urllib.request
from typing import Any

import pytest
import websockets
from asgiref.sync import async_to_sync
from channels.testing import ApplicationCommunicator
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from payments.validation import validate_payment_request
from posgateway.asgi import application
from posgateway.core.protocol import BadRequest
from terminals.models import Device
from terminals.tokens import token_digest
from tests.e2e.conftest import DeviceClient, Gateway
from tests.security.dbscan import cells_containing


def post_terminal_api(key: str, body: bytes) -> None:
    """POST to /terminal-api/sync through the ASGI application (an HTTP consumer)."""

    async def run() -> None:
        comm = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "method": "POST",
                "path": "/terminal-api/sync",
                "query_string": b"",
                "headers": [(b"x-api-key", key.encode())],
            },
        )
        await comm.send_input({"type": "http.request", "body": body, "more_body": False})
        while (await comm.receive_output(5)).get("type") != "http.response.body":
            pass
        await comm.wait(5)

    async_to_sync(run)()


API_KEY_ON_PAGE = re.compile(r'class="api-key">([^<]+)<')


def command(*args: str) -> tuple[list[str], str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue()


def keys_on(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    keys = API_KEY_ON_PAGE.findall(response.content.decode())
    assert keys, response.content[:500]
    return keys


# --- At rest ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_key_or_token_is_stored_in_clear_anywhere(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    keys: list[str] = []
    tokens: list[str] = []

    # Every way a key or a token is made: the commands, the dashboard, the admin, DRF's own.
    keys += command("create_device", "--group", "s1", "--type", "desktop", "--device-id", "P")[0]
    keys += command("create_device", "--group", "s1", "--type", "terminal", "--count", "3")[0]
    tokens += command("create_staff", "alice", "--group", "s1", "--password", "pw-alice-123")[0][
        -1:
    ]
    tokens += command("create_staff", "alice", "--group", "s1")[0][-1:]  # a second, new one
    demo, _ = command("demo_setup")
    keys += re.findall(r"key: (\S+)", "\n".join(demo))
    tokens += re.findall(r"API token: (\S+)", "\n".join(demo))
    root = get_user_model().objects.create_superuser("root", "r@example.com", "pw-root-123")
    tokens.append(Token.objects.create(user=root).key)
    tokens += re.findall(
        r"Generated token (\S+)", "\n".join(command("drf_create_token", "-r", "root")[0])
    )

    browser = Client()
    browser.force_login(root)
    keys += keys_on(
        browser.post(
            "/dashboard/devices/",
            {"store": "s1", "device_type": "terminal", "device_id": "DASH", "label": ""},
        )
    )
    dash = Device.objects.get(device_id="DASH")
    keys += keys_on(browser.post(f"/dashboard/devices/{dash.pk}/rotate/"))
    keys += keys_on(
        browser.post(
            "/admin/terminals/device/add/",
            {
                "group": dash.group_id,
                "device_type": "desktop",
                "device_id": "ADM",
                "label": "",
                "metadata": "{}",
                "status": "offline",
            },
        )
    )
    adm = Device.objects.get(device_id="ADM")
    keys += keys_on(
        browser.post(
            "/admin/terminals/device/",
            {"action": "rotate_key", "_selected_action": [adm.pk, dash.pk]},
        )
    )
    assert len(set(keys)) == len(keys) == 4 + 2 + 2 + 3, keys
    assert len(set(tokens)) == len(tokens) == 5, tokens

    # ... and used: tokens on the REST API, desktop keys on the Terminal API.
    for token in tokens:
        Client().get("/api/groups/", headers={"Authorization": f"Token {token}"})
    for key in keys:
        post_terminal_api(key, b"{}")

    found = cells_containing(keys + tokens)

    assert found == []
    # The scan sees what is there: each key's 8-character prefix is kept to tell keys apart.
    assert ("terminals_device", "key_prefix", keys[0][:8]) in cells_containing([keys[0][:8]])
    # What is stored instead: the SHA-256 of each live key, a digest of each live token.
    live = dict(Device.objects.values_list("key_hash", "device_id"))
    assert hashlib.sha256(keys[0].encode()).hexdigest() in live
    stored = set(Token.objects.values_list("key", flat=True))
    assert token_digest(tokens[1]) in stored  # alice's second token
    assert token_digest(tokens[0]) not in stored  # her first was replaced


@pytest.mark.django_db
def test_a_token_works_only_as_the_token_not_as_its_digest():
    from terminals import services

    user, token = services.staff_create_or_update(username="carol", group_slugs=["s1"])
    digest = Token.objects.get(user=user).key

    def status(value: str) -> int:
        return Client().get("/api/groups/", headers={"Authorization": f"Token {value}"}).status_code

    assert digest == token_digest(token) != token
    assert status(token) == 200
    assert status(digest) == 401  # a stolen database row is no credential


# --- In the logs (a real server) -------------------------------------------------------------


def _http(gw: Gateway, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.server.port, timeout=15)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def scan_deployment(gw: Gateway, needles: list[str]) -> dict[str, Any]:
    """A raw scan of the server's own database, run in a process of that deployment."""
    env_script = "from tests.security.dbscan import main; main()"
    result = gw.deployment.manage(
        "shell",
        "-c",
        f"import os; os.environ['NEEDLES'] = {json.dumps(json.dumps(needles))}; " + env_script,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("FOUND"))
    return json.loads(line[5:])


# server_dependent: the access log is the server's own (its lines and their redaction differ).
@pytest.mark.e2e
@pytest.mark.server_dependent
@pytest.mark.django_db(False)
async def test_keys_and_tokens_never_reach_the_server_log_or_its_database(
    security_gateway: Gateway, close_clients
):
    gw = security_gateway
    deployment = gw.deployment
    slug = "sec-logs"

    # create_device prints the key on stdout, for the operator; its log lines carry the prefix.
    made = await asyncio.to_thread(
        deployment.manage, "create_device", "--group", slug, "--type", "desktop", "--device-id", "P"
    )
    desktop = made.stdout.split()[-1]
    assert desktop not in made.stderr
    assert desktop[:8] in made.stderr
    made = await asyncio.to_thread(
        deployment.manage,
        "create_device",
        "--group",
        slug,
        "--type",
        "terminal",
        "--count",
        "2",
        "--device-id",
        "T",
    )
    terminals = made.stdout.split()[-2:]
    assert not [k for k in terminals if k in made.stderr]
    made = await asyncio.to_thread(deployment.manage, "create_staff", "acct", "--group", slug)
    token = made.stdout.split()[-1]
    assert token not in made.stderr
    # A near miss: a typo of a real key must not be logged either. The first character is changed
    # to one it is not (a key that already begins with "W" would otherwise stay the real key).
    wrong_key = ("W" if desktop[0] != "W" else "X") + desktop[1:]
    wrong_token = ("W" if token[0] != "W" else "X") + token[1:]
    assert wrong_key != desktop
    assert wrong_token != token

    # Devices connect with the header and with ?key=; a wrong key both ways.
    by_header = await gw.connect(terminals[0])
    by_query = await gw.connect(terminals[1], header=False)
    pos = await gw.connect(desktop, header=False)
    for client in (by_header, by_query, pos):
        await client.ping()
    for header in (True, False):
        refused = await gw.connect_raw(wrong_key, header=header)
        assert (await refused.recv())["error"] == "Unauthorized"
    # The Terminal API with the key in x-api-key; the REST API with the token; wrong ones too.
    for key in (desktop, wrong_key):
        await asyncio.to_thread(_http, gw, "POST", "/terminal-api/sync", {"x-api-key": key}, b"{}")
    for value in (token, wrong_token):
        status = await asyncio.to_thread(
            _http, gw, "GET", "/api/transactions/", {"Authorization": f"Token {value}"}
        )
        assert status == (200 if value == token else 401)
    await pos.request({"action": "getTerminals"}, "terminalsResponse")
    for client in (by_header, by_query, pos):
        await client.close()
    # A proxy that drops the Upgrade header makes the handshake a plain HTTP GET (404): daphne
    # logs HTTP lines with their query string, so the key is redacted there.
    for path in (f"/ws/?key={desktop}", f"/ws?v=1&key={terminals[0]}&x=1", f"/healthz?key={token}"):
        await asyncio.to_thread(_http, gw, "GET", path, {})
    # A parameter name percent-encoded is the same name to the server (issue 18.4): the socket
    # authenticates with it, and the key is redacted all the same.
    for path in (f"/ws/?%6Bey={desktop}", f"/healthz?x=1&%74%6F%6B%65%6E={token}"):
        await asyncio.to_thread(_http, gw, "GET", path, {})
    async with websockets.connect(
        f"ws://127.0.0.1:{gw.server.port}/ws/?%6Bey={terminals[1]}", open_timeout=10
    ) as encoded:
        assert json.loads(await asyncio.wait_for(encoded.recv(), 10))["action"] == "connected"

    secrets = [desktop, *terminals, token, wrong_key, wrong_token]
    log = await asyncio.to_thread(gw.server.log)
    # The log is there and says what happened, by prefix and path only.
    assert f"{slug}/T-1 (terminal) is online" in log
    if gw.server.kind == "uvicorn":  # its WebSocket lines carry the query string too
        assert '"WebSocket /ws/?key=[redacted]" [accepted]' in log
        assert '"WebSocket /ws/?%6Bey=[redacted]" [accepted]' in log
        assert '"GET /ws/?key=[redacted] HTTP/1.1" 404' in log
        assert '"GET /ws?v=1&key=[redacted]&x=1 HTTP/1.1" 404' in log
    else:
        assert "WSCONNECT /ws/" in log
        assert '"GET /ws/?key=[redacted]" 404' in log
        assert '"GET /ws?v=1&key=[redacted]&x=1" 404' in log
        assert '"GET /ws/?%6Bey=[redacted]" 404' in log
    assert [s for s in secrets if s in log] == []
    scanned = await asyncio.to_thread(scan_deployment, gw, secrets)
    assert scanned["tables"] > 10
    assert scanned["found"] == []


def test_every_configured_log_handler_redacts_keys_in_urls():
    """What ``manage.py runserver`` logs for a 404 (its access log goes through logging)."""
    from posgateway.core.redact import RedactSecrets

    handlers = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RedactSecrets) for f in h.filters)
    ]
    record = logging.LogRecord(
        "django.channels.server",
        logging.WARNING,
        __file__,
        1,
        "HTTP %(method)s %(path)s %(status)s",
        ({"method": "GET", "path": "/ws/?key=s3cr3t-KEY_1&a=b", "status": 404},),
        None,
    )

    assert handlers, logging.getLogger().handlers  # settings.LOGGING's console handler
    assert handlers[0].filter(record)
    assert record.getMessage() == "HTTP GET /ws/?key=[redacted]&a=b 404"


def test_uvicorn_access_lines_keep_their_format_without_the_key():
    """uvicorn's access formatter unpacks the record's arguments: they are redacted in place."""
    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.logging import AccessFormatter

    from posgateway.core.redact import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/ws/?key=s3cr3t-KEY_1&a=b", "1.1", 404),
        None,
    )
    assert RedactSecrets().filter(record)
    formatter = AccessFormatter(LOGGING_CONFIG["formatters"]["access"]["fmt"], use_colors=False)
    assert formatter.format(record) == (
        'INFO:     127.0.0.1:5000 - "GET /ws/?key=[redacted]&a=b HTTP/1.1" 404 Not Found'
    )


def test_uvicorn_logs_an_invalid_utf8_frame_as_a_warning_without_traceback():
    from posgateway.core.serverlog import INVALID_UTF8, ClientFrameErrors

    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, INVALID_UTF8, (), sys.exc_info()
        )
    assert ClientFrameErrors().filter(record)
    text = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert text == f"WARNING {INVALID_UTF8} Closed with 1007."
    assert "Traceback" not in text


# --- Card numbers ----------------------------------------------------------------------------

VISA = "4111111111111111"
AMEX = "378282246310005"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metadata", {VISA: "x"}, "paymentRequest.metadata keys must not contain a card number"),
        ("metadata", {"n": int(VISA)}, "paymentRequest.metadata.n must not contain a card number"),
        (
            "metadata",
            {"n": [float(AMEX)]},
            "paymentRequest.metadata.n[0] must not contain a card number",
        ),
        (
            "products",
            [{"price": "1", "quantity": 1, "4111 1111 1111 1111": "x"}],
            "paymentRequest.products[0] keys must not contain a card number",
        ),
        (
            "products",
            [{"price": "1", "quantity": 1, "weight": int(VISA)}],
            "paymentRequest.products[0].weight must not contain a card number",
        ),
    ],
    ids=["metadata-key", "metadata-integer", "metadata-float", "product-key", "product-integer"],
)
def test_card_numbers_as_keys_or_numbers_are_refused_too(field, value, message):
    """Text fields are covered in tests/payments; a PAN written as a key or a number is no less
    a PAN, and the message names where it is without repeating it."""
    request = {"transactionId": "T-1", "amount": "1.00", "currency": "EUR", field: value}
    with pytest.raises(BadRequest) as refused:
        validate_payment_request(request)
    assert refused.value.message == message
    assert VISA not in message
    assert AMEX not in message


def test_product_codes_and_other_numbers_are_kept():
    request = {
        "transactionId": "T-1",
        "amount": "1.00",
        "currency": "EUR",
        "metadata": {"ean": 4006381333931, "count": 4111111111111112, "ratio": 0.5},
    }
    assert validate_payment_request(request)["metadata"] == request["metadata"]


# server_dependent: it greps the server process's log, which each server writes its own way.
@pytest.mark.e2e
@pytest.mark.server_dependent
@pytest.mark.django_db(False)
async def test_a_card_number_never_reaches_the_database_the_log_or_the_desktop(
    security_gateway: Gateway, close_clients
):
    gw = security_gateway
    slug = "sec-cards"
    desktop_key = await asyncio.to_thread(gw.deployment.key, slug, "desktop", "P")
    terminal_key = await asyncio.to_thread(gw.deployment.key, slug, "terminal", "T")
    made = await asyncio.to_thread(gw.deployment.manage, "create_staff", "cards", "--group", slug)
    token = made.stdout.split()[-1]
    terminal = await gw.connect(terminal_key)
    desktop = await gw.connect(desktop_key)

    # In a request: refused, naming the field; nothing forwarded, nothing stored.
    refusals = {
        "metadata": ({"note": f"card {VISA}"}, "paymentRequest.metadata.note"),
        "customerInfo": ({"remark": AMEX}, "paymentRequest.customerInfo.remark"),
        "products": (
            [{"price": "1", "quantity": 1, "name": VISA}],
            "paymentRequest.products[0].name",
        ),
    }
    for n, (field, (value, path)) in enumerate(refusals.items()):
        tid = f"CARD-REFUSED-{n}"
        frame = {
            "action": "payment",
            "terminalId": "T",
            "paymentRequest": {
                "transactionId": tid,
                "amount": "5.00",
                "currency": "EUR",
                field: value,
            },
        }
        await desktop.send(frame)
        error = await desktop.recv_error()
        assert error == {
            "error": "Bad Request",
            "message": f"{path} must not contain a card number",
            "requestAction": "payment",
            "transactionId": tid,
        }
        await desktop.send({"action": "getTransactionStatus", "transactionId": tid})
        assert (await desktop.recv_error())["message"] == "Transaction not found"
    assert await terminal.frames_until_pong() == []

    # In a terminal's answer: masked to the last four before anyone sees it.
    await desktop.request(
        {
            "action": "payment",
            "terminalId": "T",
            "paymentRequest": {"transactionId": "CARD-OK", "amount": "5.00", "currency": "EUR"},
        },
        "paymentAccepted",
    )
    await terminal.recv_action("paymentRequest")
    await terminal.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": "CARD-OK",
                "status": "SUCCESS",
                "authorizationCode": "A1",
                "cardNumber": VISA,
                "receipt": {"lines": [f"CARD {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}"]},
                "pan": int(AMEX),
                "panAsFloat": float(VISA),  # 4111111111111111.0 is a card number too
            },
        }
    )
    raw = await _raw_action(desktop, "paymentComplete")
    complete = json.loads(raw)["paymentResponse"]
    assert complete["cardNumber"] == "************1111"
    assert complete["receipt"] == {"lines": ["CARD **** **** **** 1111"]}
    assert complete["pan"] == "***********0005"
    assert complete["panAsFloat"] == "************1111"
    shown = await asyncio.to_thread(_rest_detail, gw, token, "CARD-OK")

    spellings = [VISA, AMEX, VISA[4:8] + " " + VISA[8:12] + " " + VISA[12:]]
    assert [s for s in spellings if s in raw] == []
    assert [s for s in spellings if s in shown] == []
    assert '"cardNumber": "************1111"' in shown
    log = await asyncio.to_thread(gw.server.log)
    assert "transactionId=CARD-OK" in log
    assert [s for s in spellings if s in log] == []
    scanned = await asyncio.to_thread(scan_deployment, gw, spellings)
    assert scanned["found"] == []


async def _raw_action(client: DeviceClient, action: str) -> str:
    while True:
        raw = await asyncio.wait_for(client.ws.recv(), 10)
        if json.loads(raw).get("action") == action:
            return raw


def _rest_detail(gw: Gateway, token: str, tid: str) -> str:
    request = urllib.request.Request(
        f"{gw.server.url}/api/transactions/{tid}/", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.dumps(json.loads(response.read()), ensure_ascii=False)


# --- Log lines -------------------------------------------------------------------------------

FORGED = "2026-01-01 00:00:00,000 WARNING posgateway FORGED"


# server_dependent: the log is the server's own.
@pytest.mark.e2e
@pytest.mark.server_dependent
@pytest.mark.django_db(False)
async def test_a_device_value_with_a_newline_cannot_forge_a_log_line(security_gateway: Gateway):
    """A Terminal API POIID (and a WebSocket path) holding a line break (issue 18.7)."""
    from tests.e2e.test_sessions import begin_document, session_id

    gw = security_gateway
    desktop = await asyncio.to_thread(gw.deployment.key, "sec-loglines", "desktop", "P")
    for poi in (f"NO-SUCH\n{FORGED}", f"NO-SUCH\r\n{FORGED}", f"NO-SUCH\u2028{FORGED}"):
        body = json.dumps(begin_document(poi, session_id())).encode()
        await asyncio.to_thread(
            _http, gw, "POST", "/terminal-api/sync", {"x-api-key": desktop}, body
        )
    await asyncio.to_thread(_http, gw, "GET", f"/no-such-page%0A{FORGED.replace(' ', '%20')}", {})

    log = await asyncio.to_thread(gw.server.log)
    assert "NO-SUCH\\n" + FORGED in log  # written, escaped, on the line it belongs to
    lines = re.split(r"\r\n|\r|\n|\u2028", log)
    assert [line for line in lines if line.startswith(FORGED)] == []
