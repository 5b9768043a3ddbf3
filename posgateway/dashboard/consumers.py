"""The dashboard's socket (``/ws/dashboard/``): staff browsers, authenticated by their login.

Transport only. It accepts a logged-in staff user whose browser came from one of our own
origins, joins the channel-layer groups of that user's stores (and only those), and passes on
the events the services publish (``posgateway.dashboard.events``). It never answers with data:
the page fetches its own fragments over HTTP, scoped like every page.

Device sockets (``/ws/``) are authorised by key alone and must not check Origin (POS and terminal
clients send none); this socket rides on the session cookie, so it must (cross-site WebSocket
hijacking), and it refuses a handshake without an Origin header.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import OriginValidator
from django.conf import settings

from posgateway.dashboard.events import store_group
from terminals.selectors import groups_for_user

logger = logging.getLogger("posgateway.dashboard")


class SiteOriginValidator(OriginValidator):
    """Origins of ``ALLOWED_HOSTS`` and ``CSRF_TRUSTED_ORIGINS``, read at each handshake (so
    settings changed in tests or at run time apply); a missing Origin is always refused."""

    def __init__(self, application: Any) -> None:
        super().__init__(application, allowed_origins=[])

    @property
    def allowed_origins(self) -> list[str]:  # type: ignore[override]
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = ["localhost", "127.0.0.1", "[::1]"]
        return hosts + list(getattr(settings, "CSRF_TRUSTED_ORIGINS", []))

    @allowed_origins.setter
    def allowed_origins(self, value: list[str]) -> None:
        pass  # computed from the settings

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None or not parsed_origin.hostname:
            return False
        return self.validate_origin(parsed_origin)


def _user_store_pks(user: Any) -> list[int]:
    if not (user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser)):
        return []
    return list(groups_for_user(user).values_list("pk", flat=True))


class DashboardConsumer(AsyncWebsocketConsumer):
    groups_joined: tuple[str, ...] = ()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accepting: the handshake is refused with HTTP 403
            return
        store_pks = await database_sync_to_async(_user_store_pks)(user)
        if not store_pks and not user.is_superuser:
            await self.close()
            return
        self.groups_joined = tuple(store_group(pk) for pk in store_pks)
        for name in self.groups_joined:
            await self.channel_layer.group_add(name, self.channel_name)
        await self.accept()
        # Joined: from here on nothing is missed. The page refreshes what it shows on this
        # message, which covers whatever changed between its render and now.
        await self.send(text_data=json.dumps({"type": "ready", "stores": len(store_pks)}))

    async def disconnect(self, code: int) -> None:
        for name in self.groups_joined:
            try:
                await self.channel_layer.group_discard(name, self.channel_name)
            except Exception:
                logger.warning("leaving dashboard group %s failed", name, exc_info=True)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page pings to learn that the socket still answers; anything else is ignored.
        if not text_data or len(text_data) > 256:
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            return
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))

    async def dashboard_event(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message["event"], separators=(",", ":")))


def dashboard_application() -> Any:
    """The socket as mounted in ``posgateway.routing``: Origin check, then the login session."""
    return SiteOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi()))
