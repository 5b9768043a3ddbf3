"""``POST /terminal-api/sync`` and ``/terminal-api/async``: the nexo admin requests over HTTP.

Authenticated by a desktop's key in ``x-api-key``. ``sync`` answers with the
``SaleToPOIResponse``; ``async`` checks the key (401) and the document (a Failure body, HTTP
200, as Adyen's cloud does) and otherwise answers ``ok`` and pushes the response to the desktop
device's socket as ``terminalApiResponse``.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from posgateway import nexo
from posgateway.core.events import Outbox
from posgateway.core.protocol import error_body
from posgateway.gateway import frames
from posgateway.gateway.delivery import Push, deliver_sync
from terminals.models import DeviceType
from terminals.selectors import device_for_key, live_connection

logger = logging.getLogger("sessions.terminal_api")


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, message), status=status)


def _handle(request: HttpRequest, *, push: bool) -> HttpResponse:
    key = request.headers.get("x-api-key", "")
    desktop = device_for_key(key=key)
    if desktop is None or desktop.device_type != DeviceType.DESKTOP:
        return _error(401, "A valid desktop API key is required in x-api-key")
    body = request.body
    limit = settings.MAX_MESSAGE_BYTES  # the same limit as a WebSocket frame
    if len(body) > limit:
        return _error(413, f"The body exceeds {limit} bytes")
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        failure = nexo.message_format("The body is not JSON")
        return JsonResponse(nexo.failure_document({}, failure))
    outbox = Outbox()
    response, _ = nexo.terminal_api_request(desktop=desktop, document=document, outbox=outbox)
    ok = nexo.is_success(response)
    if ok and push:
        live = live_connection(device_id=desktop.pk)
        if live is not None:
            outbox.publish(Push(live.channel_name, frames.terminal_api_response(response)))
    deliver_sync(outbox)
    if ok and push:
        return HttpResponse("ok", content_type="text/plain")
    return JsonResponse(response)


def _no_constants(name: str):
    raise ValueError(name)


def _method_not_allowed() -> JsonResponse:
    response = _error(405, "Use POST")
    response["Allow"] = "POST"
    return response


@csrf_exempt
def sync(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed()
    return _handle(request, push=False)


@csrf_exempt
def async_(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed()
    return _handle(request, push=True)
