"""REST endpoints for webhooks (contract section 11), and the body every event is sent with.

``/api/webhook-endpoints/`` (list, create; get, patch, delete; ``rotate-secret``, ``test``) and
``/api/webhook-events/`` (list with ``type``, ``created_after``, ``created_before``; one event
with its deliveries; ``redeliver``). Reads for every member of the store, changes for its
managers. The signing secret is shown once: in the create and rotate answers.

:func:`event_body` is what a delivery sends: ``{"id","type","createdAt","group","data"}`` with
``data`` the object's REST representation (a transaction as in ``/api/transactions/``, a
terminal as in ``terminals[]``, a session as in ``/api/sessions/``).
"""

from __future__ import annotations

import json
from typing import Any

import django_filters
from django.db.models import Prefetch
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from payments.models import Transaction
from posgateway.core.protocol import BadRequest, iso
from posgateway.gateway.frames import terminal as terminal_frame
from posgateway.rest.base import (
    ApiView,
    ErrorSerializer,
    TimestampField,
    error_responses,
    require_manager,
)
from posgateway.rest.filters import InstantFilter
from posgateway.rest.payments import TransactionSerializer
from posgateway.rest.sessions import SessionSerializer
from sessions.models import SessionState, TerminalSession
from terminals.events import TerminalStatus
from terminals.models import Device
from terminals.selectors import groups_for_user
from webhooks import services
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# --- The body of an event ----------------------------------------------------------------------

_TRANSACTION_STATUS = {
    "succeeded": "SUCCESS",
    "declined": "DECLINED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
    "timed_out": "TIMEOUT",
}


def event_data(event: WebhookEvent) -> dict[str, Any] | None:
    """The REST representation of what the event is about, with the status the event reports
    (the object may have moved on since: a late result, a reconnect); None once deleted."""
    kind, _, what = event.type.partition(".")
    if event.type == EventType.WEBHOOK_TEST:
        return {
            "endpoint": event.subject_pk,
            "message": "A test event: your endpoint received and can verify this webhook.",
        }
    if kind in ("payment", "refund"):
        txn = (
            Transaction.objects.select_related(
                "group", "terminal", "desktop", "original", "initiated_by"
            )
            .filter(pk=event.subject_pk)
            .first()
        )
        if txn is None:
            return None
        data = dict(TransactionSerializer(txn).data)
        if what in _TRANSACTION_STATUS:
            data["status"] = _TRANSACTION_STATUS[what]
        return data
    if kind == "terminal":
        device = (
            Device.objects.select_related("current_connection").filter(pk=event.subject_pk).first()
        )
        if device is None:
            return None
        return {**terminal_frame(TerminalStatus.of(device)), "status": what}
    if kind == "session":
        session = (
            TerminalSession.objects.select_related("group", "terminal", "desktop")
            .filter(pk=event.subject_pk)
            .first()
        )
        if session is None:
            return None
        data = dict(SessionSerializer(session).data)
        if what == "began":
            data.update(status=SessionState.ACTIVE.value, endedAt=None, endReason="")
        return data
    return None


def event_body(event: WebhookEvent) -> str:
    """The JSON body of an event, as signed and sent (compact, UTF-8)."""
    return json.dumps(
        {
            "id": event.event_id,
            "type": event.type,
            "createdAt": iso(event.created_at),
            "group": event.group.slug,
            "data": event_data(event),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


# --- Serializers of events ----------------------------------------------------------------------


class WebhookEventSerializer(serializers.Serializer):
    id = serializers.CharField(source="event_id", help_text="evt_…: the webhook-id header")
    type = serializers.ChoiceField(choices=EventType.choices)
    group = serializers.CharField(source="group.slug")
    createdAt = TimestampField(source="created_at")


class WebhookDeliveryAttemptSerializer(serializers.Serializer):
    endpoint = serializers.IntegerField(help_text="The endpoint's id")
    attempt = serializers.IntegerField(help_text="1 for the first attempt")
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    httpStatus = serializers.IntegerField(allow_null=True)
    durationMs = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="Why it failed; empty on success")
    attemptedAt = serializers.CharField(allow_null=True)
    nextAttemptAt = serializers.CharField(allow_null=True)


class WebhookEventDetailSerializer(WebhookEventSerializer):
    data = serializers.SerializerMethodField()
    deliveries = serializers.SerializerMethodField()

    def get_data(self, event: WebhookEvent) -> dict[str, Any] | None:
        """As sent; for an event no endpoint got, the object as it is now."""
        if event.payload:
            return json.loads(event.payload)["data"]
        return event_data(event)

    @extend_schema_field(WebhookDeliveryAttemptSerializer(many=True))
    def get_deliveries(self, event: WebhookEvent) -> list[dict[str, Any]]:
        return delivery_rows(event)


# --- Endpoints ---------------------------------------------------------------------------------


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    group = serializers.CharField(source="group.slug", help_text="The store's slug")
    url = serializers.CharField(help_text="https:// URL the events are POSTed to")
    events = serializers.ListField(
        child=serializers.CharField(), help_text='Event types, or ["*"] for every one'
    )
    description = serializers.CharField()
    active = serializers.BooleanField()
    createdAt = TimestampField(source="created_at")
    disabledReason = serializers.CharField(
        source="disabled_reason", help_text="Why it was deactivated; empty while active"
    )


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="The signing secret (whsec_…): shown in this answer only, keep it"
    )


