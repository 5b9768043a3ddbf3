"""Query parameters of ``/api/sessions/`` and ``/api/terminal-requests/``.

The same vocabulary as the payments list (contract section 7): ``store``, ``terminal`` and
``desktop`` (deviceIds), ``status``, ``created_after`` / ``created_before`` (ISO 8601, UTC
unless an offset is given), ``ordering``. A value that cannot be read is refused with 400
naming the parameter, never ignored and never a 500.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field

from posgateway.rest.base import store_filter
from posgateway.rest.filters import created_range
from sessions.models import (
    InputType,
    RequestKind,
    RequestStatus,
    SessionState,
    TerminalRequest,
    TerminalSession,
)

# ?ordering= values; pk breaks ties so that pages never overlap.
SESSION_ORDERINGS: dict[str, tuple[str, ...]] = {
    "begun_at": ("begun_at", "pk"),
    "-begun_at": ("-begun_at", "-pk"),
    "last_request_at": ("last_request_at", "pk"),
    "-last_request_at": ("-last_request_at", "-pk"),
}
REQUEST_ORDERINGS: dict[str, tuple[str, ...]] = {
    "created_at": ("created_at", "pk"),
    "-created_at": ("-created_at", "-pk"),
}

# Ids are database keys: a number past a 64-bit key is a typo, refused rather than looked up.
MAX_ID = 2**63 - 1


class IdField(forms.IntegerField):
    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class IdFilter(django_filters.Filter):
    field_class = IdField


def _ordering(orderings: dict[str, tuple[str, ...]], default: str) -> django_filters.Filter:
    """``?ordering=``: one of the keys of ``orderings``, sorting by the fields it maps to."""

    def order_by(queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.order_by(*orderings[value])

    return django_filters.ChoiceFilter(
        choices=[(value, value) for value in orderings],
        method=order_by,
        label=f"Sort order (default `{default}`, newest first)",
    )


class _DeviceFilters(django_filters.FilterSet):
    store = store_filter(label="Only this store (its slug; one of yours)")
    group = store_filter(label="The same as `store`")
    terminal = django_filters.CharFilter(
        field_name="terminal__device_id", label="The terminal's deviceId"
    )
    desktop = django_filters.CharFilter(
        field_name="desktop__device_id", label="The desktop's (POS) deviceId"
    )


class SessionFilter(_DeviceFilters):
    status = django_filters.MultipleChoiceFilter(
        field_name="state",
        choices=SessionState.choices,
        label="Session status; repeat for several: `status=ENDED&status=EXPIRED`",
    )
    session_id = django_filters.CharFilter(
        field_name="session_id",
        label="The session's Session.Id as the POS sent it (reused once a session has ended)",
    )
    created_after, created_before = created_range("begun_at", "Begun")
    ordering = _ordering(SESSION_ORDERINGS, "-begun_at")

    class Meta:
        model = TerminalSession
        fields: list[str] = []


class TerminalRequestFilter(_DeviceFilters):
    type = django_filters.ChoiceFilter(
        field_name="kind", choices=RequestKind.choices, label="display or input"
    )
    input_type = django_filters.ChoiceFilter(
        choices=InputType.choices, label="The kind of input asked for (input requests only)"
    )
    status = django_filters.MultipleChoiceFilter(
        choices=RequestStatus.choices,
        label="Outcome as on the wire; repeat for several: `status=FAILED&status=TIMEOUT`",
    )
    session = extend_schema_field(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_ID,
            "description": "Only requests sent during this session (its `id` in /api/sessions/)",
        }
    )(IdFilter(field_name="session_id"))
    request_id = django_filters.CharFilter(
        field_name="request_id", label="The requestId (unique per store)"
    )
    created_after, created_before = created_range("created_at", "Created")
    ordering = _ordering(REQUEST_ORDERINGS, "-created_at")

    class Meta:
        model = TerminalRequest
        fields: list[str] = []
