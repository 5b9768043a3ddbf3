"""ASGI entry point: daphne serves HTTP (Django) and the WebSocket gateway from one process."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "posgateway.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the routing imports models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from posgateway import gateway, redact  # noqa: E402
from posgateway.routing import websocket_urlpatterns  # noqa: E402

# daphne's access log prints HTTP query strings: never a device key (posgateway/redact.py).
redact.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)


def _start_sweeper_when_serving() -> None:
    """Start the sweeper as soon as daphne's reactor runs, not on the first request.

    daphne sends no ASGI lifespan events. Without this, a process restarted after a crash would
    leave overdue payments IN_PROGRESS until some device or health check arrived. daphne imports
    this module after installing its asyncio reactor; anywhere else (tests importing the
    application, other servers) the first socket or /healthz starts the sweeper as before.
    """
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callLater(0, gateway.ensure_sweeper)  # runs on the asyncio loop, once it runs


_start_sweeper_when_serving()
