"""Terminal API sessions (waiting screen between requests) and display / input requests.

A session is begun and ended with a nexo admin request (``SaleToPOIRequest`` with a Base64
``ServiceIdentification``) over HTTP or the WebSocket; while it is active every forwarded request
whose type it names carries ``waitingScreen``. Display and input requests follow the payment
rules: terminal ID resolution, store checks, one request in flight per terminal, a deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments.models import IN_FLIGHT_STATUSES, Transaction
from posgateway.dashboard import events as dashboard
from posgateway.protocol import (
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
    now_iso,
)
from posgateway.realtime import Outbox
from sessions.models import (
    PERSONAL_INPUT_TYPES,
    OperationType,
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalRequest,
    TerminalSession,
)
from sessions.validation import (
    REQUEST_ID,
    TerminalApiFailure,
    parse_terminal_api_request,
    validate_display_request,
    validate_display_response,
    validate_input_request,
    validate_input_response,
)
from terminals.models import Device, DeviceType
from terminals.selectors import live_connection, resolve_terminal

logger = logging.getLogger("sessions")

OPERATION_OF_KIND = {
    RequestKind.DISPLAY: OperationType.DISPLAY_REQUEST,
    RequestKind.INPUT: OperationType.INPUT_REQUEST,
}


# --- Sessions ----------------------------------------------------------------------------------


def active_session(*, terminal_pk: int) -> TerminalSession | None:
    return TerminalSession.objects.filter(
        terminal_id=terminal_pk, state=SessionState.ACTIVE
    ).first()


def waiting_screen(*, terminal_pk: int, operation_type: str) -> dict[str, Any] | None:
    """The waitingScreen for a request forwarded now, and the session's clock restarted."""
    session = active_session(terminal_pk=terminal_pk)
    if session is None:
        return None
    TerminalSession.objects.filter(pk=session.pk).update(last_request_at=timezone.now())
    return session.waiting_screen_for(operation_type)


def session_frame(session: TerminalSession) -> dict[str, Any]:
    return {"id": session.session_id, "operations": session.operations}


def _response(
    header: dict[str, Any], result: str, condition: str = "", text: str = ""
) -> dict[str, Any]:
    response: dict[str, Any] = {"Result": result}
    if result != "Success":
        response["ErrorCondition"] = condition
        response["AdditionalResponse"] = text
    return {
        "SaleToPOIResponse": {
            "MessageHeader": {**header, "MessageType": "Response"},
            "AdminResponse": {"Response": response},
        }
    }


def failure_document(header: dict[str, Any], failure: TerminalApiFailure) -> dict[str, Any]:
    return _response(header, "Failure", failure.condition, failure.text)


def _echo_header(document: object) -> dict[str, Any]:
    """The request's header as far as it is readable, to echo in a Failure."""
    request = document.get("SaleToPOIRequest") if isinstance(document, dict) else None
    header = request.get("MessageHeader") if isinstance(request, dict) else None
    if not isinstance(header, dict):
        return {}
    return {k: v for k, v in header.items() if isinstance(k, str) and isinstance(v, str)}


def terminal_api_request(
    *, desktop: Device, document: object, outbox: Outbox
) -> tuple[dict[str, Any], TerminalSession | None]:
    """Handle one Terminal API admin request; returns the SaleToPOIResponse and the session.

    Every failure is a ``Result: Failure`` document and leaves nothing half-created.
    """
    try:
        parsed = parse_terminal_api_request(document)
        header = parsed["header"]
        if parsed["type"] == "Begin":
            session = _session_begin(desktop=desktop, parsed=parsed, outbox=outbox)
        else:
            session = _session_end(desktop=desktop, parsed=parsed, outbox=outbox)
    except TerminalApiFailure as failure:
        logger.info("terminal api request refused: %s %s", failure.condition, failure.text)
        return failure_document(_echo_header(document), failure), None
    return _response(header, "Success"), session


def _session_terminal(desktop: Device, poi_id: str) -> Device:
    terminal = (
        Device.objects.select_related("current_connection")
        .filter(
            group_id=desktop.group_id,
            device_type=DeviceType.TERMINAL,
            device_id=poi_id,
            is_active=True,
        )
        .first()
    )
    if terminal is None:
        # Also what another store's terminal gets: no hint that it exists.
        raise TerminalApiFailure("NotFound", f"No terminal with POIID {poi_id} in this store")
    return terminal


