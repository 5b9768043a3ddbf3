"""Real HTTP receivers on 127.0.0.1 for the webhook tests: each records what reached it and
answers as its behaviour says (verify and accept, fail N times, hang, redirect, close the
socket). Plain ``http.server`` in a thread: nothing of the gateway's code."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any = None  # the event, when the signature verified
    error: str = ""


@dataclass
class Receiver:
    """``behaviour(receiver, n)`` answers the n-th request (from 1): ("ok"|"fail"|"hang"|
    "redirect"|"close", status)."""

    secret: str = ""
    fail_first: int = 0
    mode: str = "ok"
    hang_s: float = 3.0
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?x=1"

    def start(self, port: int = 0) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                got = Received(headers, body)
                if receiver.secret:
                    try:
                        got.verified = Webhook(receiver.secret).verify(body, headers)
                    except WebhookVerificationError as exc:
                        got.error = str(exc)
                with receiver.lock:
                    receiver.received.append(got)
                    n = len(receiver.received)
                mode = receiver.mode
                if n <= receiver.fail_first:
                    mode = "fail"
                if mode == "hang":
                    time.sleep(receiver.hang_s)
                    return self._answer(200, b"too late")
                if mode == "close":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if mode == "redirect":
                    return self._answer(307, b"", location=f"http://127.0.0.1:{receiver.port}/x")
                if mode == "fail" or got.error:
                    return self._answer(500, b"receiver says no " + b"x" * 2000)
                return self._answer(200, b'{"ok":true}')

            def _answer(self, status: int, body: bytes, location: str = "") -> None:
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                if location:
                    self.send_header("location", location)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self) -> list[Any]:
        with self.lock:
            return [r.verified for r in self.received if r.verified is not None]


class Listener:
    """A bare TCP listener that counts connections: proves a refused destination got no packet."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(1)
        self.sock.close()
