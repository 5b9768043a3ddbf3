"""Terminal API sessions (waiting screen between requests) and display / input requests.

A session is begun and ended with a nexo admin request (read by ``posgateway.nexo``) over HTTP
or the WebSocket; while it is active every forwarded request whose type it names carries
``waitingScreen``. Display and input requests follow the payment rules: terminal ID
resolution, store checks, one request in flight per terminal (``terminals.occupancy``), a
deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from payments import services as payments
from payments.models import Transaction
from posgateway.core import forwarding
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    BadRequest,
    Conflict,
    NotFound,
    ProtocolError,
)
from sessions.events import (
    RequestAccepted,
    RequestChanged,
    RequestCompleted,
    RequestForwarded,
    SessionBegun,
    SessionChanged,
    SessionEnded,
    SessionRefused,
)
from sessions.models import (
    PERSONAL_INPUT_TYPES,
    OperationType,
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalApiMessage,
    TerminalRequest,
    TerminalSession,
)
from sessions.validation import (
    REQUEST_ID,
    validate_display_request,
    validate_display_response,
    validate_input_request,
    validate_input_response,
)
from terminals import occupancy
from terminals.models import Device
from terminals.selectors import live_connection, resolve_terminal
from webhooks.services import event_record

logger = logging.getLogger("sessions")

# Keyed by RequestKind, looked up with the plain str a request or a row holds (equal, same hash).
OPERATION_OF_KIND: dict[str, OperationType] = {
    RequestKind.DISPLAY: OperationType.DISPLAY_REQUEST,
    RequestKind.INPUT: OperationType.INPUT_REQUEST,
}


# --- Sessions ----------------------------------------------------------------------------------


def active_session(*, terminal_pk: int) -> TerminalSession | None:
    return TerminalSession.objects.filter(
        terminal_id=terminal_pk, state=SessionState.ACTIVE
    ).first()


def active_session_subquery(terminal_column: str) -> str:
    """SQL, non-NULL while the terminal in ``terminal_column`` has an active session."""
    meta = TerminalSession._meta
    return (
        f"(SELECT s.id FROM {meta.db_table} s"  # noqa: S608 (model metadata)
        f" WHERE s.{meta.get_field('terminal').column} = {terminal_column}"
        f" AND s.{meta.get_field('state').column} = '{SessionState.ACTIVE.value}')"
    )


def session_request_forwarded(*, terminal_pk: int, operation_type: str) -> dict[str, Any] | None:
    """A request of ``operation_type`` is forwarded to the terminal now: its active session's
    clock restarts, and the waitingScreen the request carries is returned (None: no session,
    or one that does not name this operation type)."""
    session = active_session(terminal_pk=terminal_pk)
    if session is None:
        return None
    TerminalSession.objects.filter(pk=session.pk).update(last_request_at=timezone.now())
    return session.waiting_screen_for(operation_type)


def session_begin(
    *,
    desktop: Device,
    poi_id: str,
    session_id: str,
    operations: list[dict[str, Any]],
    sale_id: str = "",
    service_id: str = "",
    outbox: Outbox,
) -> TerminalSession:
    """Begin a session on the store's terminal ``poi_id`` (a deviceId); the terminal is told.

    A Begin repeated with the same Id is the same session. Raises SessionRefused (NotFound,
    Busy, UnreachableHost); also what another store's terminal gets: no hint that it exists.
    """
    resolution = resolve_terminal(
        group_id=desktop.group_id, terminal_id=poi_id, device_id_only=True
    )
    if resolution.terminal is None:
        raise SessionRefused("NotFound", f"No terminal with POIID {poi_id} in this store")
    terminal, live = resolution.terminal, resolution.live
    with transaction.atomic():
        current = _locked_active_session(terminal)
        if current is not None:
            if current.session_id == session_id:
                return current  # Begin repeated: the same session, not a second one
            raise SessionRefused("Busy", f"Terminal {poi_id} already has an active session")
        if live is None:
            raise SessionRefused("UnreachableHost", f"Terminal {poi_id} is not connected")
        now = timezone.now()
        try:
            with transaction.atomic():
                session = TerminalSession.objects.create(
                    group_id=desktop.group_id,
                    session_id=session_id,
                    terminal=terminal,
                    desktop=desktop,
                    sale_id=sale_id,
                    service_id=service_id,
                    operations=operations,
                    last_request_at=now,
                )
        except IntegrityError:
            # Another Begin committed first: tell which rule it hit (or it was this one).
            return _begin_conflict(
                desktop=desktop, terminal=terminal, poi_id=poi_id, session_id=session_id
            )
        outbox.publish(SessionBegun(session.session_id, session.operations, live.channel_name))
        outbox.publish(SessionChanged.of(session))
        event_record(group_id=session.group_id, type="session.began", subject_pk=session.pk)
    logger.info(
        "session %s begun on terminal %s store=%s", session.session_id, poi_id, desktop.group_id
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
    *, desktop: Device, terminal: Device, poi_id: str, session_id: str
) -> TerminalSession:
    """Which active session a Begin collided with: the same one (Begin repeated: returned), the
    terminal's other session, or this Id active on another terminal (both Busy)."""
    on_terminal = active_session(terminal_pk=terminal.pk)
    if on_terminal is not None:
        if on_terminal.session_id == session_id:
            return on_terminal
        raise SessionRefused("Busy", f"Terminal {poi_id} already has an active session")
    if TerminalSession.objects.filter(
        group_id=desktop.group_id, session_id=session_id, state=SessionState.ACTIVE
    ).exists():
        raise SessionRefused("Busy", f"Session {session_id} is already active on another terminal")
    # The colliding session already ended again: still Busy, this Begin raced another.
    raise SessionRefused("Busy", f"Another session was begun on terminal {poi_id} meanwhile")


