"""REST endpoints for payments: the list, one payment's timeline, the CSV export, daily totals."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.urls import path, re_path
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
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors
from payments import services as payments
from payments.events import PaymentAccepted
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
from payments.models import (
    EventKind,
    EventSource,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from payments.services import refundable_amount
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    UNSTORABLE_TEXT,
    BadRequest,
    unstorable_text,
)
from posgateway.gateway.delivery import deliver_sync
from posgateway.rest.base import (
    ApiView,
    CursorPagination,
    ErrorSerializer,
    TimestampField,
    error_responses,
    require_manager,
)
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
    type = serializers.ChoiceField(
        choices=TransactionType.choices, help_text="A payment, or a refund of one"
    )
    originalTransactionId = serializers.CharField(
        source="original.transaction_id",
        allow_null=True,
        help_text="A refund's payment (null for a payment)",
    )
    store = serializers.CharField(source="group.slug")
    terminal = serializers.CharField(
        source="terminal.device_id", allow_null=True, help_text="The terminal's deviceId"
    )
    terminalRef = serializers.CharField(
        source="terminal_ref", help_text="terminalId exactly as the desktop sent it"
    )
    desktop = serializers.CharField(
        source="desktop.device_id",
        allow_null=True,
        help_text="The desktop's deviceId (null for a refund started by staff)",
    )
    status = serializers.ChoiceField(choices=TransactionStatus.choices)
    amount = serializers.SerializerMethodField()
    currency = serializers.CharField()
    refundedAmount = serializers.SerializerMethodField()
    overRefunded = serializers.SerializerMethodField()
    reason = serializers.SerializerMethodField()
    initiatedBy = serializers.SerializerMethodField()
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

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text='A payment\'s SUCCESS refunds added up ("0.00" when none); null for a refund',
        )
    )
    def get_refundedAmount(self, txn: Transaction) -> str | None:
        return None if txn.is_refund else money(txn.refunded_amount, txn.currency)

    @extend_schema_field(
        serializers.BooleanField(
            allow_null=True,
            help_text="A payment whose SUCCESS refunds add up to more than it (a refund "
            "succeeded late): money has moved, a person must look. Null for a refund",
        )
    )
    def get_overRefunded(self, txn: Transaction) -> bool | None:
        return None if txn.is_refund else txn.over_refunded

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text='Why a refund was made ("" when not given); null for a payment',
        )
    )
    def get_reason(self, txn: Transaction) -> str | None:
        return txn.reason if txn.is_refund else None

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text="The staff user (username) who started a refund from the REST API or the "
            "dashboard; null for one started by a desktop, and for a payment",
        )
    )
    def get_initiatedBy(self, txn: Transaction) -> str | None:
        user = txn.initiated_by
        return user.get_username() if user is not None else None

    def get_orderId(self, txn: Transaction) -> str | None:
        return order_id(txn.metadata)

    def get_customerId(self, txn: Transaction) -> str | None:
        return customer_id(txn.customer_info)

    @extend_schema_field(OpenApiTypes.DATE)
    def get_businessDate(self, txn: Transaction) -> str:
        return business_date(txn.created_at, txn.group.zone).isoformat()


class RefundSummarySerializer(serializers.Serializer):
    transactionId = serializers.CharField(source="transaction_id")
    status = serializers.ChoiceField(choices=TransactionStatus.choices)
    amount = serializers.SerializerMethodField()
    late = serializers.BooleanField()
    createdAt = TimestampField(source="created_at")
    completedAt = TimestampField(source="completed_at", allow_null=True)

    def get_amount(self, txn: Transaction) -> str:
        return money(txn.amount, txn.currency)


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
    refunds = RefundSummarySerializer(
        many=True,
        source="refunds.all",
        help_text="A payment's refunds in any state, oldest first (none for a refund)",
    )
    refundableAmount = serializers.SerializerMethodField()
    events = TransactionEventSerializer(many=True, help_text="Every step, oldest first")

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text="What may still be refunded of a SUCCESS payment: its amount minus its "
            "SUCCESS refunds and its refunds in flight. Null for any other transaction",
        )
    )
    def get_refundableAmount(self, txn: Transaction) -> str | None:
        if txn.is_refund or txn.status != TransactionStatus.SUCCESS:
            return None
        return money(max(refundable_amount(txn), Decimal(0)), txn.currency)


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
    refundCount = serializers.IntegerField(help_text="SUCCESS refunds started that day")
    refundedAmount = serializers.CharField(help_text="What they gave back, decimal string")
    netAmount = serializers.CharField(
        help_text="succeededAmount minus refundedAmount (negative when the day's refunds are "
        "of earlier payments and outweigh its takings)"
    )


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


def _timestamp(value: str) -> dt.datetime | None:
    """A cursor's time; one that exists only before UTC conversion (``9999-12-31T23:59:59
    -23:59``) raises OverflowError here rather than in the query (a 500)."""
    moment = parse_datetime(value)
    if moment is not None and moment.tzinfo is not None:
        moment.astimezone(dt.UTC)
    return moment


class TransactionPagination(CursorPagination):
    ordering = ORDERINGS["-created_at"]
    orderings = ORDERINGS
    position_parsers = {"created_at": _timestamp, "amount": _decimal}


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


# --- Refunds ---------------------------------------------------------------------------------

REFUND_BODY_FIELDS = ("transactionId", "terminal", "amount", "currency", "reason")
# The service names the fields of a WebSocket refundRequest; here they are the body's own.
_SERVICE_ROOT = "refundRequest."


class RefundCreateSerializer(serializers.Serializer):
    """The body of a refund request (documentation: the view checks it field by field, with
    the WebSocket's rules and texts)."""

    transactionId = serializers.RegexField(
        r"^[!-~]{1,64}$",
        help_text="The refund's own id, new in the store (payments and refunds share one id "
        "space); sending the same request again answers with the same refund",
    )
    terminal = serializers.CharField(
        help_text="The deviceId of a connected terminal of the payment's store"
    )
    amount = serializers.RegexField(
        r"^[0-9]{1,12}(\.[0-9]+)?$",
        required=False,
        help_text="A decimal string, greater than zero and at most the refundable amount; "
        "without it, the whole refundable amount",
    )
    currency = serializers.RegexField(
        r"^[A-Z]{3}$", required=False, help_text="If given, the payment's own currency"
    )
    reason = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Why (at most 200 characters, one line, no card number)",
    )


