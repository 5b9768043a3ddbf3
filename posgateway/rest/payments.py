"""REST endpoints for payments: the list, one payment's timeline, the CSV export, daily totals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.urls import path
from django.utils.dateparse import parse_datetime
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors
from payments.exports import (
    DAILY_COLUMNS,
    TRANSACTION_COLUMNS,
    business_date,
    csv_chunks,
    customer_id,
    daily_row,
    money,
    order_id,
    transaction_row,
)
from payments.models import EventKind, EventSource, Transaction, TransactionStatus
from posgateway.rest.base import ApiView, CursorPagination, TimestampField, error_responses
from posgateway.rest.csv import csv_response
from posgateway.rest.filters import (
    DEFAULT_EXPORT_ORDERING,
    EARLIEST,
    LATEST,
    ORDERINGS,
    TransactionFilter,
)
from terminals.models import Group
from terminals.selectors import groups_for_user

# --- Serializers -------------------------------------------------------------------------------


class TransactionEventSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=EventKind.choices)
    source = serializers.ChoiceField(choices=EventSource.choices)
    oldStatus = serializers.SerializerMethodField()
    newStatus = serializers.SerializerMethodField()
    detail = serializers.DictField(help_text="What the step carried (e.g. a connectionId)")
    createdAt = TimestampField(source="created_at")

    @extend_schema_field(
        serializers.ChoiceField(choices=TransactionStatus.choices, allow_null=True)
    )
    def get_oldStatus(self, event: Any) -> str | None:
        return event.old_status or None

    @extend_schema_field(
        serializers.ChoiceField(choices=TransactionStatus.choices, allow_null=True)
    )
    def get_newStatus(self, event: Any) -> str | None:
        return event.new_status or None


class TransactionSerializer(serializers.Serializer):
    transactionId = serializers.CharField(source="transaction_id")
    store = serializers.CharField(source="group.slug")
    terminal = serializers.CharField(
        source="terminal.device_id", allow_null=True, help_text="The terminal's deviceId"
    )
    terminalRef = serializers.CharField(
        source="terminal_ref", help_text="terminalId exactly as the desktop sent it"
    )
    desktop = serializers.CharField(
        source="desktop.device_id", allow_null=True, help_text="The desktop's deviceId"
    )
    status = serializers.ChoiceField(choices=TransactionStatus.choices)
    amount = serializers.SerializerMethodField()
    currency = serializers.CharField()
    paymentMethod = serializers.CharField(source="payment_method")
    authorizationCode = serializers.CharField(source="authorization_code")
    errorMessage = serializers.CharField(source="error_message")
    late = serializers.BooleanField(
        help_text="The terminal's result came after the gateway gave up"
    )
    orderId = serializers.SerializerMethodField()
    customerId = serializers.SerializerMethodField()
    createdAt = TimestampField(source="created_at")
    updatedAt = TimestampField(source="updated_at")
    completedAt = TimestampField(source="completed_at", allow_null=True)
    businessDate = serializers.SerializerMethodField()

    def get_amount(self, txn: Transaction) -> str:
        """A decimal string with the currency's minor units, e.g. "12.50"."""
        return money(txn.amount, txn.currency)

    def get_orderId(self, txn: Transaction) -> str | None:
        return order_id(txn.metadata)

    def get_customerId(self, txn: Transaction) -> str | None:
        return customer_id(txn.customer_info)

    @extend_schema_field(OpenApiTypes.DATE)
    def get_businessDate(self, txn: Transaction) -> str:
        return business_date(txn.created_at, txn.group.zone).isoformat()


class TransactionDetailSerializer(TransactionSerializer):
    products = serializers.ListField(child=serializers.DictField())
    customerInfo = serializers.DictField(source="customer_info")
    metadata = serializers.DictField()
    paymentResponse = serializers.DictField(
        source="payment_response",
        allow_null=True,
        help_text="The terminal's answer as stored (card numbers masked)",
    )
    forwardedAt = TimestampField(source="forwarded_at", allow_null=True)
    deadlineAt = TimestampField(source="deadline_at", allow_null=True)
    events = TransactionEventSerializer(many=True, help_text="Every step, oldest first")