def _session_begin(*, desktop: Device, parsed: dict[str, Any], outbox: Outbox) -> TerminalSession:
    header = parsed["header"]
    terminal = _session_terminal(desktop, header["POIID"])
    with transaction.atomic():
        current = _locked_active_session(terminal)
        if current is not None:
            if current.session_id == parsed["sessionId"]:
                return current  # Begin repeated: the same session, not a second one
            raise TerminalApiFailure(
                "Busy", f"Terminal {header['POIID']} already has an active session"
            )
        live = terminal.current_connection
        if live is None or live.closed_at is not None:
            raise TerminalApiFailure(
                "UnreachableHost", f"Terminal {header['POIID']} is not connected"
            )
        now = timezone.now()
        try:
            with transaction.atomic():
                session = TerminalSession.objects.create(
                    group_id=desktop.group_id,
                    session_id=parsed["sessionId"],
                    terminal=terminal,
                    desktop=desktop,
                    sale_id=header.get("SaleID", ""),
                    service_id=header.get("ServiceID", ""),
                    operations=parsed["operations"],
                    last_request_at=now,
                )
        except IntegrityError:
            # Another Begin committed first: tell which rule it hit (or it was this one).
            return _begin_conflict(desktop=desktop, terminal=terminal, parsed=parsed)
        outbox.frame(
            live.channel_name,
            {"action": "sessionBegin", "session": session_frame(session), "timestamp": now_iso()},
        )
        dashboard.session_changed(outbox, session)
    logger.info(
        "session %s begun on terminal %s store=%s",
        session.session_id,
        header["POIID"],
        desktop.group_id,
    )
    return session


def _locked_active_session(terminal: Device) -> TerminalSession | None:
    """The terminal's active session, locked. Nothing to lock when there is none: two Begins
    may both see None, and the unique constraints decide (see ``_begin_conflict``)."""
    return (
        TerminalSession.objects.select_for_update()
        .filter(terminal=terminal, state=SessionState.ACTIVE)
        .first()
    )


def _begin_conflict(
    *, desktop: Device, terminal: Device, parsed: dict[str, Any]
) -> TerminalSession:
    """Which active session a Begin collided with: the same one (Begin repeated: returned), the
    terminal's other session, or this Id active on another terminal (both Busy)."""
    session_id = parsed["sessionId"]
    on_terminal = active_session(terminal_pk=terminal.pk)
    if on_terminal is not None:
        if on_terminal.session_id == session_id:
            return on_terminal
        raise TerminalApiFailure(
            "Busy", f"Terminal {parsed['header']['POIID']} already has an active session"
        )
    if TerminalSession.objects.filter(
        group_id=desktop.group_id, session_id=session_id, state=SessionState.ACTIVE
    ).exists():
        raise TerminalApiFailure(
            "Busy", f"Session {session_id} is already active on another terminal"
        )
    # The colliding session already ended again: still Busy, this Begin raced another.
    raise TerminalApiFailure(
        "Busy", f"Another session was begun on terminal {parsed['header']['POIID']} meanwhile"
    )


def _session_end(*, desktop: Device, parsed: dict[str, Any], outbox: Outbox) -> TerminalSession:
    poi_id = parsed["header"].get("POIID")
    with transaction.atomic():
        session = (
            TerminalSession.objects.select_for_update(of=("self",))
            .select_related("terminal")
            .filter(
                group_id=desktop.group_id,
                session_id=parsed["sessionId"],
                state=SessionState.ACTIVE,
            )
            .first()
        )
        if session is None or (poi_id and poi_id != session.terminal.device_id):
            raise TerminalApiFailure("NotFound", f"No active session {parsed['sessionId']}")
        _end(session, SessionState.ENDED, "ended", outbox)
    return session


def _end(session: TerminalSession, state: str, reason: str, outbox: Outbox) -> None:
    session.state = state
    session.ended_at = timezone.now()
    session.end_reason = reason
    session.save(update_fields=["state", "ended_at", "end_reason"])
    dashboard.session_changed(outbox, session)
    live = live_connection(device_id=session.terminal_id)
    if live is not None:
        # Ending a session does not interrupt a waiting screen already showing (the seed).
        frame = {
            "action": "sessionEnd",
            "session": {"id": session.session_id},
            "interruptWaitingScreen": False,
            "reason": reason,
            "timestamp": now_iso(),
        }
        outbox.frame(live.channel_name, frame)
    logger.info("session %s %s store=%s", session.session_id, reason, session.group_id)


def session_keep_response(*, session_pk: int, response: dict[str, Any]) -> None:
    TerminalSession.objects.filter(pk=session_pk).update(last_response=response)


def sweep_sessions(*, outbox: Outbox, limit: int = 200) -> int:
    """Expire sessions without a request for SESSION_MAX_AGE_S; the terminal is told."""
    cutoff = timezone.now() - dt.timedelta(seconds=settings.SESSION_MAX_AGE_S)
    due = list(
        TerminalSession.objects.filter(
            state=SessionState.ACTIVE, last_request_at__lt=cutoff
        ).values_list("pk", flat=True)[:limit]
    )
    done = 0
    for pk in due:
        with transaction.atomic():
            session = (
                TerminalSession.objects.select_for_update()
                .filter(pk=pk, state=SessionState.ACTIVE, last_request_at__lt=cutoff)
                .first()
            )
            if session is not None:
                _end(session, SessionState.EXPIRED, "expired", outbox)
                done += 1
    return done