class WebhookEndpointCreateSerializer(serializers.Serializer):
    group = serializers.CharField(help_text="The store's slug (you must manage it)")
    url = serializers.CharField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=["*", *services.SUBSCRIBABLE])
    )
    description = serializers.CharField(required=False)


class WebhookEndpointPatchSerializer(serializers.Serializer):
    url = serializers.CharField(required=False)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=["*", *services.SUBSCRIBABLE]), required=False
    )
    description = serializers.CharField(required=False)
    active = serializers.BooleanField(required=False)


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict[str, Any]:
    return {**WebhookEndpointSerializer(endpoint).data, "secret": secret}


def _body(request: Any) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise BadRequest("The body must be a JSON object")
    return request.data


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers of a webhook operation, in the one error shape."""
    texts = {
        400: "A field refused (`message` names it)",
        403: "Not a manager of the store",
        404: "Not found, or another store's (the same answer either way)",
        409: "The endpoint is not active",
    }
    answers = error_responses()
    for code in codes:
        answers[code] = OpenApiResponse(ErrorSerializer, description=texts[code])
    return dict(sorted(answers.items()))


@extend_schema_view(
    list=extend_schema(
        summary="Webhook endpoints of your stores",
        responses={200: WebhookEndpointSerializer(many=True), **error_responses(400, paged=True)},
    ),
    retrieve=extend_schema(
        summary="One webhook endpoint",
        responses={200: WebhookEndpointSerializer, **_errors(404)},
    ),
    create=extend_schema(
        summary="Subscribe a URL to a store's events",
        description="Needs a manager of the store. The answer carries the signing `secret`, "
        "shown this once. The URL must be https:// (unless WEBHOOK_ALLOW_HTTP) and resolve "
        "to a public address (unless its host is in WEBHOOK_ALLOWED_HOSTS).",
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointWithSecretSerializer, **_errors(400, 403)},
    ),
    partial_update=extend_schema(
        summary="Change a webhook endpoint",
        description="`url`, `events`, `description`, `active` (reactivating forgets its "
        "`disabledReason`). Needs a manager of the store.",
        request=WebhookEndpointPatchSerializer,
        responses={200: WebhookEndpointSerializer, **_errors(400, 403, 404)},
    ),
    destroy=extend_schema(
        summary="Delete a webhook endpoint", responses={204: None, **_errors(403, 404)}
    ),
)
class WebhookEndpointViewSet(
    ApiView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = WebhookEndpointSerializer
    parser_classes = [JSONParser]
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filter_backends: list[type] = []

    def get_queryset(self):
        return (
            WebhookEndpoint.objects.select_related("group")
            .filter(group__in=groups_for_user(self.request.user))
            .order_by("pk")
        )

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        data = _body(request)
        slug = data.get("group")
        if not isinstance(slug, str) or not slug:
            raise BadRequest("group is required: the store's slug")
        group = groups_for_user(request.user).filter(slug=slug).first()
        if group is None:
            raise BadRequest("group: Unknown store, or not one of yours.")
        require_manager(request, group.pk, "manage its webhooks")
        unknown = sorted(set(data) - {"group", "url", "events", "description"})
        if unknown:
            raise BadRequest(f"{unknown[0]} is not a known field")
        endpoint, secret = services.endpoint_create(
            group_id=group.pk,
            url=data.get("url"),
            events=data.get("events"),
            description=data.get("description", ""),
            user=request.user,
        )
        endpoint.group = group
        return Response(_with_secret(endpoint, secret), status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args: Any, **kwargs: Any) -> Response:
        endpoint = self.get_object()
        require_manager(request, endpoint.group_id, "manage its webhooks")
        services.endpoint_update(endpoint=endpoint, changes=_body(request))
        return Response(WebhookEndpointSerializer(endpoint).data)

    def destroy(self, request, *args: Any, **kwargs: Any) -> Response:
        endpoint = self.get_object()
        require_manager(request, endpoint.group_id, "manage its webhooks")
        services.endpoint_delete(endpoint=endpoint)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Rotate the signing secret",
        description="A new secret, shown this once; the old one keeps signing beside it for "
        "24 h (both signatures are sent), so receivers can switch without losing a message.",
        request=None,
        responses={200: WebhookEndpointWithSecretSerializer, **_errors(403, 404)},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk: str | None = None) -> Response:
        endpoint = self.get_object()
        require_manager(request, endpoint.group_id, "manage its webhooks")
        secret = services.endpoint_rotate_secret(endpoint=endpoint)
        return Response(_with_secret(endpoint, secret))

    @extend_schema(
        summary="Send a webhook.test event",
        description="A `webhook.test` event to this endpoint only; answers 202 with the event "
        "(follow its deliveries at /api/webhook-events/<id>/). 409 for an inactive endpoint.",
        request=None,
        responses={202: WebhookEventSerializer, **_errors(403, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk: str | None = None) -> Response:
        endpoint = self.get_object()
        require_manager(request, endpoint.group_id, "manage its webhooks")
        event = services.endpoint_test(endpoint=endpoint)
        event.group = endpoint.group
        return Response(WebhookEventSerializer(event).data, status=status.HTTP_202_ACCEPTED)


# --- Events ------------------------------------------------------------------------------------


def delivery_rows(event: WebhookEvent) -> list[dict[str, Any]]:
    """Per endpoint and attempt (contract section 11): each attempt made, with what the
    delivery became (``retrying`` with its ``nextAttemptAt``, ``succeeded``, ``failed``), and a
    ``pending`` row for a delivery whose first attempt (or manual redelivery) is still due."""
    rows: list[dict[str, Any]] = []
    for delivery in event.deliveries.all():
        attempts: list[WebhookAttempt] = list(delivery.attempt_records.all())
        for record in attempts:
            rows.append(
                {
                    "endpoint": delivery.endpoint_id,
                    "attempt": record.number,
                    "status": record.status,
                    "httpStatus": record.http_status,
                    "durationMs": record.duration_ms,
                    "error": record.error,
                    "attemptedAt": iso(record.attempted_at),
                    "nextAttemptAt": iso(record.next_attempt_at),
                }
            )
        if delivery.status == DeliveryStatus.PENDING and not delivery.lease_until:
            rows.append(
                {
                    "endpoint": delivery.endpoint_id,
                    "attempt": delivery.attempts + 1,
                    "status": delivery.status,
                    "httpStatus": None,
                    "durationMs": None,
                    "error": "",
                    "attemptedAt": None,
                    "nextAttemptAt": iso(delivery.next_attempt_at),
                }
            )
    return rows


class WebhookEventFilter(django_filters.FilterSet):
    type = django_filters.ChoiceFilter(choices=EventType.choices)
    created_after = InstantFilter(field_name="created_at", lookup_expr="gte")
    created_before = InstantFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WebhookEvent
        fields: list[str] = []


@extend_schema_view(
    list=extend_schema(
        summary="Webhook events of your stores",
        description="Newest first; every event of the stores, whether or not an endpoint got "
        "it. Filters: `type`, `created_after` (inclusive), `created_before` (exclusive).",
        responses={200: WebhookEventSerializer(many=True), **error_responses(400, paged=True)},
    ),
    retrieve=extend_schema(
        summary="One webhook event, with its deliveries",
        responses={200: WebhookEventDetailSerializer, **_errors(404)},
    ),
)
class WebhookEventViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = WebhookEventSerializer
    filterset_class = WebhookEventFilter
    lookup_field = "event_id"
    lookup_value_regex = "evt_[0-9a-f]+"

    def get_queryset(self):
        rows = WebhookEvent.objects.select_related("group").filter(
            group__in=groups_for_user(self.request.user)
        )
        if self.action == "list":
            return rows.order_by("-created_at", "-pk")
        return rows.prefetch_related(
            Prefetch(
                "deliveries",
                WebhookDelivery.objects.order_by("pk").prefetch_related("attempt_records"),
            )
        )

    def get_serializer_class(self):
        if self.action in ("retrieve", "redeliver"):
            return WebhookEventDetailSerializer
        return WebhookEventSerializer

    @extend_schema(
        summary="Send an event again",
        description="Every active endpoint that got it (or subscribes to it now) gets it again, "
        "with a fresh retry schedule; answers 202. Needs a manager of the store.",
        request=None,
        responses={202: WebhookEventDetailSerializer, **_errors(403, 404)},
    )
    @action(detail=True, methods=["post"])
    def redeliver(self, request, event_id: str | None = None) -> Response:
        event = self.get_object()
        require_manager(request, event.group_id, "manage its webhooks")
        services.event_redeliver(event=event)
        event = self.get_queryset().get(pk=event.pk)
        return Response(WebhookEventDetailSerializer(event).data, status=status.HTTP_202_ACCEPTED)
