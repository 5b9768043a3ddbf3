"""The reference: the same payment round trip written directly on `websockets`.

No framework, no database, no channel layer: a desktop's ``payment`` goes to the terminal's
socket as ``paymentRequest``, the terminal's ``paymentResponse`` comes back to the desktop as
``paymentComplete``. It is the physical limit for Python on this hot path; the benchmark runs
it beside the gateway and prints ratios.

    python bench/reference_relay.py --port 8100 --fleet fleet.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import signal

import websockets
from websockets.asyncio.server import serve


def now_iso() -> str:
    value = dt.datetime.now(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Relay:
    def __init__(self, fleet: dict) -> None:
        # key -> (type, deviceId, group)
        self.devices: dict[str, tuple[str, str | None, str]] = {}
        for group in fleet["groups"]:
            for d in group["desktops"]:
                self.devices[d["key"]] = ("desktop", d["deviceId"], group["slug"])
            for t in group["terminals"] + group.get("idle", []):
                self.devices[t["key"]] = ("terminal", t["deviceId"], group["slug"])
        self.terminals: dict[tuple[str, str], websockets.ServerConnection] = {}
        self.desktops: dict[int, websockets.ServerConnection] = {}
        self.pending: dict[str, websockets.ServerConnection] = {}
        self.connected_at: dict[tuple[str, str], str] = {}

    async def handler(self, ws: websockets.ServerConnection) -> None:
        key = ""
        auth = ws.request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            key = auth[7:]
        elif "key=" in ws.request.path:
            key = ws.request.path.split("key=", 1)[1].split("&", 1)[0]
        device = self.devices.get(key)
        if device is None:
            await ws.send(
                json.dumps({"error": "Unauthorized", "message": "A valid API key is required"})
            )
            await ws.close(4401)
            return
        kind, device_id, group = device
        conn_id = f"c{id(ws):x}"
        if kind == "terminal":
            self.terminals[(group, device_id)] = ws
            self.connected_at[(group, device_id)] = now_iso()
        await ws.send(
            json.dumps(
                {
                    "action": "connected",
                    "connectionId": conn_id,
                    "deviceId": device_id,
                    "deviceType": kind,
                    "group": group,
                    "timestamp": now_iso(),
                }
            )
        )
        try:
            async for raw in ws:
                msg = json.loads(raw)
                action = msg.get("action")
                if action == "ping":
                    await ws.send(json.dumps({"action": "pong", "timestamp": now_iso()}))
                elif action == "payment" and kind == "desktop":
                    terminal = self.terminals.get((group, msg.get("terminalId")))
                    if terminal is None:
                        await ws.send(
                            json.dumps(
                                {"error": "Not Found", "message": "Terminal connection not found"}
                            )
                        )
                        continue
                    request = msg["paymentRequest"]
                    self.pending[request["transactionId"]] = ws
                    await terminal.send(
                        json.dumps(
                            {
                                "action": "paymentRequest",
                                "desktopId": conn_id,
                                "paymentRequest": request,
                                "timestamp": now_iso(),
                            }
                        )
                    )
                elif action == "paymentResponse" and kind == "terminal":
                    response = msg["paymentResponse"]
                    desktop = self.pending.pop(response["transactionId"], None)
                    if desktop is not None:
                        await desktop.send(
                            json.dumps(
                                {
                                    "action": "paymentComplete",
                                    "paymentResponse": response,
                                    "timestamp": now_iso(),
                                }
                            )
                        )
                elif action == "getTerminals" and kind == "desktop":
                    terminals = [
                        {
                            "connectionId": f"c{id(t):x}",
                            "deviceId": dev,
                            "connectedAt": self.connected_at.get((g, dev)),
                            "status": "online",
                            "metadata": {},
                        }
                        for (g, dev), t in self.terminals.items()
                        if g == group
                    ]
                    await ws.send(
                        json.dumps(
                            {
                                "action": "terminalsResponse",
                                "terminals": terminals,
                                "timestamp": now_iso(),
                            }
                        )
                    )
        except websockets.ConnectionClosed:
            pass
        finally:
            if kind == "terminal" and self.terminals.get((group, device_id)) is ws:
                del self.terminals[(group, device_id)]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fleet", required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.fleet) as fh:
        relay = Relay(json.load(fh))
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(
        relay.handler, "127.0.0.1", args.port, max_size=2**20, ping_interval=None, backlog=8192
    ):
        await stop


if __name__ == "__main__":
    asyncio.run(main())
