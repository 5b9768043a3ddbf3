"""WebSocket actions about terminals: getTerminals and ping."""

from __future__ import annotations

from typing import Any

from posgateway.dispatch import DeviceContext
from posgateway.protocol import now_iso
from posgateway.realtime import Outbox
from terminals.selectors import terminal_frame, terminal_list


def ping(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    return {"action": "pong", "timestamp": now_iso()}


def get_terminals(ctx: DeviceContext, frame: dict[str, Any], outbox: Outbox) -> dict[str, Any]:
    return {
        "action": "terminalsResponse",
        "terminals": [terminal_frame(d) for d in terminal_list(group=ctx.group_id)],
        "timestamp": now_iso(),
    }