class RefundErrorSerializer(ErrorSerializer):
    """An error of a refund request (documentation only)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            **super().get_fields(),
            "transactionId": serializers.CharField(
                required=False, help_text="The refund's id (or the payment's, for a 404)"
            ),
            "refundableAmount": serializers.CharField(
                required=False,
                help_text="With `amount exceeds the refundable amount`: what may be refunded",
            ),
            "originalTransactionId": serializers.CharField(required=False),
            "status": serializers.CharField(
                required=False, help_text="The payment's status, when it is not SUCCESS"
            ),
            "currency": serializers.CharField(
                required=False, help_text="The payment's currency, when another was sent"
            ),
            "inFlightTransactionId": serializers.CharField(
                required=False, help_text="What the busy terminal is running"
            ),
        }


def _refund_body(data: Any) -> tuple[str, dict[str, Any]]:
    """(the terminal's deviceId, the refund request) from the body; BadRequest naming a field
    that is missing, unknown or not storable. The service checks the rest."""
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object")
    where = unstorable_text(data)
    if where is not None:
        raise BadRequest(f"{where} {UNSTORABLE_TEXT}")
    for key in data:
        if key not in REFUND_BODY_FIELDS:
            raise BadRequest(f"{key} is not a known field (known: {', '.join(REFUND_BODY_FIELDS)})")
    for key in ("transactionId", "terminal"):
        if data.get(key) in (None, ""):
            raise BadRequest(f"{key} is required")
    terminal = data["terminal"]
    if not isinstance(terminal, str):
        raise BadRequest("terminal must be a string: the terminal's deviceId")
    refund_request = {key: data[key] for key in REFUND_BODY_FIELDS if key in data}
    del refund_request["terminal"]
    return terminal, refund_request


def _deliver(outbox: Outbox) -> None:
    """Send what the refund published; a refused forward fails the refund (and says so)."""
    failures = deliver_sync(outbox)
    if failures:
        again = Outbox()
        for on_fail in failures:
            on_fail(again)
        deliver_sync(again)


REFUND_409 = (
    "`Only a successful payment can be refunded` (with the payment's `status`), "
    "`Terminal is busy` (`inFlightTransactionId`), or `transactionId already used with "
    "different details`"
)
REFUND_400 = (
    "A field is missing or refused (`message` names it, e.g. `terminal is required`), "
    "`amount exceeds the refundable amount` (with `refundableAmount`), `currency does not "
    "match the original payment`, or several of your stores have this transactionId "
    "(`store`)"
)


class TransactionRefundsView(ApiView, APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="transactions_refunds_create",
        tags=["transactions"],
        summary="Refund a payment",
        description=(
            "Starts a refund of a SUCCESS payment of your stores on a connected terminal of "
            "its store, as a desktop's `refund` over the WebSocket does (contract section 9): "
            "stored, then forwarded to the terminal as `refundRequest`; its result arrives "
            "from the terminal like a payment's (read it here, by the refund's transactionId). "
            "Several partial refunds are allowed, never adding up to more than the payment. "
            "Answers 202 with the refund (IN_PROGRESS); the same request again answers 200 "
            "with the same refund, in flight or finished. Needs a manager of the store. When "
            "several of your stores use this transactionId, name one with `store`."
        ),
        parameters=[
            OpenApiParameter(
                "transaction_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="The payment's transactionId",
            ),
            STORE_PARAMETER,
        ],
        request=RefundCreateSerializer,
        responses={
            202: OpenApiResponse(TransactionSerializer, description="The refund, forwarded"),
            200: OpenApiResponse(
                TransactionSerializer,
                description="The same request again: the same refund as it is now",
            ),
            400: OpenApiResponse(RefundErrorSerializer, description=REFUND_400),
            401: error_responses()[401],
            403: OpenApiResponse(
                RefundErrorSerializer, description="Not a manager of the payment's store"
            ),
            404: OpenApiResponse(
                RefundErrorSerializer,
                description="`Transaction not found` (unknown, another store's, or a refund: "
                "the same answer), or `Terminal connection not found` (no such terminal in "
                "the store, or not connected)",
            ),
            409: OpenApiResponse(RefundErrorSerializer, description=REFUND_409),
            415: OpenApiResponse(ErrorSerializer, description="The body is not JSON"),
            429: error_responses()[429],
        },
    )
    def post(self, request, transaction_id: str):
        payment = selectors.payment_to_refund(
            user=request.user,
            transaction_id=transaction_id,
            store=request.query_params.get("store") or None,
        )
        require_manager(request, payment.group_id, "refund its payments")
        terminal, refund_request = _refund_body(request.data)
        outbox = Outbox()
        try:
            outcome = payments.refund_start(
                group_id=payment.group_id,
                terminal_id=terminal,
                refund_request={
                    **refund_request,
                    "originalTransactionId": payment.transaction_id,
                },
                outbox=outbox,
                user=request.user,
                source=EventSource.API,
                device_id_only=True,
            )
        except BadRequest as exc:
            if exc.message.startswith(_SERVICE_ROOT):
                raise BadRequest(exc.message.removeprefix(_SERVICE_ROOT), **exc.extra) from None
            raise
        transaction.on_commit(lambda: _deliver(outbox))
        created = isinstance(outcome, PaymentAccepted) and not outcome.duplicate
        refund = selectors.transaction_list(user=request.user).get(
            group_id=payment.group_id, transaction_id=refund_request["transactionId"]
        )
        return Response(TransactionSerializer(refund).data, status=202 if created else 200)

    @extend_schema(exclude=True)
    def get(self, request, transaction_id: str):
        # A transactionId may hold slashes: "A/refunds" is a payment's id, not this endpoint.
        detail = TransactionViewSet.as_view({"get": "retrieve"})
        return detail(request._request, transaction_id=f"{transaction_id}/refunds")


# Mounted under /api/ beside the router's endpoints.
# The refunds' URL comes before the router's (see posgateway/urls.py): the detail route's
# transactionId may hold slashes and would take ".../refunds/" for an id.
urlpatterns = [
    re_path(
        r"^transactions/(?P<transaction_id>.+)/refunds/$",
        TransactionRefundsView.as_view(),
        name="transaction-refunds",
    ),
    path("reports/daily/", DailyReportView.as_view(), name="daily-report"),
    path("reports/daily/export/", DailyReportExportView.as_view(), name="daily-report-export"),
]