def session_end(
    *, desktop: Device, session_id: str, poi_id: str | None = None, outbox: Outbox
) -> TerminalSession:
    """End the store's active session ``session_id`` (on terminal ``poi_id`` when given)."""
    with transaction.atomic():
        session = (
            TerminalSession.objects.select_for_update(of=("self",))
            .select_related("terminal")
            .filter(
                group_id=desktop.group_id,
                session_id=session_id,
                state=SessionState.ACTIVE,
            )
            .first()
        )
        if session is None or (poi_id and poi_id != session.terminal.device_id):
            raise SessionRefused("NotFound", f"No active session {session_id}")
        _end(session, SessionState.ENDED, "ended", outbox)
    return session


def _end(session: TerminalSession, state: str, reason: str, outbox: Outbox) -> None:
    session.state = state
    session.ended_at = timezone.now()
    session.end_reason = reason
    session.save(update_fields=["state", "ended_at", "end_reason"])
    outbox.publish(SessionChanged.of(session))
    event_record(group_id=session.group_id, type="session.ended", subject_pk=session.pk)
    live = live_connection(device_id=session.terminal_id)
    if live is not None:
        outbox.publish(SessionEnded(session.session_id, reason, live.channel_name))
    logger.info("session %s %s store=%s", session.session_id, reason, session.group_id)


def session_keep_response(*, session_pk: int, response: dict[str, Any]) -> None:
    TerminalSession.objects.filter(pk=session_pk).update(last_response=response)


def _each_due(due: QuerySet[Any], limit: int) -> Iterator[Any]:
    """Each row ``due`` finds (at most ``limit``), locked in a transaction of its own while it
    still matches: another process may have handled it meanwhile. The caller's loop body runs in
    that transaction (it must not ``break``: closing the generator rolls the row back)."""
    for pk in list(due.values_list("pk", flat=True)[:limit]):
        with transaction.atomic():
            row = due.select_for_update().filter(pk=pk).first()
            if row is not None:
                yield row