class DailyRowSerializer(serializers.Serializer):
    date = serializers.DateField(help_text="Business date in the store's time zone")
    store = serializers.CharField()
    currency = serializers.CharField()
    count = serializers.IntegerField(help_text="Payments started that day, in any state")
    succeededCount = serializers.IntegerField()
    succeededAmount = serializers.CharField(help_text="Gross of SUCCESS payments, decimal string")
    declinedCount = serializers.IntegerField()
    failedCount = serializers.IntegerField()
    cancelledCount = serializers.IntegerField()
    timeoutCount = serializers.IntegerField()
    lateCount = serializers.IntegerField(help_text="Results that came after the gateway gave up")


class DailyReportSerializer(serializers.Serializer):
    dateFrom = serializers.DateField()
    dateTo = serializers.DateField()
    results = DailyRowSerializer(many=True)


class DailyReportQuery(serializers.Serializer):
    """Query parameters of the daily report."""

    store = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Group.objects.none(),
        required=False,
        help_text="Only this store (its slug; one of yours)",
        error_messages={
            "does_not_exist": "Unknown store, or not one of yours.",
            "invalid": "Unknown store, or not one of yours.",
        },
    )
    date_from = serializers.DateField(
        required=False, help_text="First business date (default: 29 days before date_to)"
    )
    date_to = serializers.DateField(
        required=False, help_text="Last business date, included (default: today)"
    )

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["store"].queryset = groups_for_user(user)

    def validate_date_from(self, value: dt.date) -> dt.date:
        return self._in_range(value)

    def validate_date_to(self, value: dt.date) -> dt.date:
        return self._in_range(value)

    def _in_range(self, value: dt.date) -> dt.date:
        if not EARLIEST <= value <= LATEST:
            raise serializers.ValidationError(f"Enter a date between {EARLIEST} and {LATEST}.")
        return value


# --- Pagination ------------------------------------------------------------------------------


def _decimal(value: str) -> Decimal | None:
    number = Decimal(value)
    return number if number.is_finite() else None


class TransactionPagination(CursorPagination):
    ordering = ORDERINGS["-created_at"]
    orderings = ORDERINGS
    position_parsers = {"created_at": parse_datetime, "amount": _decimal}


# --- Views -----------------------------------------------------------------------------------

EXPORT_DESCRIPTION = (
    "The payments the same filters select, as a CSV download streamed row by row (any number "
    "of rows, flat memory). Columns, in this order: `"
    + ", ".join(TRANSACTION_COLUMNS)
    + "`. Amounts are decimal strings with the currency's minor units, times UTC ISO 8601, "
    "`businessDate` the store's local date, `late` is `true`/`false`. A cell starting with "
    "`=`, `+`, `-`, `@`, tab or CR is prefixed with `'` so spreadsheets do not run it. Oldest "
    "first unless `ordering` says otherwise. File name: "
    "`transactions-<store|all>-<from|start>-<to>.csv`."
)

STORE_PARAMETER = OpenApiParameter(
    "store",
    OpenApiTypes.STR,
    description=(
        "The store's slug: needed only when several of your stores use this transactionId"
    ),
)


class _ErrorsAsJson:
    """A download (an APIView, or a viewset's ``export`` action) answers its errors in JSON
    whatever the client's Accept header says: the CSV itself bypasses the renderers."""

    def perform_content_negotiation(self, request, force=False):
        if getattr(self, "action", None) in (None, "export"):
            renderer = JSONRenderer()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)


