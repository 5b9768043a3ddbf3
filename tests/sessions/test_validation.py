"""Display and input requests, their answers, and the Terminal API document: pure functions."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from posgateway.core.protocol import BadRequest
from posgateway.nexo import TerminalApiFailure, parse_terminal_api_request
from sessions.validation import (
    MAX_INPUT_TIME_MS,
    MAX_WAITING_SCREEN_MS,
    validate_display_request,
    validate_display_response,
    validate_input_request,
    validate_input_response,
)

VISA = "4111111111111111"  # Luhn-valid test card


def refused(validator, data: object, **kw: Any) -> str:
    with pytest.raises(BadRequest) as info:
        validator(data, **kw)
    assert info.value.to_frame()["error"] == "Bad Request"
    return info.value.message


# --- display requests ------------------------------------------------------------------------


def test_display_request_with_lines_gets_the_default_duration() -> None:
    out = validate_display_request({"lines": ["Welcome", "Table 12"]})
    assert out == {"requestId": None, "lines": ["Welcome", "Table 12"], "durationMs": 10_000}


def test_display_request_keeps_the_posted_request_id_and_duration() -> None:
    out = validate_display_request({"requestId": "D-1", "lines": ["Hi"], "durationMs": 5000})
    assert out["requestId"] == "D-1"
    assert out["durationMs"] == 5000


def test_display_request_needs_lines_or_a_cart() -> None:
    assert "lines is required" in refused(validate_display_request, {"durationMs": 1000})


@pytest.mark.parametrize("lines", [[], "Welcome", ["x"] * 11, [1], [None]])
def test_display_lines_must_be_a_short_list_of_strings(lines: object) -> None:
    assert "displayRequest.lines" in refused(validate_display_request, {"lines": lines})


def test_a_display_line_longer_than_the_limit_is_refused() -> None:
    message = refused(validate_display_request, {"lines": ["x" * 101]})
    assert message == "displayRequest.lines[0] must be at most 100 characters"


def test_a_display_line_may_be_empty() -> None:
    assert validate_display_request({"lines": ["Total", ""]})["lines"] == ["Total", ""]


def test_a_card_number_in_a_display_line_is_refused() -> None:
    message = refused(validate_display_request, {"lines": ["ok", f"card {VISA}"]})
    assert message == "displayRequest.lines[1] must not contain a card number"


def test_cart_amounts_are_normalised_to_the_currency() -> None:
    cart = {
        "currency": "USD",
        "items": [{"name": "Soup", "price": "4.5", "quantity": 2}],
        "total": "9",
    }
    out = validate_display_request({"cart": cart})
    assert out["cart"] == {
        "items": [{"name": "Soup", "quantity": 2, "price": "4.50"}],
        "total": "9.00",
        "currency": "USD",
    }


def test_cart_amounts_in_yen_have_no_decimals() -> None:
    out = validate_display_request(
        {"cart": {"currency": "JPY", "items": [{"name": "Tea", "price": "1500"}], "total": "1500"}}
    )
    assert out["cart"]["items"][0] == {"name": "Tea", "quantity": 1, "price": "1500"}
    assert out["cart"]["total"] == "1500"


def test_a_free_cart_item_is_allowed() -> None:
    cart = {"currency": "EUR", "items": [{"name": "Water", "price": "0"}], "total": "0"}
    assert validate_display_request({"cart": cart})["cart"]["items"][0]["price"] == "0.00"


@pytest.mark.parametrize(
    ("cart", "fragment"),
    [
        ("x", "displayRequest.cart must be an object"),
        ({"total": "1.00"}, "displayRequest.cart.currency is not an ISO 4217"),
        ({"currency": "usd", "total": "1.00"}, "displayRequest.cart.currency is not an ISO 4217"),
        ({"currency": "USD"}, "displayRequest.cart.total is required"),
        ({"currency": "USD", "total": 9.5}, "displayRequest.cart.total"),
        ({"currency": "USD", "total": "1.234"}, "more decimals than USD allows"),
        ({"currency": "JPY", "total": "1.5"}, "more decimals than JPY allows"),
        ({"currency": "USD", "total": "1", "items": "x"}, "displayRequest.cart.items"),
        ({"currency": "USD", "total": "1", "items": ["x"]}, "items[0] must be an object"),
        (
            {"currency": "USD", "total": "1", "items": [{"name": "A", "price": "1.001"}]},
            "displayRequest.cart.items[0].price",
        ),
        (
            {
                "currency": "USD",
                "total": "1",
                "items": [{"name": "A", "price": "1", "quantity": 0}],
            },
            "items[0].quantity must be a positive integer",
        ),
        (
            {
                "currency": "USD",
                "total": "1",
                "items": [{"name": "A", "price": "1", "quantity": True}],
            },
            "items[0].quantity must be a positive integer",
        ),
        (
            {"currency": "USD", "total": "1", "items": [{"price": "1"}]},
            "items[0].name must be a non-empty string",
        ),
        (
            {"currency": "USD", "total": "1", "items": [{"name": f"Gift {VISA}", "price": "1"}]},
            "items[0].name must not contain a card number",
        ),
        (
            {"currency": "USD", "total": "1", "items": [{"name": "A", "price": "1", "sku": "x"}]},
            "displayRequest.cart.items[0].sku is not a known field",
        ),
        ({"currency": "USD", "total": "1", "tip": "1"}, "displayRequest.cart.tip is not a known"),
    ],
)
def test_bad_carts_are_refused_naming_the_field(cart: object, fragment: str) -> None:
    assert fragment in refused(validate_display_request, {"cart": cart})


def test_a_cart_of_more_than_a_hundred_items_is_refused() -> None:
    items = [{"name": "A", "price": "1"}] * 101
    cart = {"currency": "USD", "total": "101", "items": items}
    assert "at most 100 items" in refused(validate_display_request, {"cart": cart})


@pytest.mark.parametrize("duration", [0, -1, 300_001, True, 1.5, "1000"])
def test_display_duration_must_be_a_positive_integer_within_bounds(duration: object) -> None:
    message = refused(validate_display_request, {"lines": ["x"], "durationMs": duration})
    assert message.startswith("displayRequest.durationMs must be")


def test_display_duration_at_the_limit_is_accepted() -> None:
    assert validate_display_request({"lines": ["x"], "durationMs": 300_000})["durationMs"] == (
        300_000
    )


def test_unknown_display_fields_are_refused() -> None:
    message = refused(validate_display_request, {"lines": ["x"], "colour": "red"})
    assert message == "displayRequest.colour is not a known field"


@pytest.mark.parametrize("request_id", ["", "has space", "x" * 65, 12, "é"])
def test_a_bad_request_id_is_refused(request_id: object) -> None:
    message = refused(validate_display_request, {"requestId": request_id, "lines": ["x"]})
    assert message.startswith("displayRequest.requestId must be")


def test_a_display_request_that_is_not_an_object_is_refused() -> None:
    assert refused(validate_display_request, ["x"]) == "displayRequest must be an object"


# --- input requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_type", ["confirmation", "text", "number", "email", "phone", "signature"]
)
def test_each_input_type_is_accepted_with_a_prompt(input_type: str) -> None:
    out = validate_input_request({"type": input_type, "prompt": "Please"})
    assert out == {
        "requestId": None,
        "type": input_type,
        "prompt": "Please",
        "maxInputTimeMs": 60_000,
    }


@pytest.mark.parametrize("input_type", [None, "date", "Menu", 3])
def test_an_unknown_input_type_is_refused(input_type: object) -> None:
    message = refused(validate_input_request, {"type": input_type, "prompt": "?"})
    assert message.startswith("inputRequest.type must be one of confirmation, text")


@pytest.mark.parametrize("prompt", [None, "", 5, "x" * 201])
def test_an_input_prompt_is_required_and_bounded(prompt: object) -> None:
    assert "inputRequest.prompt" in refused(
        validate_input_request, {"type": "text", "prompt": prompt}
    )


def test_a_card_number_in_a_prompt_is_refused() -> None:
    message = refused(validate_input_request, {"type": "text", "prompt": f"Is {VISA} yours?"})
    assert message == "inputRequest.prompt must not contain a card number"


def test_menu_options_as_strings_and_objects_become_value_and_label() -> None:
    out = validate_input_request(
        {
            "type": "menu",
            "prompt": "Tip?",
            "options": ["10%", {"value": "15", "label": "15 %"}, {"value": "none"}],
        }
    )
    assert out["options"] == [
        {"value": "10%", "label": "10%"},
        {"value": "15", "label": "15 %"},
        {"value": "none", "label": "none"},
    ]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (None, "inputRequest.options must be a list of 2 to 20 choices"),
        (["only"], "inputRequest.options must be a list of 2 to 20 choices"),
        ([f"o{i}" for i in range(21)], "inputRequest.options must be a list of 2 to 20 choices"),
        (["a", "a"], "inputRequest.options values must be unique"),
        (["a", {"value": "a", "label": "A again"}], "inputRequest.options values must be unique"),
        (["a", 2], "inputRequest.options[1] must be a string or an object"),
        (["a", ""], "inputRequest.options[1] must be a non-empty string"),
        (["a", {"label": "B"}], "inputRequest.options[1].value must be a non-empty string"),
        (["a", {"value": "b", "icon": "x"}], "inputRequest.options[1].icon is not a known field"),
        (["a", f"card {VISA}"], "inputRequest.options[1] must not contain a card number"),
    ],
)
def test_menu_options_are_required_and_unique(options: object, fragment: str) -> None:
    data = {"type": "menu", "prompt": "Choose", "options": options}
    assert fragment in refused(validate_input_request, data)


def test_options_are_only_for_menus() -> None:
    data = {"type": "text", "prompt": "Name", "options": ["a", "b"]}
    assert refused(validate_input_request, data) == "inputRequest.options is only for the menu type"


@pytest.mark.parametrize("limit", [0, -5, MAX_INPUT_TIME_MS + 1, True, 100.0, "5000"])
def test_max_input_time_must_be_a_positive_integer_within_bounds(limit: object) -> None:
    data = {"type": "text", "prompt": "Name", "maxInputTimeMs": limit}
    assert refused(validate_input_request, data).startswith("inputRequest.maxInputTimeMs must be")


def test_max_input_time_at_the_limit_is_accepted() -> None:
    data = {"type": "text", "prompt": "Name", "maxInputTimeMs": MAX_INPUT_TIME_MS}
    assert validate_input_request(data)["maxInputTimeMs"] == MAX_INPUT_TIME_MS


def test_unknown_input_fields_are_refused() -> None:
    data = {"type": "text", "prompt": "Name", "mask": True}
    assert refused(validate_input_request, data) == "inputRequest.mask is not a known field"


def test_an_input_request_that_is_not_an_object_is_refused() -> None:
    assert refused(validate_input_request, "text") == "inputRequest must be an object"


# --- answers ---------------------------------------------------------------------------------


def asked(input_type: str, **extra: Any) -> dict[str, Any]:
    return validate_input_request({"type": input_type, "prompt": "?", **extra})


def answer(status: str = "SUCCESS", **fields: Any) -> dict[str, Any]:
    return {"requestId": "R-1", "status": status, **fields}


def test_display_response_is_checked() -> None:
    assert validate_display_response(answer()) == {
        "requestId": "R-1",
        "status": "SUCCESS",
        "errorMessage": None,
    }
    assert (
        refused(validate_display_response, answer("DONE"))
        == "displayResponse.status must be one of SUCCESS, FAILED, CANCELLED"
    )
    assert refused(validate_display_response, {"status": "SUCCESS"}) == (
        "displayResponse.requestId is required"
    )
    assert refused(validate_display_response, None) == "displayResponse is required"
    assert "errorMessage" in refused(validate_display_response, answer(errorMessage=5))


@pytest.mark.parametrize("value", [True, False])
def test_a_confirmation_is_true_or_false(value: bool) -> None:
    out = validate_input_response(answer(value=value), request=asked("confirmation"))
    assert out["value"] is value
    assert out["type"] == "confirmation"


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_confirmation_that_is_not_a_boolean_is_refused(value: object) -> None:
    message = refused(validate_input_response, answer(value=value), request=asked("confirmation"))
    assert message == "inputResponse.value must be true or false for a confirmation"


@pytest.mark.parametrize(("value", "text"), [(42, "42"), ("-3.25", "-3.25"), (0.5, "0.5")])
def test_a_number_answer_is_kept_as_text(value: object, text: str) -> None:
    assert validate_input_response(answer(value=value), request=asked("number"))["value"] == text


@pytest.mark.parametrize("value", [True, "12a", "1e5", "", None, [1], "1" * 16])
def test_a_number_answer_that_is_not_a_number_is_refused(value: object) -> None:
    message = refused(validate_input_response, answer(value=value), request=asked("number"))
    assert message == "inputResponse.value must be a number"


def test_an_email_answer_must_look_like_an_address() -> None:
    ok = validate_input_response(answer(value="ann@example.com"), request=asked("email"))
    assert ok["value"] == "ann@example.com"
    message = refused(
        validate_input_response, answer(value="ann at example"), request=asked("email")
    )
    assert message == "inputResponse.value must be an email address"


def test_a_phone_answer_must_look_like_a_number() -> None:
    ok = validate_input_response(answer(value="+1 (555) 010-0199"), request=asked("phone"))
    assert ok["value"] == "+1 (555) 010-0199"
    message = refused(validate_input_response, answer(value="call me"), request=asked("phone"))
    assert message == "inputResponse.value must be a phone number"


def test_a_menu_answer_must_be_one_of_the_options() -> None:
    request = asked("menu", options=["10", {"value": "15", "label": "15 %"}])
    assert validate_input_response(answer(value="15"), request=request)["value"] == "15"
    for wrong in ("15 %", "20", None, 10):
        message = refused(validate_input_response, answer(value=wrong), request=request)
        assert message == "inputResponse.value must be one of the menu's option values"


def test_a_signature_is_bounded_in_size() -> None:
    request = asked("signature")
    image = "data:image/png;base64," + "A" * 1000
    assert validate_input_response(answer(value=image), request=request)["value"] == image
    message = refused(validate_input_response, answer(value="A" * 60_001), request=request)
    assert message == "inputResponse.value must be at most 60000 characters"


def test_a_text_answer_holding_a_card_number_is_masked() -> None:
    out = validate_input_response(answer(value=f"my card {VISA}"), request=asked("text"))
    assert VISA not in out["value"]
    assert out["value"].endswith("1111")


def test_a_text_answer_must_be_a_bounded_string() -> None:
    request = asked("text")
    assert "non-empty string" in refused(validate_input_response, answer(value=""), request=request)
    message = refused(validate_input_response, answer(value="x" * 1001), request=request)
    assert message == "inputResponse.value must be at most 1000 characters"


@pytest.mark.parametrize("status", ["TIMEOUT", "CANCELLED", "FAILED"])
def test_an_answer_without_success_needs_no_value(status: str) -> None:
    out = validate_input_response(
        answer(status, errorMessage="customer walked away"), request=asked("email")
    )
    assert out["status"] == status
    assert "value" not in out
    assert out["errorMessage"] == "customer walked away"


def test_an_input_answer_with_an_unknown_status_is_refused() -> None:
    message = refused(validate_input_response, answer("OK", value="x"), request=asked("text"))
    assert message == "inputResponse.status must be one of SUCCESS, FAILED, CANCELLED, TIMEOUT"


# --- Terminal API documents ------------------------------------------------------------------

BEGIN_SERVICE = {
    "Session": {"Id": "table-12", "Type": "Begin"},
    "Operation": [
        {
            "Type": "Payment",
            "Variant": "WaitingScreen",
            "UserInterfaceData": {"WaitingScreenTimeoutMs": 5000},
        },
        {
            "Type": "InputRequest",
            "Variant": "WaitingScreen",
            "UserInterfaceData": {"WaitingScreenTimeoutMs": 3000},
        },
    ],
}
HEADER = {
    "ProtocolVersion": "3.0",
    "MessageClass": "Service",
    "MessageCategory": "Admin",
    "MessageType": "Request",
    "ServiceID": "svc-1",
    "SaleID": "POS-1",
    "POIID": "TERM-1",
}


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw).decode()


def document(service: object = BEGIN_SERVICE, header: object = HEADER) -> dict[str, Any]:
    return {
        "SaleToPOIRequest": {
            "MessageHeader": copy.deepcopy(header),
            "AdminRequest": {"ServiceIdentification": b64(copy.deepcopy(service))},
        }
    }


def begin_service(**changes: Any) -> dict[str, Any]:
    service = copy.deepcopy(BEGIN_SERVICE)
    service.update(changes)
    return {k: v for k, v in service.items() if v is not ...}


def operation(**changes: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "Type": "DisplayRequest",
        "Variant": "WaitingScreen",
        "UserInterfaceData": {"WaitingScreenTimeoutMs": 2000},
    }
    op.update(changes)
    return {k: v for k, v in op.items() if v is not ...}


def header(**changes: Any) -> dict[str, Any]:
    h = dict(HEADER)
    h.update(changes)
    return {k: v for k, v in h.items() if v is not ...}


def failure(doc: object) -> str:
    with pytest.raises(TerminalApiFailure) as info:
        parse_terminal_api_request(doc)
    assert info.value.condition == "MessageFormat"
    assert isinstance(info.value.text, str)
    assert info.value.text
    assert "{" not in info.value.text  # a sentence, not a dumped object
    return info.value.text


def test_the_seeds_begin_request_is_parsed() -> None:
    parsed = parse_terminal_api_request(document())
    assert parsed["type"] == "Begin"
    assert parsed["sessionId"] == "table-12"
    assert parsed["header"] == HEADER
    assert parsed["operations"] == [
        {"type": "Payment", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 5000},
        {"type": "InputRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 3000},
    ]


def test_session_id_spelled_ID_is_accepted() -> None:
    service = begin_service(Session={"ID": "table-13", "Type": "Begin"})
    assert parse_terminal_api_request(document(service))["sessionId"] == "table-13"


def test_operation_may_be_a_single_object() -> None:
    parsed = parse_terminal_api_request(document(begin_service(Operation=operation())))
    assert parsed["operations"] == [
        {"type": "DisplayRequest", "variant": "WaitingScreen", "waitingScreenTimeoutMs": 2000}
    ]


def test_all_three_operation_types_in_one_session() -> None:
    ops = [operation(Type=t) for t in ("Payment", "InputRequest", "DisplayRequest")]
    parsed = parse_terminal_api_request(document(begin_service(Operation=ops)))
    assert [op["type"] for op in parsed["operations"]] == [
        "Payment",
        "InputRequest",
        "DisplayRequest",
    ]


def test_end_needs_only_message_class_category_and_the_session() -> None:
    doc = document(
        {"Session": {"Id": "table-12", "Type": "End"}},
        {"MessageClass": "Service", "MessageCategory": "Admin"},
    )
    parsed = parse_terminal_api_request(doc)
    assert parsed["type"] == "End"
    assert parsed["sessionId"] == "table-12"
    assert parsed["operations"] == []


@pytest.mark.parametrize("missing", ["MessageClass", "MessageCategory"])
def test_end_without_class_or_category_is_refused(missing: str) -> None:
    h = {"MessageClass": "Service", "MessageCategory": "Admin"}
    del h[missing]
    text = failure(document({"Session": {"Id": "s", "Type": "End"}}, h))
    assert text == f"MessageHeader.{missing} is required"


def test_end_with_a_wrong_message_type_is_refused() -> None:
    h = {"MessageClass": "Service", "MessageCategory": "Admin", "MessageType": "Response"}
    text = failure(document({"Session": {"Id": "s", "Type": "End"}}, h))
    assert text == "MessageHeader.MessageType must be Request"


def test_wrong_shapes_of_the_body_are_message_format_failures() -> None:
    assert "SaleToPOIRequest" in failure(["SaleToPOIRequest"])
    assert "SaleToPOIRequest" in failure("text")
    assert "SaleToPOIRequest" in failure({})
    assert "SaleToPOIRequest" in failure({"SaleToPOIRequest": "x"})
    assert "SaleToPOIRequest" in failure({"saletopoirequest": document()["SaleToPOIRequest"]})


def test_a_missing_message_header_is_refused() -> None:
    doc = document()
    del doc["SaleToPOIRequest"]["MessageHeader"]
    assert failure(doc) == "SaleToPOIRequest.MessageHeader is required"
    doc["SaleToPOIRequest"]["MessageHeader"] = "header"
    assert failure(doc) == "SaleToPOIRequest.MessageHeader is required"


def test_a_missing_admin_request_is_refused() -> None:
    doc = document()
    del doc["SaleToPOIRequest"]["AdminRequest"]
    assert failure(doc) == "SaleToPOIRequest.AdminRequest is required"


@pytest.mark.parametrize(
    "name", ["ProtocolVersion", "MessageClass", "MessageCategory", "MessageType"]
)
def test_begin_without_a_fixed_header_field_is_refused(name: str) -> None:
    assert failure(document(header=header(**{name: ...}))) == f"MessageHeader.{name} is required"
    assert failure(document(header=header(**{name: ""}))) == f"MessageHeader.{name} is required"


@pytest.mark.parametrize(
    ("name", "wrong", "expected"),
    [
        ("ProtocolVersion", "2.0", "3.0"),
        ("ProtocolVersion", 3.0, "3.0"),
        ("MessageClass", "Device", "Service"),
        ("MessageCategory", "Payment", "Admin"),
        ("MessageType", "Response", "Request"),
    ],
)
def test_begin_with_a_wrong_header_field_is_refused(
    name: str, wrong: object, expected: str
) -> None:
    text = failure(document(header=header(**{name: wrong})))
    assert text == f"MessageHeader.{name} must be {expected}"


@pytest.mark.parametrize("name", ["ServiceID", "SaleID", "POIID"])
def test_begin_without_an_id_field_is_refused(name: str) -> None:
    assert failure(document(header=header(**{name: ...}))) == f"MessageHeader.{name} is required"


@pytest.mark.parametrize("wrong", [7, "x" * 65, ["TERM"]])
def test_an_id_field_that_is_not_a_short_string_is_refused(wrong: object) -> None:
    text = failure(document(header=header(POIID=wrong)))
    assert text == "MessageHeader.POIID must be a string of 1-64 characters"


def service_doc(value: object) -> dict[str, Any]:
    doc = document()
    doc["SaleToPOIRequest"]["AdminRequest"]["ServiceIdentification"] = value
    return doc


@pytest.mark.parametrize("value", [None, "", 5, {"Session": {}}])
def test_a_missing_service_identification_is_refused(value: object) -> None:
    text = failure(service_doc(value))
    assert text == "AdminRequest.ServiceIdentification is required (Base64 JSON)"


@pytest.mark.parametrize("value", ["not base64!", "abc", "eyJhIjox fQ=="])
def test_bad_base64_is_refused(value: str) -> None:
    assert failure(service_doc(value)) == "AdminRequest.ServiceIdentification is not valid Base64"


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b'{"Session": NaN}', b"{"])
def test_base64_of_something_that_is_not_json_is_refused(raw: bytes) -> None:
    text = failure(service_doc(b64(raw)))
    assert text == "AdminRequest.ServiceIdentification does not decode to JSON"


@pytest.mark.parametrize("value", [[1, 2], "Begin", 5, None])
def test_json_that_is_not_an_object_is_refused(value: object) -> None:
    text = failure(service_doc(b64(value)))
    assert text == "AdminRequest.ServiceIdentification must decode to a JSON object"


def test_an_overlong_service_identification_is_refused() -> None:
    assert "too long" in failure(service_doc("A" * 16_388))


@pytest.mark.parametrize("session", [..., None, "table-12", ["table-12"]])
def test_service_identification_without_a_session_is_refused(session: object) -> None:
    text = failure(document(begin_service(Session=session)))
    assert text == "ServiceIdentification.Session is required"


@pytest.mark.parametrize("session_id", [None, "", "has space", "x" * 65, 12, "tablé"])
def test_a_bad_session_id_is_refused(session_id: object) -> None:
    session = {"Type": "Begin"} if session_id is None else {"Id": session_id, "Type": "Begin"}
    text = failure(document(begin_service(Session=session)))
    assert text.startswith("ServiceIdentification.Session.Id must be")


@pytest.mark.parametrize("session_type", [None, "begin", "Start", "END", 1])
def test_a_session_type_other_than_begin_or_end_is_refused(session_type: object) -> None:
    text = failure(document(begin_service(Session={"Id": "s", "Type": session_type})))
    assert text == "ServiceIdentification.Session.Type must be Begin or End"


@pytest.mark.parametrize("value", [..., None, [], {}, "Payment", 5])
def test_begin_without_an_operation_is_refused(value: object) -> None:
    text = failure(document(begin_service(Operation=value)))
    if value == {}:  # one empty object: its Type is missing
        assert text.startswith("ServiceIdentification.Operation[0].Type must be one of")
    else:
        assert text == "ServiceIdentification.Operation is required for Begin"


def test_an_operation_list_item_that_is_not_an_object_is_refused() -> None:
    text = failure(document(begin_service(Operation=[operation(), "Payment"])))
    assert text == "ServiceIdentification.Operation[1] must be an object"


@pytest.mark.parametrize("op_type", [None, "Refund", "payment", "CardAcquisition"])
def test_an_operation_of_another_type_is_refused(op_type: object) -> None:
    text = failure(document(begin_service(Operation=[operation(Type=op_type)])))
    assert text == (
        "ServiceIdentification.Operation[0].Type must be one of "
        "InputRequest, DisplayRequest, Payment"
    )


@pytest.mark.parametrize("variant", [..., None, "Waiting", "waitingscreen"])
def test_an_operation_of_another_variant_is_refused(variant: object) -> None:
    text = failure(document(begin_service(Operation=[operation(Variant=variant)])))
    assert text == "ServiceIdentification.Operation[0].Variant must be WaitingScreen"


@pytest.mark.parametrize(
    "ui",
    [
        ...,
        None,
        {},
        {"WaitingScreenTimeoutMs": 0},
        {"WaitingScreenTimeoutMs": -1},
        {"WaitingScreenTimeoutMs": True},
        {"WaitingScreenTimeoutMs": 1500.0},
        {"WaitingScreenTimeoutMs": "5000"},
    ],
)
def test_the_waiting_screen_timeout_must_be_a_positive_integer(ui: object) -> None:
    text = failure(document(begin_service(Operation=operation(UserInterfaceData=ui))))
    assert text == (
        "ServiceIdentification.Operation[0].UserInterfaceData.WaitingScreenTimeoutMs "
        "must be a positive integer"
    )


def test_a_waiting_screen_timeout_above_the_maximum_is_refused() -> None:
    ui = {"WaitingScreenTimeoutMs": MAX_WAITING_SCREEN_MS + 1}
    text = failure(document(begin_service(Operation=operation(UserInterfaceData=ui))))
    assert text.endswith(f"WaitingScreenTimeoutMs must be at most {MAX_WAITING_SCREEN_MS}")
    ui = {"WaitingScreenTimeoutMs": MAX_WAITING_SCREEN_MS}
    parsed = parse_terminal_api_request(
        document(begin_service(Operation=operation(UserInterfaceData=ui)))
    )
    assert parsed["operations"][0]["waitingScreenTimeoutMs"] == MAX_WAITING_SCREEN_MS


def test_the_same_operation_type_twice_is_refused() -> None:
    ops = [operation(Type="Payment"), operation(Type="Payment")]
    text = failure(document(begin_service(Operation=ops)))
    assert text == "ServiceIdentification.Operation[1].Type Payment is listed twice"


def test_a_failure_is_raised_before_any_later_part_is_read() -> None:
    """The header check of a Begin comes with the operations: a bad header alone fails it."""
    text = failure(document(begin_service(Operation=[operation()]), header(POIID=...)))
    assert text == "MessageHeader.POIID is required"


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (document(header=header(POIID="TERM\u0000")), "SaleToPOIRequest.MessageHeader.POIID"),
        (document(header=header(SaleID="\udc00")), "SaleToPOIRequest.MessageHeader.SaleID"),
        ({"SaleToPOIRequest": {"\ud800": 1}}, "SaleToPOIRequest keys"),
    ],
)
def test_nul_and_lone_surrogates_are_message_format_failures(doc: object, where: str) -> None:
    # Found by tests/e2e/test_fuzz.py: the POIID lookup raised on either (a 500).
    assert failure(doc) == f"{where} must not contain NUL characters or unpaired surrogates"
