"""REST endpoints for stores (groups), terminals and devices: read-only, scoped to the user."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, viewsets

from payments.exports import money
from payments.selectors import terminals_for_user
from posgateway.rest.base import ApiView, BooleanFilter, TimestampField, store_filter
from posgateway.rest.readonly import ScopedViewSet, read_only_schema
from terminals.models import Device, DeviceStatus, DeviceType, Group
from terminals.selectors import devices_for_user, groups_for_user

# --- Serializers (camelCase fields; a device's key hash is never shown) -----------------------


class GroupSerializer(serializers.ModelSerializer):
    timezone = serializers.CharField(help_text="IANA time zone of the store's business day")
    createdAt = TimestampField(source="created_at")

    class Meta:
        model = Group
        fields = ["slug", "name", "timezone", "createdAt"]
        read_only_fields = fields


class _ConnectionFields(serializers.Serializer):
    """Live status and the device's latest connection (also shown once it has closed)."""

    status = serializers.ChoiceField(choices=DeviceStatus.choices)
    statusChangedAt = TimestampField(source="status_changed_at", allow_null=True)
    connectionId = serializers.CharField(
        source="current_connection.connection_id", allow_null=True, default=None
    )
    connectedAt = TimestampField(
        source="current_connection.connected_at", allow_null=True, default=None
    )
    lastActivity = TimestampField(
        source="current_connection.last_activity", allow_null=True, default=None
    )


class DeviceSerializer(_ConnectionFields, serializers.ModelSerializer):
    deviceId = serializers.CharField(source="device_id", allow_null=True)
    type = serializers.ChoiceField(source="device_type", choices=DeviceType.choices)
    store = serializers.CharField(source="group.slug")
    isActive = serializers.BooleanField(source="is_active")
    keyPrefix = serializers.CharField(
        source="key_prefix", help_text="First characters of the API key, to tell keys apart"
    )
    createdAt = TimestampField(source="created_at")

    class Meta:
        model = Device
        fields = [
            "id",
            "deviceId",
            "type",
            "store",
            "label",
            "isActive",
            "keyPrefix",
            "status",
            "statusChangedAt",
            "connectionId",
            "connectedAt",
            "lastActivity",
            "metadata",
            "createdAt",
        ]
        read_only_fields = fields


class PaymentInFlightSerializer(serializers.Serializer):
    transactionId = serializers.CharField(source="transaction_id")
    status = serializers.CharField()
    amount = serializers.SerializerMethodField()
    currency = serializers.CharField()
    createdAt = TimestampField(source="created_at")

    def get_amount(self, txn: Any) -> str:
        return money(txn.amount, txn.currency)


class TerminalSerializer(_ConnectionFields, serializers.ModelSerializer):
    deviceId = serializers.CharField(source="device_id", allow_null=True)
    store = serializers.CharField(source="group.slug")
    paymentInFlight = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = [
            "id",
            "deviceId",
            "store",
            "label",
            "status",
            "statusChangedAt",
            "connectionId",
            "connectedAt",
            "lastActivity",
            "metadata",
            "paymentInFlight",
        ]
        read_only_fields = fields

    @extend_schema_field(PaymentInFlightSerializer(allow_null=True))
    def get_paymentInFlight(self, device: Device) -> dict[str, Any] | None:
        payments = getattr(device, "payments_in_flight", None) or []
        return PaymentInFlightSerializer(payments[0]).data if payments else None


# --- Filters ---------------------------------------------------------------------------------


class TerminalFilter(django_filters.FilterSet):
    store = store_filter(label="Only this store (its slug; one of yours)")
    status = django_filters.ChoiceFilter(choices=DeviceStatus.choices, label="Live status")

    class Meta:
        model = Device
        fields: list[str] = []


class DeviceFilter(TerminalFilter):
    type = django_filters.ChoiceFilter(
        field_name="device_type", choices=DeviceType.choices, label="desktop or terminal"
    )
    is_active = BooleanFilter(label="true: devices whose key works; false: deactivated ones")

    class Meta:
        model = Device
        fields: list[str] = []


# --- Views -----------------------------------------------------------------------------------


@read_only_schema(
    GroupSerializer,
    list_summary="Your stores",
    list_description="Every store you are a member of (every store for a superuser), by slug.",
    retrieve_summary="One store",
)
class GroupViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    serializer_class = GroupSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    filter_backends: list[type] = []

    def get_queryset(self):
        return groups_for_user(self.request.user).order_by("slug")


@read_only_schema(
    TerminalSerializer,
    list_summary="Terminals with live status",
    list_description=(
        "The active terminals of your stores, offline ones included: live status, the "
        "latest connection (`connectionId`, `connectedAt`, `lastActivity`) and the payment "
        "in flight on each, if any."
    ),
    retrieve_summary="One terminal",
)
class TerminalViewSet(ScopedViewSet):
    serializer_class = TerminalSerializer
    filterset_class = TerminalFilter
    rows_for = staticmethod(terminals_for_user)


@read_only_schema(
    DeviceSerializer,
    list_summary="Devices (desktops and terminals)",
    list_description=(
        "Every registered device of your stores, deactivated ones included. The API key "
        "itself is never shown: `keyPrefix` tells keys apart."
    ),
    retrieve_summary="One device",
)
class DeviceViewSet(ScopedViewSet):
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilter
    rows_for = staticmethod(devices_for_user)
