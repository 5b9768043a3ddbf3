"""The dashboard's socket (``/ws/dashboard/``): staff browsers, authenticated by their login.

Transport only. It accepts a logged-in staff user whose browser came from one of our own
origins, joins the channel-layer groups of that user's stores (and only those), and passes on
the events the services publish (built in ``posgateway.gateway.frames``). It never answers with
data: the page fetches its own fragments over HTTP, scoped like every page.

The stores are joined once, at connect; a login can end (log out, deactivated, password changed)
or lose a store while the socket stays open. So before an event is passed on, at most every
``DASHBOARD_RECHECK_S`` seconds (2 by default), the session is read again from the session store
and the user's stores again from the database. A session that no longer holds this user closes
the socket with 4401 (the page then reloads to the login page); stores that no longer include
every joined one close it with 4403 (the page reconnects and joins the right ones).

Device sockets (``/ws/``) are authorised by key alone and must not check Origin (POS and terminal
clients send none); this socket rides on the session cookie, so it must (cross-site WebSocket
hijacking), and it refuses a handshake without an Origin header.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from posgateway.core.health import CHANNEL_LAYER
from posgateway.gateway.frames import dashboard_group as store_group
from posgateway.gateway.websocket import WebsocketConsumer
from terminals.selectors import groups_for_user

logger = logging.getLogger("posgateway.dashboard")


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    return scheme, host.strip("[]").lower(), port or DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _own_origin(scope: dict[str, Any]) -> tuple[str, str, int] | None:
    """The origin the page was served from, as this handshake shows it: the ``Host`` header
    (one of ``ALLOWED_HOSTS``, as Django requires of every page) and the scheme the server saw
    (``X-Forwarded-Proto`` only where ``SECURE_PROXY_SSL_HEADER`` trusts it)."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, port = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name = proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
        forwarded = _header(scope, name)
        if forwarded is not None:
            scheme = "https" if forwarded.split(",")[0].strip() == proxy[1] else "http"
    try:
        return _origin(scheme, domain, int(port) if port else None)
    except ValueError:
        return None


def origin_allowed(scope: dict[str, Any], origin: str | None) -> bool:
    """Whether a page at ``origin`` may open the dashboard socket: exactly the scheme, host and
    port the site is served on (the request's own origin) or one of ``CSRF_TRUSTED_ORIGINS``
    (``https://*.example.com`` covers the subdomains, on the same scheme and port)."""
    if not origin:
        return False
    parsed = urlsplit(origin)
    if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname or parsed.path:
        return False
    try:
        wanted = _origin(parsed.scheme, parsed.hostname, parsed.port)
    except ValueError:
        return False
    if wanted == _own_origin(scope):
        return True
    for trusted in getattr(settings, "CSRF_TRUSTED_ORIGINS", []):
        entry = urlsplit(trusted)
        if entry.scheme != wanted[0] or not entry.hostname:
            continue
        try:
            _, host, port = _origin(entry.scheme, entry.hostname, entry.port)
        except ValueError:
            continue
        if port != wanted[2]:
            continue
        if host == wanted[1] or (host.startswith("*.") and is_same_domain(wanted[1], host[1:])):
            return True
    return False