def session_resume_frames(*, terminal_pk: int) -> list[dict[str, Any]]:
    """Told to a terminal that reconnects while its session is active."""
    session = active_session(terminal_pk=terminal_pk)
    if session is None:
        return []
    return [
        {
            "action": "sessionBegin",
            "session": session_frame(session),
            "resumed": True,
            "timestamp": now_iso(),
        }
    ]


# --- Display and input requests ----------------------------------------------------------------


def terminal_busy_with(*, terminal_pk: int) -> dict[str, str] | None:
    """What keeps a terminal busy: a payment or a display/input request in flight."""
    tid = (
        Transaction.objects.filter(terminal_id=terminal_pk, status__in=IN_FLIGHT_STATUSES)
        .values_list("transaction_id", flat=True)
        .first()
    )
    if tid is not None:
        return {"inFlightTransactionId": tid}
    rid = (
        TerminalRequest.objects.filter(terminal_id=terminal_pk, status=RequestStatus.IN_PROGRESS)
        .values_list("request_id", flat=True)
        .first()
    )
    if rid is not None:
        return {"inFlightRequestId": rid}
    return None


def _complete_frame(req: TerminalRequest, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": f"{req.kind}Complete",
        "requestId": req.request_id,
        f"{req.kind}Response": response,
        "timestamp": now_iso(),
    }


def request_start(
    *,
    kind: str,
    desktop: Device,
    desktop_connection_id: str,
    terminal_id: str,
    body: Any,
    outbox: Outbox,
) -> dict[str, Any]:
    """Validate, store and forward a display or input request; returns the desktop's answer."""
    request = (validate_display_request if kind == RequestKind.DISPLAY else validate_input_request)(
        body
    )
    request_id = request.pop("requestId") or f"{kind[:4]}-{secrets.token_urlsafe(9)}"
    terminal, live = resolve_terminal(group_id=desktop.group_id, terminal_id=terminal_id)
    if live is None:
        raise NotFound(TERMINAL_NOT_FOUND, requestId=request_id)
    if TerminalRequest.objects.filter(group_id=desktop.group_id, request_id=request_id).exists():
        raise Conflict("requestId already used", requestId=request_id)
    busy = terminal_busy_with(terminal_pk=terminal.pk)
    if busy is not None:
        raise Conflict(TERMINAL_BUSY, requestId=request_id, **busy)
    # A terminal may answer a display only once it has been shown for its duration.
    limit_ms = request.get("maxInputTimeMs") or request.get("durationMs", 0)
    now = timezone.now()
    deadline = now + dt.timedelta(seconds=limit_ms / 1000 + settings.TERMINAL_REQUEST_TIMEOUT_S)
    try:
        with transaction.atomic():
            session = active_session(terminal_pk=terminal.pk)
            req = TerminalRequest.objects.create(
                group_id=desktop.group_id,
                request_id=request_id,
                kind=kind,
                input_type=request.get("type", ""),
                terminal=terminal,
                desktop=desktop,
                session=session,
                request=request,
                deadline_at=deadline,
            )
            frame: dict[str, Any] = {
                "action": f"{kind}Request",
                "desktopId": desktop_connection_id,
                "requestId": request_id,
                f"{kind}Request": request,
                "timestamp": now_iso(),
            }
            screen = waiting_screen(terminal_pk=terminal.pk, operation_type=OPERATION_OF_KIND[kind])
            if screen is not None:
                frame["waitingScreen"] = screen
            outbox.frame(live.channel_name, frame)
            dashboard.request_changed(outbox, req)
    except IntegrityError:
        busy = terminal_busy_with(terminal_pk=terminal.pk)
        if busy is None:
            raise Conflict("requestId already used", requestId=request_id) from None
        raise Conflict(TERMINAL_BUSY, requestId=request_id, **busy) from None
    logger.info(
        "%s request %s forwarded to terminal %s store=%s session=%s",
        kind,
        request_id,
        terminal.device_id or terminal.pk,
        desktop.group_id,
        session.session_id if session else "-",
    )
    return {
        "action": f"{kind}Accepted",
        "requestId": req.request_id,
        "terminalId": terminal_id,
        "deviceId": terminal.device_id or None,
        "connectionId": live.connection_id,
        "status": req.status,
        "timestamp": now_iso(),
    }


