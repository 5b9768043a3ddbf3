"""REST endpoints for Terminal API sessions and display / input requests: read-only, scoped.

Both are looked up by their database ``id``: a ``sessionId`` is the POS's own name, unique only
among a store's active sessions (an ended one's may be used again), and a ``requestId`` is
unique only per store. The public ids are filters instead (``session_id``, ``request_id``).

What a terminal was asked to show or ask, and what it answered, is not part of the API: an
input's answer can be personal data (for email, phone and signature only the outcome is
stored at all), so the API gives the outcome (``status``, ``errorMessage``) and never a value.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from posgateway.rest.base import TimestampField
from posgateway.rest.readonly import ScopedViewSet, read_only_schema
from posgateway.rest.session_filters import SessionFilter, TerminalRequestFilter
from sessions import selectors
from sessions.models import (
    InputType,
    OperationType,
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalRequest,
    TerminalSession,
)

# --- Serializers (camelCase fields; never the content of a display or an input) ---------------


class SessionRequestSerializer(serializers.Serializer):
    """A display or input request as listed under its session."""

    id = serializers.IntegerField(help_text="Its id in /api/terminal-requests/")
    requestId = serializers.CharField(source="request_id")
    type = serializers.ChoiceField(source="kind", choices=RequestKind.choices)
    inputType = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=RequestStatus.choices)
    errorMessage = serializers.CharField(
        source="error_message", help_text="Why it failed, as the terminal or the gateway said"
    )
    createdAt = TimestampField(source="created_at")
    completedAt = TimestampField(source="completed_at", allow_null=True)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=InputType.choices,
            allow_null=True,
            help_text="The kind of input asked for; null for a display",
        )
    )
    def get_inputType(self, req: TerminalRequest) -> str | None:
        return req.input_type or None


class TerminalRequestSerializer(SessionRequestSerializer):
    store = serializers.CharField(source="group.slug")
    terminal = serializers.CharField(
        source="terminal.device_id", allow_null=True, help_text="The terminal's deviceId"
    )
    desktop = serializers.CharField(
        source="desktop.device_id", allow_null=True, help_text="The desktop's (POS) deviceId"
    )
    session = serializers.IntegerField(
        source="session_id",
        allow_null=True,
        help_text="The id of the session it was sent during (/api/sessions/), or null",
    )
    sessionId = serializers.CharField(
        source="session.session_id",
        allow_null=True,
        default=None,
        help_text="That session's Session.Id, or null",
    )
    deadlineAt = TimestampField(
        source="deadline_at", help_text="Without an answer by then it times out"
    )


class SessionOperationSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=OperationType.choices, help_text="The requests that show the waiting screen"
    )
    variant = serializers.CharField(help_text="`WaitingScreen`")
    waitingScreenTimeoutMs = serializers.IntegerField(
        help_text="How long the terminal shows the waiting screen after such a request"
    )


class SessionSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The session's id here (the detail's key)")
    sessionId = serializers.CharField(
        source="session_id", help_text="Session.Id as the POS sent it"
    )
    store = serializers.CharField(source="group.slug")
    terminal = serializers.CharField(
        source="terminal.device_id", allow_null=True, help_text="The terminal's deviceId (POIID)"
    )
    desktop = serializers.CharField(
        source="desktop.device_id",
        allow_null=True,
        help_text="The deviceId of the desktop whose key began the session",
    )
    status = serializers.ChoiceField(source="state", choices=SessionState.choices)
    saleId = serializers.CharField(source="sale_id", help_text="SaleID of the Begin")
    serviceId = serializers.CharField(source="service_id", help_text="ServiceID of the Begin")
    operations = SessionOperationSerializer(
        many=True, help_text="The operations that show a waiting screen in this session"
    )
    begunAt = TimestampField(source="begun_at")
    lastRequestAt = TimestampField(
        source="last_request_at",
        help_text="The latest request of the session (it expires this long after, unused)",
    )
    endedAt = TimestampField(source="ended_at", allow_null=True)
    endReason = serializers.CharField(
        source="end_reason", help_text="`ended` (an End request) or `expired`; empty while active"
    )


class SessionDetailSerializer(SessionSerializer):
    lastResponse = serializers.DictField(
        source="last_response",
        allow_null=True,
        help_text="The SaleToPOIResponse of the session's last accepted admin request",
    )
    requests = serializers.SerializerMethodField()

    @extend_schema_field(SessionRequestSerializer(many=True))
    def get_requests(self, session: TerminalSession) -> list[dict[str, Any]]:
        """The display and input requests sent during the session, oldest first."""
        return SessionRequestSerializer(session.request_list, many=True).data


# --- Views -----------------------------------------------------------------------------------


@read_only_schema(
    SessionSerializer,
    list_summary="Terminal API sessions",
    list_description=(
        "The Terminal API admin sessions of your stores (a waiting screen between "
        "requests), newest first: active, ended and expired ones."
    ),
    retrieve_summary="One session with its requests",
    retrieve_description=(
        "Looked up by its `id` (a Session.Id is the POS's name, unique only among a "
        "store's active sessions; find it with `?session_id=`). With the last kept "
        "SaleToPOIResponse and the display and input requests sent during the session."
    ),
    detail_serializer=SessionDetailSerializer,
)
class SessionViewSet(ScopedViewSet):
    filterset_class = SessionFilter

    def get_queryset(self):
        if self.action == "retrieve":
            return selectors.session_detail_list(user=self.request.user)
        return selectors.session_list(user=self.request.user)

    def get_serializer_class(self):
        if self.action == "retrieve":
            return SessionDetailSerializer
        return SessionSerializer


@read_only_schema(
    TerminalRequestSerializer,
    list_summary="Display and input requests",
    list_description=(
        "The display and input requests sent to the terminals of your stores, newest "
        "first, in flight ones included: their type, outcome and times. What was shown or "
        "asked, and any answer, is not part of the API (an answer can be personal data)."
    ),
    retrieve_summary="One display or input request",
    retrieve_description="Looked up by its `id` (a requestId is unique per store only).",
)
class TerminalRequestViewSet(ScopedViewSet):
    serializer_class = TerminalRequestSerializer
    filterset_class = TerminalRequestFilter
    rows_for = staticmethod(selectors.terminal_request_list)
