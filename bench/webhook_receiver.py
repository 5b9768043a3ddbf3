"""A tiny webhook receiver for the benchmark (``bench/run.py --webhooks``): answers every POST
with 204 at once, verifies its signature with the store's secret (``standardwebhooks``, as
docs/webhooks.md tells receivers to) and counts; ``GET /stats`` answers the counts as JSON.

    python bench/webhook_receiver.py --port 8123 --secrets /tmp/secrets.json

``--secrets`` is a JSON object {store slug: whsec_…}; the gateway posts a store's events to
``/hook/<slug>`` (bench/fleet.py --subscribe). HTTP/1.1 with keep-alive, enough of it for the
gateway's delivery worker (httpx): a request line, headers, a Content-Length body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import Counter
from pathlib import Path

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"


class Receiver:
    def __init__(self, secrets: dict[str, str]) -> None:
        self.hooks = {f"/hook/{slug}": Webhook(secret) for slug, secret in secrets.items()}
        self.received = 0  # POSTs answered 204 (signature good)
        self.bad_signature = 0
        self.unknown_path = 0
        self.seen: set[str] = set()
        self.duplicates = 0  # the same webhook-id again (at least once: allowed, counted)
        self.types: Counter[str] = Counter()

    def stats(self) -> dict:
        return {
            "received": self.received,
            "distinct": len(self.seen),
            "duplicates": self.duplicates,
            "bad_signature": self.bad_signature,
            "unknown_path": self.unknown_path,
            "types": dict(self.types),
        }

    def post(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        hook = self.hooks.get(path)
        if hook is None:
            self.unknown_path += 1
            return NOT_FOUND
        try:
            event = hook.verify(body, headers)
        except WebhookVerificationError:
            self.bad_signature += 1
            return BAD
        self.received += 1
        event_id = headers.get("webhook-id", "")
        if event_id in self.seen:
            self.duplicates += 1
        self.seen.add(event_id)
        self.types[event.get("type", "?")] += 1
        return NO_CONTENT

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if method == "GET" and path == "/stats":
                    data = json.dumps(self.stats()).encode()
                    answer = (
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(data), data)
                    )
                elif method == "POST":
                    answer = self.post(path, headers, body)
                else:
                    answer = NOT_FOUND
                writer.write(answer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve(port: int, secrets: dict[str, str]) -> None:
    receiver = Receiver(secrets)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Not Server.wait_closed(): it would wait for the gateway's kept-alive connections.
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets", type=Path, required=True, help="{store slug: whsec_…}")
    args = parser.parse_args()
    asyncio.run(serve(args.port, json.loads(args.secrets.read_text())))


if __name__ == "__main__":
    main()