def sweep_sessions(*, outbox: Outbox, limit: int = 200) -> int:
    """Expire sessions without a request for SESSION_MAX_AGE_S; the terminal is told."""
    cutoff = timezone.now() - dt.timedelta(seconds=settings.SESSION_MAX_AGE_S)
    due = TerminalSession.objects.filter(state=SessionState.ACTIVE, last_request_at__lt=cutoff)
    done = 0
    for session in _each_due(due, limit):
        _end(session, SessionState.EXPIRED, "expired", outbox)
        done += 1
    return done


def session_resumed(*, terminal_pk: int) -> list[SessionBegun]:
    """What a terminal that reconnects while its session is active is told: it is still on."""
    session = active_session(terminal_pk=terminal_pk)
    if session is None:
        return []
    return [SessionBegun(session.session_id, session.operations, resumed=True)]


# --- Display and input requests ----------------------------------------------------------------


def request_start(
    *,
    kind: str,
    desktop: Device,
    desktop_connection_id: str,
    terminal_id: str,
    body: Any,
    outbox: Outbox,
) -> RequestAccepted:
    """Validate, store and forward a display or input request; returns what the desktop is
    answered."""
    request = (validate_display_request if kind == RequestKind.DISPLAY else validate_input_request)(
        body
    )
    request_id = request.pop("requestId") or f"{kind[:4]}-{secrets.token_urlsafe(9)}"
    terminal, live = resolve_terminal(group_id=desktop.group_id, terminal_id=terminal_id).require()
    if live is None:
        raise NotFound(TERMINAL_NOT_FOUND, requestId=request_id)
    if TerminalRequest.objects.filter(group_id=desktop.group_id, request_id=request_id).exists():
        raise Conflict("requestId already used", requestId=request_id)
    busy = occupancy.busy_with(terminal_pk=terminal.pk)
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
            screen = session_request_forwarded(
                terminal_pk=terminal.pk, operation_type=OPERATION_OF_KIND[kind]
            )
            outbox.publish(
                RequestForwarded(
                    kind,
                    request_id,
                    request,
                    desktop_connection_id,
                    screen,
                    live.channel_name,
                    group_id=desktop.group_id,
                )
            )
            outbox.publish(RequestChanged.of(req))
    except IntegrityError:
        busy = occupancy.busy_with(terminal_pk=terminal.pk)
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
    return RequestAccepted(req, terminal_id, terminal.device_id or None, live.connection_id)


def in_flight_requests(*, terminal_pk: int, outbox: Outbox | None = None) -> list[RequestForwarded]:
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
        return [_resent(req) for req in reqs]


def request_forward_failed(outbox: Outbox, *, group_id: int, request_id: str) -> None:
    """The channel layer refused to hand a display or input request to its terminal: it stays
    in flight and the hand-off is tried again until it gets through or the deadline passes
    (posgateway.core.forwarding), as for payments."""
    pk = (
        TerminalRequest.objects.filter(
            group_id=group_id, request_id=request_id, status=RequestStatus.IN_PROGRESS
        )
        .values_list("pk", flat=True)
        .first()
    )
    if pk is not None and forwarding.schedule(
        TerminalRequest, pk=pk, in_flight=[RequestStatus.IN_PROGRESS]
    ):
        logger.warning(
            "request %s: hand-off to the terminal refused by the channel layer; it will be "
            "tried again store=%s",
            request_id,
            group_id,
        )


def forwards_due(*, limit: int = 100) -> list[tuple[forwarding.Claim, RequestForwarded]]:
    """Display and input requests whose refused hand-off is due another try, claimed for this
    process, with the request to hand off (marked ``resent``) to the terminal's connection of
    now; a terminal that is not connected gets it when it connects."""
    due: list[tuple[forwarding.Claim, RequestForwarded]] = []
    in_flight = [RequestStatus.IN_PROGRESS]
    for claim in forwarding.claim_due(TerminalRequest, in_flight=in_flight, limit=limit):
        req = TerminalRequest.objects.get(pk=claim[0])
        live = live_connection(device_id=req.terminal_id)
        if live is None:
            forwarding.confirm(TerminalRequest, [claim])
            continue
        due.append((claim, _resent(req, live.channel_name)))
    return due