class SiteOriginValidator:
    """The handshake goes on only from an allowed origin (:func:`origin_allowed`), read from
    the settings at each handshake; a missing Origin is refused (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if origin_allowed(scope, _header(scope, b"origin")):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def _user_store_pks(user: Any) -> list[int]:
    if not (user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser)):
        return []
    return list(groups_for_user(user).values_list("pk", flat=True))


CLOSE_LOGGED_OUT = 4401
CLOSE_STORES_CHANGED = 4403
DEFAULT_RECHECK_S = 2.0


class _SessionOnly:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    def __init__(self, session: Any) -> None:
        self.session = session


def _still_allowed(session_key: str | None, user_pk: Any, joined: tuple[str, ...]) -> int | None:
    """None while the login still holds and still covers the joined stores, else a close code."""
    if not session_key:
        return CLOSE_LOGGED_OUT
    engine = import_module(settings.SESSION_ENGINE)
    # A fresh read from the session store (not the scope's copy, loaded at connect): a log out
    # flushed it, a password change no longer matches its hash, a deactivation fails the backend.
    # get_user reads nothing of a request but its session; the stub asks for a whole HttpRequest.
    user = get_user(_SessionOnly(engine.SessionStore(session_key)))  # type: ignore[arg-type]
    if not user.is_authenticated or user.pk != user_pk:
        return CLOSE_LOGGED_OUT
    allowed = {store_group(pk) for pk in _user_store_pks(user)}
    if not set(joined) <= allowed:
        return CLOSE_STORES_CHANGED
    return None


# The page socket's close when the channel layer (Redis) is down: the page says "degraded".
CLOSE_DEGRADED = 4503


class DashboardConsumer(WebsocketConsumer):
    groups_joined: tuple[str, ...] = ()
    checked_at: float = 0.0
    closing: bool = False

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
        try:
            for name in self.groups_joined:
                await self.channel_layer.group_add(name, self.channel_name)
        except Exception as exc:
            # Redis down: accept only to close with CLOSE_DEGRADED, which the page shows
            # ("degraded"), and tries again.
            CHANNEL_LAYER.failed(exc, "dashboard connect")
            await self.accept()
            await self.close(code=CLOSE_DEGRADED)
            return
        self.checked_at = time.monotonic()
        await self.accept()
        # Joined: from here on nothing is missed. The page refreshes what it shows on this
        # message, which covers whatever changed between its render and now.
        await self.send(text_data=json.dumps({"type": "ready", "stores": len(store_pks)}))

    async def disconnect(self, code: int) -> None:
        for name in self.groups_joined:
            try:
                await self.channel_layer.group_discard(name, self.channel_name)
            except Exception as exc:
                CHANNEL_LAYER.failed(exc, "dashboard disconnect")
                return  # the layer is down; its group memberships expire by themselves

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
        if self.closing or not await self._still_allowed():
            return
        await self.send(text_data=json.dumps(message["event"], separators=(",", ":")))

    async def _still_allowed(self) -> bool:
        """Re-check the login, at most every DASHBOARD_RECHECK_S; close the socket if it ended."""
        every = float(getattr(settings, "DASHBOARD_RECHECK_S", DEFAULT_RECHECK_S))
        now = time.monotonic()
        if now - self.checked_at < every:
            return True
        session = self.scope.get("session")
        user = self.scope["user"]
        assert user is not None  # connect() accepted only a scope with a logged-in user
        code = await database_sync_to_async(_still_allowed)(
            getattr(session, "session_key", None), user.pk, self.groups_joined
        )
        self.checked_at = time.monotonic()
        if code is None:
            return True
        self.closing = True
        logger.info("dashboard socket closed (%s): login ended or stores changed", code)
        await self.close(code=code)
        return False

    async def layer_failed(self, exc: Exception) -> dict[str, Any]:
        """The page cannot be live without the layer: the socket closes (CLOSE_DEGRADED) with
        one warning per outage; the page shows "degraded" (payments are still taken and wait
        for their hand-off), reconnects with backoff and, once the layer is back, refreshes
        what it shows on "ready"."""
        CHANNEL_LAYER.failed(exc, "dashboard receive")
        return {"type": "dashboard.layer_lost"}

    async def dashboard_layer_lost(self, message: dict[str, Any]) -> None:
        await self.close(code=CLOSE_DEGRADED)
        raise StopConsumer()


def dashboard_application() -> Any:
    """The socket as mounted in ``posgateway.routing``: Origin check, then the login session."""
    return SiteOriginValidator(AuthMiddlewareStack(DashboardConsumer.as_asgi()))
