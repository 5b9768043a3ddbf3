"""One request cannot eat the server: bodies are refused at the limit while they are read.

Against a real server (daphne, or uvicorn in ``make test-uvicorn``): an anonymous client starts
a gigabyte body, declared or chunked, to the Terminal API and the REST API. It is answered 413
in the endpoint's error form after at most a few MiB have left the client (socket buffers), the
server's memory does not grow by the body, and ``/healthz`` answers meanwhile.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import Gateway

# server_dependent: how a body is read (and buffered) is the server's own.
pytestmark = [pytest.mark.e2e, pytest.mark.server_dependent, pytest.mark.django_db(False)]

GIB = 1 << 30
CHUNK = 64 * 1024
# Socket buffers on both sides hold a few MiB; a server that reads on takes all it is sent.
MOST_SENT = 16 << 20


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _read_answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body[: _length(data)])


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 62


def send_huge_body(port: int, path: str, *, chunked: bool) -> tuple[int, dict, int]:
    """Start a 1 GiB body to ``path``; stop as soon as the server answers. Returns the status,
    the JSON body and how many body bytes were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {GIB}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{length}\r\n\r\n".encode()
    )
    piece = b"7" * CHUNK
    if chunked:
        piece = f"{CHUNK:x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    try:
        while sent < GIB:
            readable, writable, _ = select.select([sock], [sock], [], 10)
            if readable:
                break
            if not writable:
                raise AssertionError(f"the server neither reads nor answers ({sent} bytes sent)")
            try:
                sent += sock.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # closed: the answer may be there to read
        status, body = _read_answer(sock)
    finally:
        sock.close()
    return status, body, sent


def _healthz_seconds(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"{url}/healthz", timeout=30) as response:
        assert response.status == 200
    return time.monotonic() - started


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "limit"),
    [("/terminal-api/sync", 65536), ("/api/transactions/", 1 << 20)],
    ids=["terminal-api", "rest"],
)
def test_a_gigabyte_body_is_refused_at_the_limit_without_a_key(
    security_gateway: Gateway, path, limit, chunked
):
    server = security_gateway.server
    before = _rss_kib(server.proc.pid)

    status, body, sent = send_huge_body(server.port, path, chunked=chunked)

    assert (status, body) == (
        413,
        {"error": "Payload Too Large", "message": f"The body exceeds {limit} bytes"},
    )
    assert sent < MOST_SENT
    assert _rss_kib(server.proc.pid) - before < 64 * 1024  # KiB: not the body
    assert _healthz_seconds(server.url) < 2


def test_fifty_oversized_bodies_at_once_leave_the_server_responsive(
    security_gateway: Gateway,
):
    server = security_gateway.server
    before = _rss_kib(server.proc.pid)

    def attack(n: int) -> tuple[int, dict, int]:
        path = "/terminal-api/sync" if n % 2 else "/api/transactions/"
        return send_huge_body(server.port, path, chunked=bool(n % 3))

    with ThreadPoolExecutor(max_workers=51) as pool:
        attacks = [pool.submit(attack, n) for n in range(50)]
        seconds = pool.submit(_healthz_seconds, server.url).result()
        results = [attack.result() for attack in attacks]

    assert {status for status, _, _ in results} == {413}
    assert max(sent for _, _, sent in results) < MOST_SENT
    assert seconds < 2
    assert _rss_kib(server.proc.pid) - before < 128 * 1024


def test_a_body_trickling_in_is_cut_off_after_the_body_timeout(security_gateway: Gateway):
    server = security_gateway.deployment.server(REQUEST_BODY_TIMEOUT_S="1")
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(
            b"POST /api/transactions/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        status, body = 0, {}
        for _ in range(20):  # a byte every 0.2 s: never idle, never done
            if select.select([sock], [], [], 0.2)[0]:
                status, body = _read_answer(sock)
                break
            sock.sendall(b" ")
        elapsed = time.monotonic() - started
        sock.close()
    finally:
        server.stop()

    assert (status, body) == (
        408,
        {"error": "Request Timeout", "message": "The body took longer than 1 s"},
    )
    assert 0.8 < elapsed < 3
