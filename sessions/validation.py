"""Shapes of display and input requests and their answers.

Pure functions; they raise :class:`posgateway.core.protocol.BadRequest` with a message that
names the field. (The Terminal API's documents are read in ``posgateway.nexo``.)
"""

from __future__ import annotations

import re
from typing import Any

from payments.currencies import MINOR_UNITS
from payments.validation import find_card_number, mask_card_numbers, parse_amount
from posgateway.core.protocol import BadRequest
from sessions.models import InputType

REQUEST_ID = re.compile(r"[!-~]{1,64}")
MAX_LINES = 10
MAX_LINE = 100
MAX_CART_ITEMS = 100
MAX_DURATION_MS = 300_000
DEFAULT_DURATION_MS = 10_000
MAX_INPUT_TIME_MS = 600_000
DEFAULT_INPUT_TIME_MS = 60_000
MAX_PROMPT = 200
MAX_OPTIONS = 20
MAX_TEXT_VALUE = 1000
MAX_SIGNATURE = 60_000
# A waiting screen longer than ten minutes is a forgotten session, not a waiting customer.
MAX_WAITING_SCREEN_MS = 600_000
DISPLAY_STATUSES = ("SUCCESS", "FAILED", "CANCELLED")
INPUT_STATUSES = ("SUCCESS", "FAILED", "CANCELLED", "TIMEOUT")


def _milliseconds(data: dict[str, Any], key: str, root: str, default: int, maximum: int) -> int:
    """An optional positive number of milliseconds, at most ``maximum``, else ``default``."""
    value = data.get(key)
    return default if value is None else _positive_int(value, f"{root}.{key}", maximum)


def _positive_int(value: object, path: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"{path} must be a positive integer (milliseconds)")
    if value > maximum:
        raise BadRequest(f"{path} must be at most {maximum}")
    return value


def _text(value: object, path: str, maximum: int, *, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{path} must be a non-empty string")
    if len(value) > maximum:
        raise BadRequest(f"{path} must be at most {maximum} characters")
    if find_card_number(value):
        raise BadRequest(f"{path} must not contain a card number")
    return value


def _request_id(data: dict[str, Any], root: str) -> str | None:
    value = data.get("requestId")
    if value is None:
        return None
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        raise BadRequest(f"{root}.requestId must be 1-64 printable ASCII characters without spaces")
    return value


def _known(data: dict[str, Any], root: str, fields: tuple[str, ...]) -> None:
    for key in data:
        if key not in fields:
            raise BadRequest(f"{root}.{str(key)[:64]} is not a known field")


def validate_display_request(data: object) -> dict[str, Any]:
    root = "displayRequest"
    if not isinstance(data, dict):
        raise BadRequest(f"{root} must be an object")
    _known(data, root, ("requestId", "lines", "cart", "durationMs"))
    out: dict[str, Any] = {"requestId": _request_id(data, root)}
    lines = data.get("lines")
    cart = data.get("cart")
    if lines is None and cart is None:
        raise BadRequest(f"{root}.lines is required (or a cart)")
    if lines is not None:
        if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
            raise BadRequest(f"{root}.lines must be a list of 1 to {MAX_LINES} strings")
        out["lines"] = [
            _text(line, f"{root}.lines[{i}]", MAX_LINE, required=False)
            for i, line in enumerate(lines)
        ]
    if cart is not None:
        out["cart"] = _cart(cart, f"{root}.cart")
    out["durationMs"] = _milliseconds(
        data, "durationMs", root, DEFAULT_DURATION_MS, MAX_DURATION_MS
    )
    return out


def _cart(cart: object, root: str) -> dict[str, Any]:
    if not isinstance(cart, dict):
        raise BadRequest(f"{root} must be an object")
    _known(cart, root, ("items", "total", "currency"))
    currency = cart.get("currency")
    if not isinstance(currency, str) or currency not in MINOR_UNITS:
        raise BadRequest(f"{root}.currency is not an ISO 4217 currency code")
    items = cart.get("items", [])
    if not isinstance(items, list) or len(items) > MAX_CART_ITEMS:
        raise BadRequest(f"{root}.items must be a list of at most {MAX_CART_ITEMS} items")
    out_items = []
    for i, item in enumerate(items):
        path = f"{root}.items[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{path} must be an object")
        _known(item, path, ("name", "quantity", "price"))
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise BadRequest(f"{path}.quantity must be a positive integer")
        out_items.append(
            {
                "name": _text(item.get("name"), f"{path}.name", MAX_LINE),
                "quantity": quantity,
                "price": parse_amount(
                    item.get("price"), currency, path=f"{path}.price", allow_zero=True
                ),
            }
        )
    total = cart.get("total")
    if total is None:
        raise BadRequest(f"{root}.total is required")
    return {
        "items": out_items,
        "total": parse_amount(total, currency, path=f"{root}.total", allow_zero=True),
        "currency": currency,
    }