def forwards_confirmed(*, claims: list[forwarding.Claim]) -> None:
    """These tries were handed to the channel layer: their requests stop waiting for one."""
    forwarding.confirm(TerminalRequest, claims)


def _resent(req: TerminalRequest, channel_name: str | None = None) -> RequestForwarded:
    desktop = live_connection(device_id=req.desktop_id)
    screen = session_request_forwarded(
        terminal_pk=req.terminal_id, operation_type=OPERATION_OF_KIND[req.kind]
    )
    logger.info(
        "%s request %s resent to the %s terminal store=%s",
        req.kind,
        req.request_id,
        "connected" if channel_name else "reconnected",
        req.group_id,
    )
    return RequestForwarded(
        req.kind,
        req.request_id,
        req.request,
        desktop.connection_id if desktop is not None else None,
        screen,
        channel_name,
        resent=True,
        group_id=req.group_id,
    )


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
        outbox.publish(RequestChanged.of(req))
        live = live_connection(device_id=req.desktop_id)
        if live is not None:
            outbox.publish(RequestCompleted(kind, req.request_id, answer, live.channel_name))
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
    due = TerminalRequest.objects.filter(status=RequestStatus.IN_PROGRESS, deadline_at__lt=now)
    done = 0
    for req in _each_due(due, limit):
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
        outbox.publish(RequestChanged.of(req))
        live = live_connection(device_id=req.desktop_id)
        if live is not None:
            outbox.publish(RequestCompleted(req.kind, req.request_id, answer, live.channel_name))
        logger.info("%s request %s timed out store=%s", req.kind, req.request_id, req.group_id)
        done += 1
    return done


# --- Terminal API payment messages (contract section 10) -------------------------------------

# Adyen's cloud remembers a (SaleID, ServiceID, POIID) this long; a repeat within it starts
# nothing new.
MESSAGE_KEY_TTL = dt.timedelta(hours=48)
PAYMENT_CATEGORY = "Payment"
REVERSAL_CATEGORY = "Reversal"


def _message_claim(
    *, desktop: Device, sale_id: str, service_id: str, poi_id: str, category: str
) -> tuple[TerminalApiMessage, bool]:
    """The store's message of this key: (a new one, True), or (the one of the last 48 h,
    False). One of an older key is forgotten. Concurrent claims of one key: one wins (the
    unique constraint), the others wait for its commit and get it."""
    key = {
        "group_id": desktop.group_id,
        "sale_id": sale_id,
        "service_id": service_id,
        "poi_id": poi_id,
    }
    existing = (
        TerminalApiMessage.objects.select_related("group", "transaction").filter(**key).first()
    )
    if existing is not None:
        if existing.created_at >= timezone.now() - MESSAGE_KEY_TTL:
            return existing, False
        existing.delete()
    try:
        with transaction.atomic():
            return TerminalApiMessage.objects.create(
                **key, category=category, desktop=desktop
            ), True
    except IntegrityError:
        return TerminalApiMessage.objects.select_related("group", "transaction").get(**key), False