@extend_schema_view(
    list=extend_schema(
        summary="Payments",
        description=(
            "The payments of your stores, newest first, in cursor pages (`next`/`previous` "
            "links stay valid while new payments arrive). Amounts are decimal strings, times UTC."
        ),
        responses={200: TransactionSerializer(many=True), **error_responses(400)},
    ),
    retrieve=extend_schema(
        summary="One payment with its event timeline",
        description=(
            "Looked up by its transactionId (unique per store). When several of your stores "
            "use the same transactionId, name one with `store`; otherwise 400 lists them."
        ),
        parameters=[STORE_PARAMETER],
        responses={200: TransactionDetailSerializer, **error_responses(400, 404)},
    ),
)
class TransactionViewSet(ApiView, _ErrorsAsJson, viewsets.ReadOnlyModelViewSet):
    serializer_class = TransactionSerializer
    filterset_class = TransactionFilter
    pagination_class = TransactionPagination
    lookup_field = "transaction_id"
    # Any printable characters, dots and slashes included (a transactionId is 1-64 of them).
    lookup_value_regex = ".+"

    def get_queryset(self):
        return selectors.transaction_list(user=self.request.user)

    def get_serializer_class(self):
        if self.action == "retrieve":
            return TransactionDetailSerializer
        return TransactionSerializer

    def get_object(self) -> Transaction:
        return selectors.transaction_get(
            user=self.request.user,
            transaction_id=self.kwargs["transaction_id"],
            store=self.request.query_params.get("store") or None,
        )

    @extend_schema(
        summary="Payments as CSV",
        description=EXPORT_DESCRIPTION,
        filters=True,
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The CSV file"),
            **error_responses(400),
        },
    )
    @action(detail=False, url_path="export", pagination_class=None)
    def export(self, request):
        filterset = TransactionFilter(
            request.query_params, queryset=self.get_queryset(), request=request
        )
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        queryset = filterset.qs.order_by(*filterset.ordering_value(DEFAULT_EXPORT_ORDERING))
        first, last = filterset.period()
        filename = "transactions-{}-{}-{}.csv".format(
            filterset.store_slug() or "all",
            first or "start",
            last or dt.datetime.now(dt.UTC).date(),
        )
        rows = (
            transaction_row(row, selectors.store_zone(row.timezone))
            for row in selectors.transactions_for_export(queryset)
        )
        return csv_response(request, csv_chunks(TRANSACTION_COLUMNS, rows), filename)


def _daily_report(request) -> tuple[Group | None, dt.date, dt.date, list[dict[str, Any]]]:
    # An empty parameter (?store=) is the same as none, as for the transaction filters.
    params = {key: value for key, value in request.query_params.items() if value != ""}
    query = DailyReportQuery(data=params, user=request.user)
    query.is_valid(raise_exception=True)
    store = query.validated_data.get("store")
    stores = groups_for_user(request.user)
    if store is not None:
        stores = stores.filter(pk=store.pk)
    date_to = query.validated_data.get("date_to") or selectors.report_today(stores)
    date_from = query.validated_data.get("date_from") or date_to - dt.timedelta(
        days=selectors.DEFAULT_REPORT_DAYS - 1
    )
    if date_from > date_to:
        raise serializers.ValidationError({"date_from": ["Must not be after date_to."]})
    if (date_to - date_from).days + 1 > selectors.MAX_REPORT_DAYS:
        raise serializers.ValidationError(
            {"date_from": [f"The range may span at most {selectors.MAX_REPORT_DAYS} days."]}
        )
    rows = selectors.daily_totals(stores=stores, date_from=date_from, date_to=date_to)
    return store, date_from, date_to, rows


class DailyReportView(ApiView, APIView):
    @extend_schema(
        operation_id="reports_daily",
        tags=["reports"],
        summary="Daily totals",
        description=(
            "For reconciliation: per store, business date (in the store's time zone) and "
            "currency, the number of payments started that day and how they ended, with the "
            "gross of the succeeded ones summed in Decimal by the database. Days without "
            "payments have no row. Default range: the last 30 days up to today; at most "
            f"{selectors.MAX_REPORT_DAYS} days."
        ),
        parameters=[DailyReportQuery],
        responses={200: DailyReportSerializer, **error_responses(400)},
    )
    def get(self, request):
        _, date_from, date_to, rows = _daily_report(request)
        return Response(
            {"dateFrom": date_from.isoformat(), "dateTo": date_to.isoformat(), "results": rows}
        )


class DailyReportExportView(ApiView, _ErrorsAsJson, APIView):
    @extend_schema(
        operation_id="reports_daily_export",
        tags=["reports"],
        summary="Daily totals as CSV",
        description=(
            "The same rows as CSV, columns in this order: `" + ", ".join(DAILY_COLUMNS) + "`. "
            "File name: `daily-<store|all>-<from>-<to>.csv`."
        ),
        parameters=[DailyReportQuery],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The CSV file"),
            **error_responses(400),
        },
    )
    def get(self, request):
        store, date_from, date_to, rows = _daily_report(request)
        filename = f"daily-{store.slug if store else 'all'}-{date_from}-{date_to}.csv"
        chunks = csv_chunks(DAILY_COLUMNS, (daily_row(row) for row in rows))
        return csv_response(request, chunks, filename)


# Mounted under /api/ beside the router's endpoints.
urlpatterns = [
    path("reports/daily/", DailyReportView.as_view(), name="daily-report"),
    path("reports/daily/export/", DailyReportExportView.as_view(), name="daily-report-export"),
]
