"""Query parameters of ``/api/transactions/`` and its CSV export (contract section 7).

A value that cannot be read is refused with 400 naming the parameter, never ignored and never
a 500: amounts must be decimal strings, times ISO 8601 (UTC unless they carry an offset).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema_field

from payments.currencies import MINOR_UNITS
from payments.models import Transaction, TransactionStatus, TransactionType
from payments.selectors import business_date_range
from payments.validation import parse_amount
from posgateway.core.protocol import BadRequest
from posgateway.rest.base import store_filter
from terminals.selectors import groups_for_user

# ?ordering= values; the first field is the cursor's position, pk breaks ties.
ORDERINGS: dict[str, tuple[str, ...]] = {
    "created_at": ("created_at", "pk"),
    "-created_at": ("-created_at", "-pk"),
    "amount": ("amount", "pk"),
    "-amount": ("-amount", "-pk"),
    "transaction_id": ("transaction_id", "pk"),
    "-transaction_id": ("-transaction_id", "-pk"),
}
DEFAULT_ORDERING = "-created_at"
# The export reads like a ledger: oldest first unless ?ordering= says otherwise.
DEFAULT_EXPORT_ORDERING = "created_at"

# Dates outside these years are typos, and at the extremes they overflow a datetime.
EARLIEST = dt.date(1970, 1, 1)
LATEST = dt.date(9998, 12, 31)
DATE_RANGE_TEXT = f"Enter a date between {EARLIEST} and {LATEST}."


class AmountField(forms.CharField):
    def to_python(self, value: Any) -> Decimal | None:
        value = super().to_python(value)
        if value in (None, ""):
            return None
        try:
            return Decimal(parse_amount(value, allow_zero=True))
        except BadRequest:
            raise forms.ValidationError(
                "Enter an amount as a decimal string such as 12.50 (digits and at most one "
                "point, at most 12 digits before it)."
            ) from None


class InstantField(forms.CharField):
    """An ISO 8601 date (midnight UTC) or date-time (UTC unless it carries an offset)."""

    message = (
        "Enter an ISO 8601 date (2024-01-15) or date-time (2024-01-15T10:30:00Z or with an "
        "offset such as +01:00)."
    )

    def to_python(self, value: Any) -> dt.datetime | None:
        value = super().to_python(value)
        if value in (None, ""):
            return None
        try:
            parsed = parse_datetime(value)
            day = None if parsed else parse_date(value)
        except ValueError:
            parsed = day = None
        if parsed is None and day is None:
            raise forms.ValidationError(self.message)
        if parsed is None:
            parsed = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
        elif parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        try:
            if not EARLIEST <= parsed.astimezone(dt.UTC).date() <= LATEST:
                raise forms.ValidationError(DATE_RANGE_TEXT)
        except OverflowError:
            raise forms.ValidationError(DATE_RANGE_TEXT) from None
        return parsed


class BusinessDateField(forms.DateField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("input_formats", ["%Y-%m-%d"])
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> dt.date | None:
        day = super().to_python(value)
        if day is not None and not EARLIEST <= day <= LATEST:
            raise forms.ValidationError(DATE_RANGE_TEXT)
        return day


class AmountFilter(django_filters.Filter):
    field_class = AmountField


class InstantFilter(django_filters.Filter):
    field_class = InstantField


class BusinessDateFilter(django_filters.Filter):
    field_class = BusinessDateField


AMOUNT_SCHEMA = {
    "type": "string",
    "pattern": r"^[0-9]{1,12}(\.[0-9]+)?$",
    "example": "12.50",
}
INSTANT_SCHEMA = {
    "type": "string",
    "description": "",
    "example": "2024-01-15T10:30:00Z",
}
DATE_SCHEMA = {"type": "string", "format": "date", "example": "2024-01-15"}


def described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


CREATED_AFTER_TEXT = (
    "{what} at or after this instant: an ISO 8601 date-time, UTC unless it carries an offset, "
    "or a date (its midnight UTC)"
)
CREATED_BEFORE_TEXT = (
    "{what} strictly before this instant: an ISO 8601 date-time, UTC unless it carries an "
    "offset, or a date (its midnight UTC, so that day itself is excluded)"
)


def created_range(field_name: str, what: str) -> tuple[InstantFilter, InstantFilter]:
    """``created_after`` and ``created_before``: an instant range on ``field_name``."""
    after = extend_schema_field(described(INSTANT_SCHEMA, CREATED_AFTER_TEXT.format(what=what)))(
        InstantFilter(field_name=field_name, lookup_expr="gte")
    )
    before = extend_schema_field(described(INSTANT_SCHEMA, CREATED_BEFORE_TEXT.format(what=what)))(
        InstantFilter(field_name=field_name, lookup_expr="lt")
    )
    return after, before


class TransactionFilter(django_filters.FilterSet):
    store = store_filter(label="Only this store (its slug; one of yours)")
    group = store_filter(label="The same as `store`")
    status = django_filters.MultipleChoiceFilter(
        choices=TransactionStatus.choices,
        label="Status as on the wire; repeat for several: `status=DECLINED&status=FAILED`",
    )
    type = django_filters.ChoiceFilter(
        choices=TransactionType.choices,
        label="`PAYMENT` or `REFUND` (default: both)",
    )
    terminal = django_filters.CharFilter(
        field_name="terminal__device_id", label="The terminal's deviceId"
    )
    desktop = django_filters.CharFilter(
        field_name="desktop__device_id", label="The desktop's (POS) deviceId"
    )
    currency = django_filters.ChoiceFilter(
        choices=[(code, code) for code in sorted(MINOR_UNITS)],
        label="ISO 4217 code, upper-case",
    )
    amount_min = extend_schema_field(
        described(AMOUNT_SCHEMA, "Amount at least this (a decimal string)")
    )(AmountFilter(field_name="amount", lookup_expr="gte"))
    amount_max = extend_schema_field(
        described(AMOUNT_SCHEMA, "Amount at most this (a decimal string)")
    )(AmountFilter(field_name="amount", lookup_expr="lte"))
    created_after, created_before = created_range("created_at", "Created")
    date_from = extend_schema_field(
        described(DATE_SCHEMA, "Business date (in each store's own time zone) from this day")
    )(BusinessDateFilter(method="_business_dates"))
    date_to = extend_schema_field(
        described(
            DATE_SCHEMA,
            "Business date (in each store's own time zone) up to and including this day",
        )
    )(BusinessDateFilter(method="_business_dates"))
    search = django_filters.CharFilter(
        method="_search", label="Part of a transactionId, or of the orderId in its metadata"
    )
    ordering = django_filters.ChoiceFilter(
        choices=[(value, value) for value in ORDERINGS],
        method="_ordering",
        label="Sort order (default `-created_at`, newest first; the export: `created_at`)",
    )

    class Meta:
        model = Transaction
        fields: list[str] = []

    def _search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.annotate(order_ref=KT("metadata__orderId")).filter(
            Q(transaction_id__icontains=value) | Q(order_ref__icontains=value)
        )

    def _business_dates(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset  # both ends together, in filter_queryset

    def _ordering(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset  # applied by the pagination (its cursor) or the export

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        data = self.form.cleaned_data
        date_from, date_to = data.get("date_from"), data.get("date_to")
        if date_from is None and date_to is None:
            return queryset
        store = data.get("store") or data.get("group")
        stores = groups_for_user(getattr(self.request, "user", None))
        if store is not None:
            stores = stores.filter(pk=store.pk)
        return business_date_range(queryset, stores=stores, date_from=date_from, date_to=date_to)

    # --- What the export needs to name its file ---

    def store_slug(self) -> str | None:
        store = self.form.cleaned_data.get("store") or self.form.cleaned_data.get("group")
        return store.slug if store is not None else None

    def period(self) -> tuple[dt.date | None, dt.date | None]:
        """First and last day the filters ask for (None where they leave it open)."""
        data = self.form.cleaned_data
        first = data.get("date_from")
        if first is None and data.get("created_after") is not None:
            first = data["created_after"].date()
        last = data.get("date_to")
        if last is None and data.get("created_before") is not None:
            last = (data["created_before"] - dt.timedelta(microseconds=1)).date()
        return first, last

    def ordering_value(self, default: str) -> tuple[str, ...]:
        return ORDERINGS[self.form.cleaned_data.get("ordering") or default]
