"""Validation of payment payloads: pure functions, no database, no Django settings.

The WebSocket handler calls :func:`validate_payment_request` on the ``paymentRequest`` object a
desktop sends with the ``payment`` action, and :func:`validate_payment_response` on the
``paymentResponse`` object a terminal sends back. Both return a new, normalised dict and raise
:class:`posgateway.core.protocol.BadRequest` with a message that names the offending field by its
path (``paymentRequest.products[2].quantity``) and says what is wrong.

Rules (contract section 7, "Amounts" and "Input rules"):

- ``amount`` is a JSON string of ASCII digits with at most one ``.``; it is normalised to exactly
  the currency's minor units (``"12.3"`` USD -> ``"12.30"``, ``"1500"`` JPY -> ``"1500"``).
- ``currency`` is an upper-case code from ISO 4217's current list (:mod:`payments.currencies`).
- A run of 13-19 digits passing the Luhn check inside a free-text value of a request is refused;
  in a terminal's response every such run is masked to its last four digits.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any

from payments.currencies import MINOR_UNITS, minor_units
from posgateway.core.protocol import BadRequest

__all__ = [
    "DEFAULT_PAYMENT_METHOD",
    "MAX_INTEGER_DIGITS",
    "MAX_NESTING",
    "MAX_PRODUCTS",
    "MAX_QUANTITY",
    "PAYMENT_STATUSES",
    "REQUEST_FIELDS",
    "find_card_number",
    "format_amount",
    "is_identifier_key",
    "luhn_valid",
    "mask_card_numbers",
    "parse_amount",
    "validate_payment_request",
    "validate_payment_response",
    "validate_refund_request",
]

REQUEST_FIELDS = (
    "transactionId",
    "amount",
    "currency",
    "paymentMethod",
    "products",
    "customerInfo",
    "metadata",
)
REFUND_FIELDS = ("transactionId", "originalTransactionId", "amount", "currency", "reason")
PAYMENT_STATUSES = ("SUCCESS", "DECLINED", "FAILED", "CANCELLED")
DEFAULT_PAYMENT_METHOD = "CARD"

MAX_INTEGER_DIGITS = 12
MAX_NESTING = 8
MAX_PRODUCTS = 1000
MAX_QUANTITY = 1_000_000
MAX_PRODUCT_TEXT = 200
MAX_PAYMENT_METHOD = 32
MAX_AUTHORIZATION_CODE = 64
MAX_ERROR_MESSAGE = 1000
MAX_REASON = 200

PAN_MIN_DIGITS = 13
PAN_MAX_DIGITS = 19
_PAN_MAX_GROUPS = 6
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

_TRANSACTION_ID = re.compile(r"[!-~]{1,64}")
# [0-9], not \d: \d also matches Arabic-Indic, Devanagari ... digits.
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
# Groups of ASCII digits joined by single spaces or dashes, as people type card numbers.
_DIGIT_SEQUENCE = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASCII_DIGITS = frozenset("0123456789")

# Keys whose values identify something rather than describe it: product codes are numbers
# of 8-14 digits with their own check digit, and one in ten of them would pass Luhn.
_CODE_KEYS = frozenset({"sku", "ean", "upc", "gtin", "barcode", "isbn"})

_AMOUNT_TEXT = 'must be a decimal string such as "12.50"'


# -- paths ----------------------------------------------------------------------------------


def _show_key(key: object) -> str:
    text = key if isinstance(key, str) else str(key)
    return text if len(text) <= 64 else text[:61] + "..."


def _key_path(parent: str, key: object) -> str:
    """``parent.key``, or ``parent["odd key"]`` for keys that are not plain identifiers."""
    shown = _show_key(key)
    if _PLAIN_KEY.fullmatch(shown):
        return f"{parent}.{shown}"
    return f"{parent}[{json.dumps(shown, ensure_ascii=False)}]"


def is_identifier_key(key: str) -> bool:
    """Whether a field holds an identifier, whose value is not inspected for card numbers.

    ``id``, keys ending in ``Id`` or ``_id`` (``transactionId``, ``customerId``, ``order_id``)
    and product codes (``sku``, ``ean``, ``upc``, ``gtin``, ``barcode``, ``isbn``).
    """
    return key == "id" or key.endswith(("Id", "_id")) or key.lower() in _CODE_KEYS


# -- card numbers ---------------------------------------------------------------------------


def _number_digits(value: int | float) -> str:
    """A JSON number as the digits it is written with ("" for fractions, huge numbers and
    non-finite floats)."""
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return ""
        value = int(value)
    if abs(value) >= 10**PAN_MAX_DIGITS:
        return ""
    return str(value)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check on a string of ASCII digits; False for anything else."""
    if not digits or not set(digits) <= _ASCII_DIGITS:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Where card numbers are in ``text``: (start, end) of each, separators included.

    A card number is 13-19 ASCII digits passing Luhn, written as one run of digits or as
    up to six groups joined by single spaces or dashes ("4111 1111 1111 1111", "3782-822463-
    10005"). A run of contiguous digits is never split: a 20-digit number holds no card
    number. From each group, the longest window of whole groups that is a card number is
    taken, so "4111 1111 1111 1111 12/26" finds the card before the expiry date.
    """
    spans: list[tuple[int, int]] = []
    for sequence in _DIGIT_SEQUENCE.finditer(text):
        if sequence.end() - sequence.start() < PAN_MIN_DIGITS:
            continue
        groups = list(_DIGIT_GROUP.finditer(text, sequence.start(), sequence.end()))
        start = 0
        while start < len(groups):
            best: int | None = None
            # Luhn sums kept for both parities, so each window costs O(1) more.
            count = doubled_even = doubled_odd = 0
            for end in range(start, min(start + _PAN_MAX_GROUPS, len(groups))):
                for char in groups[end].group():
                    digit = ord(char) - 48
                    if count % 2:
                        doubled_even += digit
                        doubled_odd += _LUHN_DOUBLE[digit]
                    else:
                        doubled_even += _LUHN_DOUBLE[digit]
                        doubled_odd += digit
                    count += 1
                    if count > PAN_MAX_DIGITS:
                        break
                if count > PAN_MAX_DIGITS:
                    break
                # Counted from the right, Luhn doubles every second digit: with an even
                # length those are the even positions from the left, otherwise the odd ones.
                total = doubled_even if count % 2 == 0 else doubled_odd
                if count >= PAN_MIN_DIGITS and total % 10 == 0:
                    best = end
            if best is None:
                start += 1
            else:
                spans.append((groups[start].start(), groups[best].end()))
                start = best + 1
    return spans


def find_card_number(text: str) -> bool:
    """Whether ``text`` contains a card number (see :func:`_card_spans`)."""
    return bool(_card_spans(text))


def _mask_text(text: str) -> str:
    spans = _card_spans(text)
    if not spans:
        return text
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts.append(text[last:start])
        chunk = text[start:end]
        hidden = sum(char in _ASCII_DIGITS for char in chunk) - 4
        seen = 0
        for char in chunk:
            if char in _ASCII_DIGITS:
                parts.append("*" if seen < hidden else char)
                seen += 1
            else:
                parts.append(char)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def mask_card_numbers(value: object) -> object:
    """A copy of ``value`` with every card number masked to its last four digits.

    Strings anywhere (dict keys included) have each card number's digits but the last four
    replaced by ``*``, separators kept: ``"4111111111111111"`` -> ``"************1111"``.
    A JSON integer that is a card number becomes the masked string, since a full card number
    must never be stored or forwarded; so does a JSON float (``4111111111111111.0``). Other
    values are returned as they are.
    """
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # 4111111111111111.0 is as much a card number as 4111111111111111: a whole float is
        # read as its integer digits, any other number as the digits it is written with.
        text = _number_digits(value) or (repr(value) if isinstance(value, float) else "")
        masked = _mask_text(text)
        if masked != text:
            return masked
        return value
    if isinstance(value, dict):
        return {
            (_mask_text(key) if isinstance(key, str) else key): mask_card_numbers(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_card_numbers(item) for item in value]
    return value


# -- amounts --------------------------------------------------------------------------------


def _amount_parts(value: object, path: str) -> tuple[str, str]:
    """Check an amount's syntax; return its integer part (no leading zeros) and its decimals.

    Leading zeros are not digits of the amount: "007.10" is 7.10 and "0000000000001" has one
    digit before the point. The 12-digit limit counts the integer part without them.
    """
    if not isinstance(value, str):
        # JSON numbers (and booleans) are refused: amounts are strings, as in the seed.
        raise BadRequest(f"{path} {_AMOUNT_TEXT}")
    match = _AMOUNT.fullmatch(value)
    if match is None:
        raise BadRequest(f"{path} {_AMOUNT_TEXT}")
    integer = match.group(1).lstrip("0") or "0"
    decimals = match.group(2) or ""
    if len(integer) > MAX_INTEGER_DIGITS:
        raise BadRequest(f"{path} has more than {MAX_INTEGER_DIGITS} digits before the point")
    return integer, decimals


def _normalise_amount(
    integer: str, decimals: str, currency: str, path: str, *, allow_zero: bool
) -> str:
    if not allow_zero and integer == "0" and not decimals.strip("0"):
        raise BadRequest(f"{path} must be greater than zero")
    units = MINOR_UNITS[currency]
    # Decimals are counted as written: "12.300" USD is refused like "12.301". A POS that
    # sends more decimals than the currency has is confused about the currency.
    if len(decimals) > units:
        raise BadRequest(f"{path} has more decimals than {currency} allows ({units})")
    if units == 0:
        return integer
    return f"{integer}.{decimals.ljust(units, '0')}"


def parse_amount(
    value: object,
    currency: str | None = None,
    *,
    path: str = "amount",
    allow_zero: bool = False,
) -> str:
    """Check an amount string and return it normalised.

    With a ``currency`` the result has exactly its minor units (``"12.3"`` USD -> ``"12.30"``)
    and more decimals than it allows are refused; without one, leading zeros are dropped and
    the decimals are kept as written (for filters such as ``amount_min``). Zero is refused
    unless ``allow_zero`` (product prices may be zero). Raises :class:`BadRequest` naming
    ``path``; an unknown ``currency`` is the caller's mistake and raises ``ValueError``.
    """
    if currency is not None and currency not in MINOR_UNITS:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    integer, decimals = _amount_parts(value, path)
    if currency is None:
        if not allow_zero and integer == "0" and not decimals.strip("0"):
            raise BadRequest(f"{path} must be greater than zero")
        return f"{integer}.{decimals}" if decimals else integer
    return _normalise_amount(integer, decimals, currency, path, allow_zero=allow_zero)


def format_amount(value: Decimal, currency: str) -> str:
    """``value`` as a string with exactly the currency's minor units: ``Decimal("12.3")``,
    ``"USD"`` -> ``"12.30"``; never an exponent.

    Raises ``ValueError`` for an unknown currency, a non-finite value, or a value with
    significant digits beyond the minor units (money is not rounded silently).
    """
    units = minor_units(currency)
    if units is None:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    if isinstance(value, bool | float):
        raise TypeError("format_amount needs a Decimal, not a float")
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite amount")
    context = Context(prec=max(28, number.adjusted() + units + 2), traps=[InvalidOperation])
    context.traps[Inexact] = True
    try:
        quantized = number.quantize(Decimal(1).scaleb(-units), context=context)
    except Inexact:
        raise ValueError(f"{value} has more decimals than {currency} allows ({units})") from None
    if quantized.is_zero():
        quantized = quantized.copy_abs()
    return f"{quantized:f}"


# -- fields ---------------------------------------------------------------------------------


def _required(data: dict[str, Any], key: str, root: str) -> object:
    value = data.get(key)
    if value is None:
        raise BadRequest(f"{root}.{key} is required")
    return value


def _transaction_id(data: dict[str, Any], root: str) -> str:
    value = _required(data, "transactionId", root)
    if not isinstance(value, str) or not _TRANSACTION_ID.fullmatch(value):
        raise BadRequest(
            f"{root}.transactionId must be 1 to 64 printable ASCII characters without spaces"
        )
    return value


def _currency(data: dict[str, Any], root: str) -> str:
    value = _required(data, "currency", root)
    if isinstance(value, str) and value in MINOR_UNITS:
        return value
    if isinstance(value, str) and value.upper() in MINOR_UNITS:
        raise BadRequest(f'{root}.currency must be upper-case, such as "{value.upper()}"')
    raise BadRequest(f"{root}.currency is not an ISO 4217 currency code")


def _payment_method(data: dict[str, Any], root: str) -> str:
    value = data.get("paymentMethod")
    if value is None:
        return DEFAULT_PAYMENT_METHOD
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_PAYMENT_METHOD
        or not value.isprintable()
    ):
        raise BadRequest(
            f"{root}.paymentMethod must be a string of 1 to {MAX_PAYMENT_METHOD} "
            "printable characters"
        )
    return value


def _check_key(key: str, path: str, *, inspect: bool) -> None:
    # Keys are free text as well; the message does not repeat the key (it holds the number).
    if inspect and find_card_number(key):
        raise BadRequest(f"{path} keys must not contain a card number")


def _check_json(value: object, path: str, depth: int, *, inspect: bool, identifier: bool) -> Any:
    """Copy a JSON value, checking nesting, key types, finite numbers and, if ``inspect``,
    that no free-text string (one not under an identifier key) holds a card number.

    ``depth`` is the nesting level of ``value`` if it is an object or a list: the field's
    own object (``metadata``) is level 1, and no container may be deeper than MAX_NESTING.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{path} must be a finite number")
        # A number is written digits too: 4111111111111111 is as much a card number as text.
        if inspect and not identifier and find_card_number(_number_digits(value)):
            raise BadRequest(f"{path} must not contain a card number")
        return value
    if isinstance(value, str):
        if inspect and not identifier and find_card_number(value):
            raise BadRequest(f"{path} must not contain a card number")
        return value
    if isinstance(value, dict | list):
        if depth > MAX_NESTING:
            raise BadRequest(f"{path} is nested too deeply (at most {MAX_NESTING} levels)")
        if isinstance(value, list):
            return [
                _check_json(
                    item, f"{path}[{index}]", depth + 1, inspect=inspect, identifier=identifier
                )
                for index, item in enumerate(value)
            ]
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadRequest(f"{path} keys must be strings")
            _check_key(key, path, inspect=inspect)
            copy[key] = _check_json(
                item,
                _key_path(path, key),
                depth + 1,
                inspect=inspect,
                identifier=is_identifier_key(key),
            )
        return copy
    raise BadRequest(f"{path} must be a JSON value")


def _free_object(data: dict[str, Any], key: str, root: str) -> dict[str, Any]:
    value = data.get(key)
    path = f"{root}.{key}"
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be an object")
    return _check_json(value, path, 1, inspect=True, identifier=False)


def _product(value: object, currency: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be an object")
    price = _required(value, "price", path)
    integer, decimals = _amount_parts(price, f"{path}.price")
    checked: dict[str, Any] = {
        "price": _normalise_amount(integer, decimals, currency, f"{path}.price", allow_zero=True)
    }
    quantity = _required(value, "quantity", path)
    if (
        not isinstance(quantity, int)
        or isinstance(quantity, bool)
        or not 1 <= quantity <= MAX_QUANTITY
    ):
        raise BadRequest(f"{path}.quantity must be a whole number from 1 to {MAX_QUANTITY}")
    checked["quantity"] = quantity
    for key in ("id", "name"):
        if key in value:
            text = value[key]
            if text is not None and (not isinstance(text, str) or len(text) > MAX_PRODUCT_TEXT):
                raise BadRequest(
                    f"{path}.{key} must be a string of at most {MAX_PRODUCT_TEXT} characters"
                )
            checked[key] = _check_json(
                text, f"{path}.{key}", 1, inspect=True, identifier=is_identifier_key(key)
            )
    for key, item in value.items():
        if key in checked:
            continue
        if not isinstance(key, str):
            raise BadRequest(f"{path} keys must be strings")
        _check_key(key, path, inspect=True)
        item_path = _key_path(path, key)
        if isinstance(item, dict | list):
            raise BadRequest(f"{item_path} must be a string, number, boolean or null")
        checked[key] = _check_json(
            item, item_path, 1, inspect=True, identifier=is_identifier_key(key)
        )
    # Keep the POS's own key order.
    return {key: checked[key] for key in value}


def _products(data: dict[str, Any], currency: str, root: str) -> list[dict[str, Any]]:
    value = data.get("products")
    path = f"{root}.products"
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{path} must be a list")
    if len(value) > MAX_PRODUCTS:
        raise BadRequest(f"{path} must have at most {MAX_PRODUCTS} items")
    return [_product(item, currency, f"{path}[{index}]") for index, item in enumerate(value)]


# -- the two payloads -----------------------------------------------------------------------


def _unknown_fields(data: dict[str, Any], root: str, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            message = f"{_key_path(root, key)} is not a known field"
            if isinstance(key, str):
                near = [field for field in known if field.lower() == key.lower()]
                if near:
                    message += f' (did you mean "{near[0]}"?)'
            raise BadRequest(message)


def validate_payment_request(data: object) -> dict[str, Any]:
    """Check the ``paymentRequest`` a desktop sent and return it normalised.

    The result has exactly the keys transactionId, amount (normalised to the currency's
    minor units), currency, paymentMethod (default "CARD"), products (default []),
    customerInfo and metadata (default {}). Errors come in the order a POS developer can
    best act on: unknown fields (usually a misspelt required one), transactionId, the
    amount's syntax, currency, the amount's decimals, then the optional fields.
    """
    root = "paymentRequest"
    if not isinstance(data, dict):
        raise BadRequest(f"{root} must be an object")
    _unknown_fields(data, root, REQUEST_FIELDS)
    transaction_id = _transaction_id(data, root)
    integer, decimals = _amount_parts(_required(data, "amount", root), f"{root}.amount")
    currency = _currency(data, root)
    amount = _normalise_amount(integer, decimals, currency, f"{root}.amount", allow_zero=False)
    return {
        "transactionId": transaction_id,
        "amount": amount,
        "currency": currency,
        "paymentMethod": _payment_method(data, root),
        "products": _products(data, currency, root),
        "customerInfo": _free_object(data, "customerInfo", root),
        "metadata": _free_object(data, "metadata", root),
    }


def validate_refund_request(data: object, root: str = "refundRequest") -> dict[str, Any]:
    """Check the shape of a ``refundRequest`` and return it normalised.

    The result has the keys transactionId, originalTransactionId, amount (the string as sent,
    or None for the whole refundable amount), currency (as sent, or None) and reason ("" when
    absent). The amount is checked for syntax here and against the original payment's currency
    and refundable amount by the service, which alone knows them.
    """
    if not isinstance(data, dict):
        raise BadRequest(f"{root} must be an object")
    _unknown_fields(data, root, REFUND_FIELDS)
    transaction_id = _transaction_id(data, root)
    original = data.get("originalTransactionId")
    if original is None or original == "":
        raise BadRequest(f"{root}.originalTransactionId is required")
    if not isinstance(original, str) or not _TRANSACTION_ID.fullmatch(original):
        raise BadRequest(
            f"{root}.originalTransactionId must be 1 to 64 printable ASCII characters "
            "without spaces"
        )
    amount = data.get("amount")
    if amount is not None:
        _amount_parts(amount, f"{root}.amount")
    currency = data.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise BadRequest(f"{root}.currency must be a string")
    reason = data.get("reason")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadRequest(f"{root}.reason must be a string of at most {MAX_REASON} characters")
    if not reason.isprintable():
        raise BadRequest(f"{root}.reason must be printable text on one line")
    if find_card_number(reason):
        raise BadRequest(f"{root}.reason must not contain a card number")
    return {
        "transactionId": transaction_id,
        "originalTransactionId": original,
        "amount": amount,
        "currency": currency,
        "reason": reason,
    }


def validate_payment_response(data: object, root: str = "paymentResponse") -> dict[str, Any]:
    """Check the ``paymentResponse`` (or a refund's ``refundResponse``) a terminal sent and
    return a masked copy.

    transactionId and status are required; authorizationCode and errorMessage are optional
    strings or null (present as null in the result when absent). Every other field is kept
    as any JSON value, nested at most MAX_NESTING levels. Every card number anywhere in the
    result is masked to its last four digits, except in transactionId, which is the POS's
    own identifier (already accepted with the request) and routes the result back to it.
    """
    if not isinstance(data, dict):
        raise BadRequest(f"{root} must be an object")
    transaction_id = _transaction_id(data, root)
    status = _required(data, "status", root)
    if not isinstance(status, str) or status not in PAYMENT_STATUSES:
        raise BadRequest(f"{root}.status must be one of {', '.join(PAYMENT_STATUSES)}")
    for key, limit in (
        ("authorizationCode", MAX_AUTHORIZATION_CODE),
        ("errorMessage", MAX_ERROR_MESSAGE),
    ):
        text = data.get(key)
        if text is not None and (not isinstance(text, str) or len(text) > limit):
            raise BadRequest(f"{root}.{key} must be a string of at most {limit} characters or null")
    checked = _check_json(data, root, 1, inspect=False, identifier=False)
    masked: dict[str, Any] = mask_card_numbers(checked)  # type: ignore[assignment]
    masked["transactionId"] = transaction_id
    masked.setdefault("authorizationCode", None)
    masked.setdefault("errorMessage", None)
    return masked
