"""The REST API on a real server: a payment made over the WebSocket, read back over HTTP.

Proves the ASGI path end to end: token auth, the timeline of a real payment, the CSV export
streamed by the server (an async iterator; Django would buffer a sync one whole), daily totals.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
import uuid
from email.message import Message

import pytest

from tests.e2e.harness import deployment_for_this_run
from tests.e2e.ws import Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployment():
    with deployment_for_this_run() as deployment:
        yield deployment


def get(url: str, token: str | None = None) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


async def test_a_real_payment_reads_back_through_the_api_and_its_csv(deployment):
    slug = f"api-{uuid.uuid4().hex[:10]}"
    desktop_key = deployment.key(slug, "desktop", "POS-1")
    terminal_key = deployment.key(slug, "terminal", "TERM-1")
    token = deployment.manage("create_staff", f"acct-{slug}", "--group", slug).stdout.split()[-1]
    server = deployment.server()

    desktop = await Client.connect(server.ws_url, desktop_key)
    terminal = await Client.connect(server.ws_url, terminal_key)
    try:
        await desktop.recv_action("connected")
        await terminal.recv_action("connected")
        await desktop.send(
            {
                "action": "payment",
                "terminalId": "TERM-1",
                "paymentRequest": {
                    "transactionId": "E2E-1",
                    "amount": "19.9",
                    "currency": "EUR",
                    "metadata": {"orderId": "=cmd|' /C calc'!A0"},
                },
            }
        )
        await desktop.recv_action("paymentAccepted", transactionId="E2E-1")
        await terminal.recv_action("paymentRequest")
        await terminal.send(
            {
                "action": "paymentResponse",
                "paymentResponse": {
                    "transactionId": "E2E-1",
                    "status": "SUCCESS",
                    "authorizationCode": "OK-1",
                },
            }
        )
        await desktop.recv_action("paymentComplete", transactionId="E2E-1")
    finally:
        await desktop.close()
        await terminal.close()

    status, _, body = get(f"{server.url}/api/transactions/E2E-1/", token)
    assert status == 200, body
    payment = json.loads(body)
    assert (payment["status"], payment["amount"], payment["store"]) == ("SUCCESS", "19.90", slug)
    assert [e["kind"] for e in payment["events"]][:3] == ["requested", "forwarded", "result"]

    status, headers, body = get(f"{server.url}/api/transactions/export/?store={slug}", token)
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"].startswith(f'attachment; filename="transactions-{slug}-')
    [row] = list(csv.DictReader(io.StringIO(body.decode())))
    assert (row["transactionId"], row["amount"], row["authorizationCode"]) == (
        "E2E-1",
        "19.90",
        "OK-1",
    )
    assert row["orderId"] == "'=cmd|' /C calc'!A0"

    status, _, body = get(f"{server.url}/api/reports/daily/?store={slug}", token)
    assert status == 200
    [day] = json.loads(body)["results"]
    assert (day["count"], day["succeededCount"], day["succeededAmount"]) == (1, 1, "19.90")

    status, headers, body = get(f"{server.url}/api/transactions/")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Token"
    assert json.loads(body)["error"] == "Unauthorized"
