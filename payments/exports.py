"""How accounting reads payments: CSV columns, cell values and the CSV text.

The columns and their order are fixed by the contract (section 7). Amounts are decimal strings
with the currency's minor units, times are UTC ISO 8601, ``businessDate`` is the store's local
date. A cell that a spreadsheet would run as a formula is prefixed with ``'``. The streamed HTTP
response is posgateway.rest.csv's.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from payments.currencies import minor_units
from payments.models import TransactionType
from payments.validation import format_amount

TRANSACTION_COLUMNS = (
    "transactionId",
    "store",
    "terminal",
    "desktop",
    "status",
    "amount",
    "currency",
    "paymentMethod",
    "authorizationCode",
    "orderId",
    "customerId",
    "createdAt",
    "completedAt",
    "businessDate",
    "late",
    "errorMessage",
    # Refunds (contract section 9): at the end, so older readers keep their columns.
    "type",
    "originalTransactionId",
    "refundedAmount",
)

DAILY_COLUMNS = (
    "date",
    "store",
    "currency",
    "count",
    "succeededCount",
    "succeededAmount",
    "declinedCount",
    "failedCount",
    "cancelledCount",
    "timeoutCount",
    "lateCount",
    "refundCount",
    "refundedAmount",
    "netAmount",
)

# Spreadsheets run a cell starting with these as a formula (OWASP "CSV injection"), full-width
# forms included (some spreadsheets normalise them); and they skip leading blanks and invisible
# characters before looking, so a cell starting with any whitespace (space, tab, line feed,
# carriage return, no-break space …) or format character (zero-width space, BOM …) is
# prefixed too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_FORMULA_STARTS = frozenset(FORMULA_PREFIXES)

ROWS_PER_CHUNK = 500


# --- Values ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _minor_exponent(currency: str) -> Decimal | None:
    units = minor_units(currency)
    return None if units is None else Decimal(1).scaleb(-units)


def money(value: Decimal | None, currency: str) -> str:
    """An amount as a decimal string with the currency's minor units (``"12.30"``)."""
    if value is None:
        value = Decimal(0)
    # The fast path for stored amounts, which always fit their currency (validated on entry).
    exponent = _minor_exponent(currency)
    if exponent is not None and isinstance(value, Decimal) and value.is_finite():
        quantized = value.quantize(exponent)
        if quantized == value:
            return f"{quantized.copy_abs() if quantized.is_zero() else quantized:f}"
    try:
        return format_amount(value, currency)
    except (ValueError, TypeError):
        # Not an ISO currency (any more), or float noise from SQLite's SUM: never fail a read.
        return f"{Decimal(value).normalize():f}"


def reference(value: Any) -> str | None:
    """An id from a free JSON object (``metadata.orderId``) as text, whatever its JSON type."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def order_id(metadata: Any) -> str | None:
    return reference(metadata.get("orderId")) if isinstance(metadata, dict) else None


def customer_id(customer_info: Any) -> str | None:
    return reference(customer_info.get("customerId")) if isinstance(customer_info, dict) else None


def business_date(created_at: dt.datetime, zone: dt.tzinfo) -> dt.date:
    """The store's local calendar day of a payment (it belongs to the day it was started)."""
    return created_at.astimezone(zone).date()


def _is_risky(first: str) -> bool:
    return (
        first in _FORMULA_STARTS or first.isspace() or unicodedata.category(first) in {"Cc", "Cf"}
    )


# The export writes millions of cells: ASCII looked up in a set, the rest asked (and cached).
_RISKY_ASCII = frozenset(c for c in map(chr, range(128)) if _is_risky(c))
_risky_other = functools.lru_cache(maxsize=4096)(_is_risky)


def _risky_start(text: str) -> bool:
    first = text[:1]
    return first in _RISKY_ASCII or (first > "\x7f" and _risky_other(first))


def neutralise(cell: str) -> str:
    """Prefix ``'`` to a cell a spreadsheet would take for a formula."""
    return "'" + cell if _risky_start(cell) else cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    return "'" + text if _risky_start(text) else text


def utc_iso(value: dt.datetime | None) -> str | None:
    """``posgateway.core.protocol.iso`` without strftime: the export formats millions of these."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return f"{value.isoformat(timespec='milliseconds')[:23]}Z"


# --- Rows ------------------------------------------------------------------------------------


def transaction_row(row: Any, zone: dt.tzinfo) -> list[str]:
    """One CSV row from an export row (see ``payments.selectors.transactions_for_export``)."""
    return [
        _cell(row.transaction_id),
        _cell(row.store),
        _cell(row.terminal),
        _cell(row.desktop),
        _cell(row.status),
        _cell(money(row.amount, row.currency)),
        _cell(row.currency),
        _cell(row.payment_method),
        _cell(row.authorization_code),
        _cell(order_id(row.metadata)),
        _cell(customer_id(row.customer_info)),
        _cell(utc_iso(row.created_at)),
        _cell(utc_iso(row.completed_at)),
        _cell(business_date(row.created_at, zone).isoformat()),
        _cell(row.late),
        _cell(row.error_message),
        _cell(row.type),
        _cell(row.original_transaction_id),
        _cell(refunded_amount(row.type, row.refunded_amount, row.currency)),
    ]


def refunded_amount(kind: str, value: Decimal, currency: str) -> str | None:
    """A payment's succeeded refunds added up (``"0.00"`` when none); None for a refund."""
    return None if kind == TransactionType.REFUND else money(value, currency)


def daily_row(row: dict[str, Any]) -> list[str]:
    # netAmount is negative on a day whose refunds (of earlier payments) outweigh its takings:
    # a number the gateway computed, never a client's text, so a spreadsheet reads it as the
    # number it is rather than as text behind a quote.
    return [
        row[column] if column == "netAmount" else _cell(row[column]) for column in DAILY_COLUMNS
    ]


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """The CSV text in chunks of a few hundred rows: memory stays flat however many rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # RFC 4180: quoted as needed, CRLF line ends
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow(row)
        if count % ROWS_PER_CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
