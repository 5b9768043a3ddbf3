"""A thin test client over the `websockets` package: JSON frames, waits with deadlines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets


class Client:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls, url: str, key: str | None = None, *, header: bool = True, **kw
    ) -> Client:
        headers = {}
        if key and header:
            headers["Authorization"] = f"Bearer {key}"
        elif key:
            url = f"{url}?key={key}"
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=10, **kw)
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        self.seen.append(frame)
        return frame

    async def recv_action(self, action: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        """The next frame with this action (and these fields), skipping others such as pong."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame.get("action") == action and all(frame.get(k) == v for k, v in match.items()):
                return frame

    async def recv_error(self, timeout: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if "error" in frame:
                return frame

    async def request(
        self, frame: dict[str, Any], expect: str, timeout: float = 10
    ) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv_action(expect, timeout)

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code)
