"""GET /healthz: is the database answering, and is the channel layer delivering?"""

import asyncio
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse

from posgateway import gateway

logger = logging.getLogger("posgateway.health")


def _database_ok() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _channel_layer_ok() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("healthz.")
    await layer.send(channel, {"type": "healthz"})
    message = await layer.receive(channel)
    if message.get("type") != "healthz":
        raise RuntimeError("channel layer returned something else")


async def healthz(request):
    gateway.ensure_sweeper()
    body = {"status": "ok", "database": "ok", "channelLayer": "ok"}
    try:
        await asyncio.wait_for(database_sync_to_async(_database_ok)(), timeout=5)
    except Exception as exc:
        logger.warning("health check: database failed: %r", exc)
        body["database"] = "error"
    try:
        await asyncio.wait_for(_channel_layer_ok(), timeout=5)
    except Exception as exc:
        logger.warning("health check: channel layer failed: %r", exc)
        body["channelLayer"] = "error"
    if body["database"] != "ok" or body["channelLayer"] != "ok":
        body["status"] = "error"
        return JsonResponse(body, status=503)
    return JsonResponse(body)