def validate_input_request(data: object) -> dict[str, Any]:
    root = "inputRequest"
    if not isinstance(data, dict):
        raise BadRequest(f"{root} must be an object")
    _known(data, root, ("requestId", "type", "prompt", "options", "maxInputTimeMs"))
    input_type = data.get("type")
    if input_type not in InputType.values:
        raise BadRequest(f"{root}.type must be one of {', '.join(InputType.values)}")
    out: dict[str, Any] = {
        "requestId": _request_id(data, root),
        "type": input_type,
        "prompt": _text(data.get("prompt"), f"{root}.prompt", MAX_PROMPT),
    }
    options = data.get("options")
    if input_type == InputType.MENU:
        if not isinstance(options, list) or not 2 <= len(options) <= MAX_OPTIONS:
            raise BadRequest(f"{root}.options must be a list of 2 to {MAX_OPTIONS} choices")
        out["options"] = [_option(o, f"{root}.options[{i}]") for i, o in enumerate(options)]
        values = [o["value"] for o in out["options"]]
        if len(set(values)) != len(values):
            raise BadRequest(f"{root}.options values must be unique")
    elif options is not None:
        raise BadRequest(f"{root}.options is only for the menu type")
    out["maxInputTimeMs"] = _milliseconds(
        data, "maxInputTimeMs", root, DEFAULT_INPUT_TIME_MS, MAX_INPUT_TIME_MS
    )
    return out


def _option(value: object, path: str) -> dict[str, str]:
    if isinstance(value, str):
        text = _text(value, path, MAX_LINE)
        return {"value": text, "label": text}
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be a string or an object with value and label")
    _known(value, path, ("value", "label"))
    option_value = _text(value.get("value"), f"{path}.value", MAX_LINE)
    label = value.get("label", option_value)
    return {"value": option_value, "label": _text(label, f"{path}.label", MAX_LINE)}


def validate_display_response(data: object) -> dict[str, Any]:
    root = "displayResponse"
    if not isinstance(data, dict):
        raise BadRequest(f"{root} is required")
    request_id = data.get("requestId")
    if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
        raise BadRequest(f"{root}.requestId is required")
    status = data.get("status")
    if status not in DISPLAY_STATUSES:
        raise BadRequest(f"{root}.status must be one of {', '.join(DISPLAY_STATUSES)}")
    error = data.get("errorMessage")
    if error is not None and (not isinstance(error, str) or len(error) > 1000):
        raise BadRequest(f"{root}.errorMessage must be a string of at most 1000 characters")
    return {"requestId": request_id, "status": status, "errorMessage": mask_card_numbers(error)}


def validate_input_response(data: object, *, request: dict[str, Any]) -> dict[str, Any]:
    """The terminal's answer, checked against what was asked (type, menu options)."""
    root = "inputResponse"
    if not isinstance(data, dict):
        raise BadRequest(f"{root} is required")
    status = data.get("status")
    if status not in INPUT_STATUSES:
        raise BadRequest(f"{root}.status must be one of {', '.join(INPUT_STATUSES)}")
    error = data.get("errorMessage")
    if error is not None and (not isinstance(error, str) or len(error) > 1000):
        raise BadRequest(f"{root}.errorMessage must be a string of at most 1000 characters")
    out: dict[str, Any] = {
        "requestId": data.get("requestId"),
        "type": request["type"],
        "status": status,
        "errorMessage": mask_card_numbers(error),
    }
    if status == "SUCCESS":
        out["value"] = _input_value(data.get("value"), request, f"{root}.value")
    return out


def _input_value(value: object, request: dict[str, Any], path: str) -> object:
    kind = request["type"]
    if kind == InputType.CONFIRMATION:
        if not isinstance(value, bool):
            raise BadRequest(f"{path} must be true or false for a confirmation")
        return value
    if kind == InputType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise BadRequest(f"{path} must be a number")
        text = str(value)
        if not re.fullmatch(r"-?[0-9]{1,15}(\.[0-9]{1,6})?", text):
            raise BadRequest(f"{path} must be a number")
        # 15 digits hold an Amex number: a number typed on a terminal is a terminal answer.
        return mask_card_numbers(text)
    if kind == InputType.MENU:
        allowed = [o["value"] for o in request.get("options", [])]
        if value not in allowed:
            raise BadRequest(f"{path} must be one of the menu's option values")
        return value
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{path} must be a non-empty string")
    if kind == InputType.EMAIL and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise BadRequest(f"{path} must be an email address")
    if kind == InputType.PHONE and not re.fullmatch(r"\+?[0-9 ()./-]{3,32}", value):
        raise BadRequest(f"{path} must be a phone number")
    if kind == InputType.SIGNATURE:
        if len(value) > MAX_SIGNATURE:
            raise BadRequest(f"{path} must be at most {MAX_SIGNATURE} characters")
        return value
    if len(value) > MAX_TEXT_VALUE:
        raise BadRequest(f"{path} must be at most {MAX_TEXT_VALUE} characters")
    # Free text typed on a terminal may hold a card number: mask it like any terminal answer.
    return mask_card_numbers(value)


# --- Terminal API (nexo SaleToPOIRequest, admin sessions) --------------------------------------
