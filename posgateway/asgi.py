"""ASGI entry point: one process serves HTTP (Django) and the WebSocket gateway.

daphne is the default server; uvicorn is supported too (docs/operations.md says which to choose).
"""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "posgateway.settings")


def _refuse_a_public_secret_key() -> None:
    """Fail closed: with DEBUG off, a server (daphne, uvicorn, anything importing this module to
    serve) stops at start, with one line, when SECRET_KEY is unset or a key anyone can read (the
    development fallback in settings.py, or any Django ``django-insecure-`` key): sessions and
    CSRF tokens signed with it could be forged. manage.py commands never import this module; the
    test suite sets a random key before it does (tests/conftest.py)."""
    from django.conf import settings

    if settings.DEBUG:
        return
    key = settings.SECRET_KEY
    if not os.environ.get("SECRET_KEY") and key == settings.DEVELOPMENT_SECRET_KEY:
        problem = "SECRET_KEY is not set"
    elif key == settings.DEVELOPMENT_SECRET_KEY or key.startswith("django-insecure"):
        problem = "SECRET_KEY is a public development key"
    else:
        return
    raise SystemExit(
        f"posgateway: refusing to start: {problem} and DEBUG is off; set SECRET_KEY to a long "
        "random value, the same on every process (docs/operations.md)"
    )


_refuse_a_public_secret_key()
django_asgi_app = get_asgi_application()  # sets Django up before the routing imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from posgateway.core import bodylimit, redact, serverlog  # noqa: E402
from posgateway.gateway import background  # noqa: E402
from posgateway.routing import websocket_urlpatterns  # noqa: E402
from posgateway.terminal_api.consumers import TerminalApiConsumer  # noqa: E402
from posgateway.webhook_delivery import worker as webhook_worker  # noqa: E402

# The servers' access logs print query strings: never a device key (posgateway/core/redact.py).
redact.install()
serverlog.install()
# Request bodies are bounded while the server reads them (posgateway/core/bodylimit.py).
bodylimit.install()


async def lifespan(scope, receive, send) -> None:
    """ASGI lifespan (uvicorn sends it; daphne does not): the background loop starts and stops
    with the server."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            start_background()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await background.stop()
            await webhook_worker.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


def start_background() -> None:
    """This process's background work: the sweeper, and (unless WEBHOOK_IN_PROCESS=0) a
    webhook delivery worker."""
    background.start()
    webhook_worker.start()


application = ProtocolTypeRouter(
    {
        # The Terminal API endpoints are an ASGI consumer (a sync payment waits for the
        # terminal without a thread: posgateway/terminal_api/consumers.py); the rest is Django.
        # Request bodies bounded while they are read, before anything buffers them
        # (posgateway/core/bodylimit.py), whichever application answers.
        "http": bodylimit.BodyLimit(
            URLRouter(
                [
                    re_path(r"^terminal-api/(?:sync|async)$", TerminalApiConsumer.as_asgi()),
                    re_path(r"", django_asgi_app),
                ]
            )
        ),
        "websocket": URLRouter(websocket_urlpatterns),
        "lifespan": lifespan,
    }
)


def _start_sweeper_when_serving() -> None:
    """Start the background loop (posgateway.gateway.background) as soon as daphne's reactor
    runs, not on the first request.

    daphne sends no ASGI lifespan events. Without this, a process restarted after a crash would
    leave overdue payments IN_PROGRESS until some device or health check arrived. daphne imports
    this module after installing its asyncio reactor. uvicorn starts it with the lifespan
    events. Anywhere else (tests importing the application, a server with lifespan off) no
    loop runs: that server must send lifespan events.
    """
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callLater(0, start_background)  # runs on the asyncio loop, once it runs


_start_sweeper_when_serving()