def terminal_api_payment(
    *,
    desktop: Device,
    sale_id: str,
    service_id: str,
    poi_id: str,
    category: str,
    request: dict[str, Any],
    outbox: Outbox,
    desktop_connection_id: str = "",
) -> tuple[TerminalApiMessage, bool]:
    """Start the payment (``category`` Payment) or refund (Reversal) a Terminal API message
    asks for, once per (SaleID, ServiceID, POIID) in 48 h: (its message, whether it is new).

    ``request`` is a ``paymentRequest`` / ``refundRequest`` as payments.services reads it. A
    repeat gets the first message, whatever it asked. A request the services refuse as bad
    (BadRequest) is not kept (it changes nothing); other refusals (a busy or unreachable
    terminal, an unknown original payment) are kept on the message as its ``failure``.
    """
    with transaction.atomic():
        message, created = _message_claim(
            desktop=desktop,
            sale_id=sale_id,
            service_id=service_id,
            poi_id=poi_id,
            category=category,
        )
        if not created:
            return message, False
        try:
            with transaction.atomic():
                if category == PAYMENT_CATEGORY:
                    outcome = payments.payment_start(
                        desktop=desktop,
                        desktop_connection_id=desktop_connection_id,
                        terminal_id=poi_id,
                        payment_request=request,
                        outbox=outbox,
                        device_id_only=True,
                        terminal_api=True,
                    )
                else:
                    outcome = payments.refund_start(
                        group_id=desktop.group_id,
                        desktop=desktop,
                        desktop_connection_id=desktop_connection_id,
                        terminal_id=poi_id,
                        refund_request=request,
                        outbox=outbox,
                        device_id_only=True,
                        terminal_api=True,
                    )
        except BadRequest:
            raise  # the message is not kept either
        except ProtocolError as exc:
            message.failure = exc.to_frame()
            message.save(update_fields=["failure"])
            logger.info(
                "terminal api %s %s/%s refused: %s store=%s",
                category,
                sale_id,
                service_id,
                exc.message,
                desktop.group_id,
            )
            return message, True
        assert outcome.txn is not None
        message.transaction = outcome.txn
        message.save(update_fields=["transaction"])
    return message, True


def sweep_terminal_api_messages(*, limit: int = 500) -> int:
    """Forget the Terminal API messages older than 48 h (their keys may be used again; their
    transactions stay). One indexed read when there are none; safe in every process at once."""
    cutoff = timezone.now() - MESSAGE_KEY_TTL
    old = list(
        TerminalApiMessage.objects.filter(created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not old:
        return 0
    deleted, _ = TerminalApiMessage.objects.filter(pk__in=old).delete()
    logger.info("forgot %d Terminal API messages older than 48 h", deleted)
    return deleted


def terminal_api_message(
    *, group_id: int, sale_id: str, service_id: str, poi_id: str
) -> TerminalApiMessage | None:
    """The store's message of this key seen in the last 48 h, with its transaction."""
    return (
        TerminalApiMessage.objects.select_related("group", "transaction", "transaction__original")
        .filter(
            group_id=group_id,
            sale_id=sale_id,
            service_id=service_id,
            poi_id=poi_id,
            created_at__gte=timezone.now() - MESSAGE_KEY_TTL,
        )
        .first()
    )


def terminal_api_abort(*, message: TerminalApiMessage, outbox: Outbox) -> bool:
    """An AbortRequest names this message: cancel its payment if still in flight (the
    terminal decides; its CANCELLED then reads as Aborted). Whether a cancel was asked."""
    txn = message.transaction
    if txn is None or txn.is_final:
        return False
    TerminalApiMessage.objects.filter(pk=message.pk).update(aborted=True)
    message.aborted = True
    payments.payment_cancel(
        group_id=message.group_id, transaction_id=txn.transaction_id, outbox=outbox
    )
    return True


def terminal_api_message_reload(*, pk: int) -> TerminalApiMessage:
    """A message read again, with its transaction as it is now."""
    return TerminalApiMessage.objects.select_related(
        "group", "transaction", "transaction__original"
    ).get(pk=pk)


def terminal_api_transaction(*, transaction_pk: int) -> Transaction:
    return Transaction.objects.select_related("original").get(pk=transaction_pk)


def terminal_api_messages_of(
    *, desktop: Device, group_id: int, transaction_id: str
) -> list[TerminalApiMessage]:
    """The desktop's messages (last 48 h) that started this transaction, newest first."""
    return list(
        TerminalApiMessage.objects.select_related("group", "transaction", "transaction__original")
        .filter(
            desktop=desktop,
            group_id=group_id,
            transaction__transaction_id=transaction_id,
            created_at__gte=timezone.now() - MESSAGE_KEY_TTL,
        )
        .order_by("-created_at", "-pk")
    )