def in_flight_requests(*, terminal_pk: int, outbox: Outbox | None = None) -> list[dict[str, Any]]:
    """Display / input requests still in flight to a terminal that just reconnected.

    Sent again as they were, marked ``resent``, with the session's current waiting screen: the
    rule of payments (terminals treat requestId as idempotent). ``outbox`` is taken for the
    symmetry with ``payments.in_flight_requests``; nothing changes, so nothing is published.
    """
    # Locked: a request timing out meanwhile is either not re-sent, or re-sent first.
    with transaction.atomic():
        reqs = list(
            TerminalRequest.objects.select_for_update(no_key=True)
            .filter(terminal_id=terminal_pk, status=RequestStatus.IN_PROGRESS)
            .order_by("created_at", "pk")
        )
        return [_resent_frame(req) for req in reqs]


def _resent_frame(req: TerminalRequest) -> dict[str, Any]:
    desktop = live_connection(device_id=req.desktop_id)
    frame: dict[str, Any] = {
        "action": f"{req.kind}Request",
        "desktopId": desktop.connection_id if desktop is not None else None,
        "requestId": req.request_id,
        f"{req.kind}Request": req.request,
        "timestamp": now_iso(),
    }
    screen = waiting_screen(terminal_pk=req.terminal_id, operation_type=OPERATION_OF_KIND[req.kind])
    if screen is not None:
        frame["waitingScreen"] = screen
    frame["resent"] = True
    logger.info(
        "%s request %s resent to the reconnected terminal store=%s",
        req.kind,
        req.request_id,
        req.group_id,
    )
    return frame


def _stored_result(req: TerminalRequest, response: dict[str, Any]) -> dict[str, Any]:
    """What is kept of an answer: for personal data (email, phone, signature) only its outcome."""
    if req.input_type in PERSONAL_INPUT_TYPES:
        return {"status": response["status"], "type": req.input_type}
    return response


def request_result(*, kind: str, terminal: Device, response: Any, outbox: Outbox) -> None:
    """A terminal answered a display or input request: record it, deliver it to the desktop."""
    root = f"{kind}Response"
    if not isinstance(response, dict):
        raise BadRequest(f"{root} is required")
    request_id = response.get("requestId")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise BadRequest(f"{root}.requestId is required")
    with transaction.atomic():
        req = (
            TerminalRequest.objects.select_for_update()
            .filter(
                group_id=terminal.group_id,
                request_id=request_id,
                kind=kind,
                terminal=terminal,
            )
            .first()
        )
        if req is None:
            raise NotFound("Request not found", requestId=request_id)
        if kind == RequestKind.DISPLAY:
            answer = validate_display_response(response)
        else:
            answer = validate_input_response(response, request=req.request)
        answer["requestId"] = req.request_id
        if req.status != RequestStatus.IN_PROGRESS:
            raise Conflict("Request already completed", requestId=req.request_id, status=req.status)
        req.status = answer["status"]
        req.result = _stored_result(req, answer)
        req.error_message = answer.get("errorMessage") or ""
        req.completed_at = timezone.now()
        req.save(update_fields=["status", "result", "error_message", "completed_at"])
        dashboard.request_changed(outbox, req)
        live = live_connection(device_id=req.desktop_id)
        if live is not None:
            outbox.frame(live.channel_name, _complete_frame(req, answer))
    logger.info(
        "%s %s %s (%s) store=%s",
        root,
        req.request_id,
        req.status,
        req.input_type or "-",
        req.group_id,
    )


def sweep_request_timeouts(*, outbox: Outbox, limit: int = 200) -> int:
    """A display or input request without an answer by its deadline times out, once."""
    now = timezone.now()
    due = list(
        TerminalRequest.objects.filter(
            status=RequestStatus.IN_PROGRESS, deadline_at__lt=now
        ).values_list("pk", flat=True)[:limit]
    )
    done = 0
    for pk in due:
        with transaction.atomic():
            req = (
                TerminalRequest.objects.select_for_update()
                .filter(pk=pk, status=RequestStatus.IN_PROGRESS)
                .first()
            )
            if req is None:
                continue
            answer = {
                "requestId": req.request_id,
                "status": RequestStatus.TIMEOUT,
                "errorMessage": "No answer from the terminal in time",
            }
            if req.kind == RequestKind.INPUT:
                answer["type"] = req.input_type
            req.status = RequestStatus.TIMEOUT
            req.result = _stored_result(req, answer)
            req.error_message = answer["errorMessage"]
            req.completed_at = now
            req.save(update_fields=["status", "result", "error_message", "completed_at"])
            dashboard.request_changed(outbox, req)
            live = live_connection(device_id=req.desktop_id)
            if live is not None:
                outbox.frame(live.channel_name, _complete_frame(req, answer))
            logger.info("%s request %s timed out store=%s", req.kind, req.request_id, req.group_id)
            done += 1
    return done
