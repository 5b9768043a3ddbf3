"""Payment payload validation: pure functions, no database."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from payments.currencies import MINOR_UNITS, minor_units
from payments.validation import (
    find_card_number,
    format_amount,
    luhn_valid,
    mask_card_numbers,
    parse_amount,
    validate_payment_request,
    validate_payment_response,
)
from posgateway.core.protocol import BadRequest

VISA = "4111111111111111"  # Luhn-valid test card
NOT_LUHN = "4111111111111112"


def request(**fields: object) -> dict[str, object]:
    data: dict[str, object] = {"transactionId": "TXN-1", "amount": "12.50", "currency": "USD"}
    data.update(fields)
    return {key: value for key, value in data.items() if value is not ...}


def refused(data: object) -> str:
    with pytest.raises(BadRequest) as info:
        validate_payment_request(data)
    assert info.value.to_frame()["error"] == "Bad Request"
    return info.value.message


def refused_response(data: object) -> str:
    with pytest.raises(BadRequest) as info:
        validate_payment_response(data)
    return info.value.message


def nested(depth: int) -> dict[str, object]:
    """An object of exactly ``depth`` levels: {"a": {"a": ... {}}}."""
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# -- currencies ------------------------------------------------------------------------------


def test_currency_list_has_the_usual_exponents() -> None:
    assert MINOR_UNITS["USD"] == 2
    assert MINOR_UNITS["EUR"] == 2
    assert MINOR_UNITS["JPY"] == 0
    assert MINOR_UNITS["KWD"] == 3
    assert MINOR_UNITS["BHD"] == 3
    assert MINOR_UNITS["CLF"] == 4
    assert MINOR_UNITS["UYW"] == 4
    assert MINOR_UNITS["UYI"] == 0


def test_currency_list_is_the_current_one() -> None:
    for code in ("ZWG", "VES", "SLE", "STN", "MRU", "XCG", "USN", "CHE", "CHW", "BOV", "COU"):
        assert code in MINOR_UNITS
    for gone in ("HRK", "SLL", "VEF", "ZWL", "STD", "MRO", "LTL"):
        assert gone not in MINOR_UNITS


def test_currency_list_leaves_out_codes_without_minor_units() -> None:
    for code in ("XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XXX", "XTS", "XBA"):
        assert code not in MINOR_UNITS


def test_minor_units_lookup_is_exact() -> None:
    assert minor_units("KWD") == 3
    assert minor_units("usd") is None
    assert minor_units("XYZ") is None


# -- the whole request -----------------------------------------------------------------------


def test_seed_example_is_accepted_and_normalised() -> None:
    seed = {
        "transactionId": "TXN-20240115-001",
        "amount": "99.99",
        "currency": "USD",
        "paymentMethod": "CARD",
        "products": [{"id": "PROD-001", "name": "Widget", "price": "99.99", "quantity": 1}],
        "customerInfo": {"customerId": "CUST-123", "email": "customer@example.com"},
        "metadata": {"orderId": "ORD-12345"},
    }
    original = copy.deepcopy(seed)
    assert validate_payment_request(seed) == original
    assert seed == original  # the input is not changed


def test_minimal_request_gets_defaults() -> None:
    assert validate_payment_request(request(amount="5")) == {
        "transactionId": "TXN-1",
        "amount": "5.00",
        "currency": "USD",
        "paymentMethod": "CARD",
        "products": [],
        "customerInfo": {},
        "metadata": {},
    }


def test_result_is_a_new_object() -> None:
    metadata = {"note": "hello"}
    result = validate_payment_request(request(metadata=metadata))
    assert result["metadata"] == metadata
    assert result["metadata"] is not metadata


def test_null_optional_fields_get_defaults() -> None:
    result = validate_payment_request(
        request(paymentMethod=None, products=None, customerInfo=None, metadata=None)
    )
    assert result["paymentMethod"] == "CARD"
    assert result["products"] == []
    assert result["customerInfo"] == {}
    assert result["metadata"] == {}


@pytest.mark.parametrize("data", [None, [], "x", 12, True])
def test_request_that_is_not_an_object_is_refused(data: object) -> None:
    assert refused(data) == "paymentRequest must be an object"


def test_unknown_key_is_refused_by_name() -> None:
    assert refused(request(foo=1)) == "paymentRequest.foo is not a known field"


def test_misspelt_key_is_refused_with_a_hint() -> None:
    message = refused({"transactionID": "T", "amount": "1", "currency": "USD"})
    assert message == (
        'paymentRequest.transactionID is not a known field (did you mean "transactionId"?)'
    )


def test_odd_unknown_key_is_quoted_in_the_path() -> None:
    assert refused(request(**{"a b": 1})) == 'paymentRequest["a b"] is not a known field'


@pytest.mark.parametrize("field", ["transactionId", "amount", "currency"])
def test_missing_required_field_is_refused(field: str) -> None:
    assert refused(request(**{field: ...})) == f"paymentRequest.{field} is required"


def test_transaction_id_is_checked_before_amount_and_currency() -> None:
    assert refused({"amount": 12, "currency": "usd"}) == "paymentRequest.transactionId is required"


def test_amount_syntax_is_checked_before_currency() -> None:
    message = refused(request(amount=12.5, currency="usd"))
    assert message == 'paymentRequest.amount must be a decimal string such as "12.50"'


# -- transactionId ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["A", "x" * 64, "TXN-2024/01_15:001", "!~"])
def test_transaction_id_printable_ascii_is_accepted(value: str) -> None:
    assert validate_payment_request(request(transactionId=value))["transactionId"] == value


@pytest.mark.parametrize("value", ["", "x" * 65, "TXN 1", "TXN-é", "TXN\t1", 12345, ["T"]])
def test_transaction_id_outside_the_rule_is_refused(value: object) -> None:
    assert refused(request(transactionId=value)) == (
        "paymentRequest.transactionId must be 1 to 64 printable ASCII characters without spaces"
    )


# -- amount ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.3", "USD", "12.30"),
        ("12.50", "USD", "12.50"),
        ("12", "USD", "12.00"),
        ("1500", "JPY", "1500"),
        ("1.5", "KWD", "1.500"),
        ("1.234", "KWD", "1.234"),
        ("0.0001", "CLF", "0.0001"),
        ("007.10", "USD", "7.10"),
        ("0.01", "USD", "0.01"),
        ("999999999999.99", "USD", "999999999999.99"),
        ("0000000000001", "USD", "1.00"),
    ],
)
def test_amount_is_normalised_to_the_currency_minor_units(
    amount: str, currency: str, expected: str
) -> None:
    result = validate_payment_request(request(amount=amount, currency=currency))
    assert result["amount"] == expected


@pytest.mark.parametrize("amount", [12.5, 12, 0, True, [], {"v": "1"}])
def test_amount_that_is_not_a_string_is_refused(amount: object) -> None:
    message = refused(request(amount=amount))
    assert message == 'paymentRequest.amount must be a decimal string such as "12.50"'


@pytest.mark.parametrize(
    "amount",
    [
        "-5",
        "+5",
        "1e5",
        "1E5",
        "١٢",  # Arabic-Indic digits
        "\uff11\uff12",  # full-width digits
        " 12",
        "12 ",
        "1_000",
        "1,000",
        "12.",
        ".5",
        "1.2.3",
        "",
        "NaN",
        "Infinity",
        "0x10",
        "12\n",
    ],
)
def test_amount_with_bad_syntax_is_refused(amount: str) -> None:
    message = refused(request(amount=amount))
    assert message == 'paymentRequest.amount must be a decimal string such as "12.50"'


@pytest.mark.parametrize("amount", ["0", "0.00", "000", "0.0"])
def test_zero_amount_is_refused(amount: str) -> None:
    assert refused(request(amount=amount)) == "paymentRequest.amount must be greater than zero"


def test_thirteen_integer_digits_are_refused() -> None:
    message = refused(request(amount="1234567890123"))
    assert message == "paymentRequest.amount has more than 12 digits before the point"


def test_leading_zeros_do_not_count_as_integer_digits() -> None:
    assert validate_payment_request(request(amount="000123456789012.5"))["amount"] == (
        "123456789012.50"
    )


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1500.5", "JPY", "paymentRequest.amount has more decimals than JPY allows (0)"),
        ("12.345", "USD", "paymentRequest.amount has more decimals than USD allows (2)"),
        ("12.300", "USD", "paymentRequest.amount has more decimals than USD allows (2)"),
        ("1.2345", "KWD", "paymentRequest.amount has more decimals than KWD allows (3)"),
    ],
)
def test_more_decimals_than_the_currency_allows_are_refused(
    amount: str, currency: str, message: str
) -> None:
    assert refused(request(amount=amount, currency=currency)) == message


# -- currency --------------------------------------------------------------------------------


def test_lower_case_currency_is_refused() -> None:
    assert refused(request(currency="usd")) == (
        'paymentRequest.currency must be upper-case, such as "USD"'
    )


@pytest.mark.parametrize("currency", ["XYZ", "US", "USDD", "", 840, "XAU", "HRK", "XXX"])
def test_unknown_currency_is_refused(currency: object) -> None:
    assert refused(request(currency=currency)) == (
        "paymentRequest.currency is not an ISO 4217 currency code"
    )


# -- paymentMethod ---------------------------------------------------------------------------


def test_payment_method_is_kept() -> None:
    assert validate_payment_request(request(paymentMethod="QR Code"))["paymentMethod"] == (
        "QR Code"
    )


@pytest.mark.parametrize("method", ["", "x" * 33, "CARD\n", 1, ["CARD"]])
def test_bad_payment_method_is_refused(method: object) -> None:
    assert refused(request(paymentMethod=method)) == (
        "paymentRequest.paymentMethod must be a string of 1 to 32 printable characters"
    )


# -- products --------------------------------------------------------------------------------


def test_product_price_is_normalised_and_other_keys_kept() -> None:
    products = [
        {"id": "P1", "name": "Widget", "price": "3.5", "quantity": 2, "sku": "W-1", "tax": 0.2},
        {"price": "0", "quantity": 1, "gift": True, "note": None},
    ]
    result = validate_payment_request(request(products=products))
    assert result["products"] == [
        {"id": "P1", "name": "Widget", "price": "3.50", "quantity": 2, "sku": "W-1", "tax": 0.2},
        {"price": "0.00", "quantity": 1, "gift": True, "note": None},
    ]


def test_product_price_follows_the_currency() -> None:
    products = [{"price": "100", "quantity": 1}]
    result = validate_payment_request(request(amount="100", currency="JPY", products=products))
    assert result["products"][0]["price"] == "100"
    message = refused(
        request(amount="100", currency="JPY", products=[{"price": "1.5", "quantity": 1}])
    )
    assert message == "paymentRequest.products[0].price has more decimals than JPY allows (0)"


@pytest.mark.parametrize("price", [3.5, "-1", "1e2", ".5", "abc"])
def test_product_price_with_bad_syntax_is_refused(price: object) -> None:
    products = [{"price": "1", "quantity": 1}, {"price": price, "quantity": 1}]
    assert refused(request(products=products)) == (
        'paymentRequest.products[1].price must be a decimal string such as "12.50"'
    )


def test_product_without_price_or_quantity_is_refused() -> None:
    assert refused(request(products=[{"quantity": 1}])) == (
        "paymentRequest.products[0].price is required"
    )
    assert refused(request(products=[{"price": "1"}])) == (
        "paymentRequest.products[0].quantity is required"
    )


@pytest.mark.parametrize("quantity", [True, False, 0, -1, 1.0, "1", 1_000_001])
def test_bad_quantity_is_refused(quantity: object) -> None:
    products = [{"price": "1", "quantity": 1}, {"price": "1", "quantity": 1}]
    products.append({"price": "1", "quantity": quantity})
    assert refused(request(products=products)) == (
        "paymentRequest.products[2].quantity must be a whole number from 1 to 1000000"
    )


def test_largest_quantity_is_accepted() -> None:
    products = [{"price": "1", "quantity": 1_000_000}]
    assert validate_payment_request(request(products=products))["products"][0]["quantity"] == (
        1_000_000
    )


def test_products_must_be_a_list_of_objects() -> None:
    assert refused(request(products={"price": "1"})) == "paymentRequest.products must be a list"
    assert refused(request(products=["x"])) == "paymentRequest.products[0] must be an object"


def test_at_most_1000_products() -> None:
    products = [{"price": "1", "quantity": 1}] * 1000
    assert len(validate_payment_request(request(products=products))["products"]) == 1000
    assert refused(request(products=[*products, products[0]])) == (
        "paymentRequest.products must have at most 1000 items"
    )


@pytest.mark.parametrize("key", ["id", "name"])
def test_product_id_and_name_are_short_strings(key: str) -> None:
    ok = [{"price": "1", "quantity": 1, key: "x" * 200}]
    assert validate_payment_request(request(products=ok))["products"][0][key] == "x" * 200
    for bad in ("x" * 201, 5, {"a": 1}):
        message = refused(request(products=[{"price": "1", "quantity": 1, key: bad}]))
        assert (
            message
            == f"paymentRequest.products[0].{key} must be a string of at most 200 characters"
        )


def test_product_extra_keys_must_be_scalars() -> None:
    products = [{"price": "1", "quantity": 1, "options": {"size": "L"}}]
    assert refused(request(products=products)) == (
        "paymentRequest.products[0].options must be a string, number, boolean or null"
    )


def test_card_number_in_product_name_is_refused() -> None:
    products = [{"price": "1", "quantity": 1, "name": f"card {VISA}"}]
    assert refused(request(products=products)) == (
        "paymentRequest.products[0].name must not contain a card number"
    )


def test_card_number_in_other_product_text_is_refused() -> None:
    products = [{"price": "1", "quantity": 1, "description": VISA}]
    assert refused(request(products=products)) == (
        "paymentRequest.products[0].description must not contain a card number"
    )


def test_product_identifiers_are_not_inspected() -> None:
    products = [{"price": "1", "quantity": 1, "id": VISA, "ean": VISA, "variantId": VISA}]
    result = validate_payment_request(request(products=products))
    assert result["products"][0]["id"] == VISA


# -- customerInfo and metadata ----------------------------------------------------------------


def test_card_number_in_metadata_note_is_refused() -> None:
    assert refused(request(metadata={"note": VISA})) == (
        "paymentRequest.metadata.note must not contain a card number"
    )


@pytest.mark.parametrize("key", ["orderId", "customerId", "order_id", "transactionId"])
def test_card_like_number_in_identifier_field_is_accepted(key: str) -> None:
    result = validate_payment_request(request(metadata={key: VISA}))
    assert result["metadata"] == {key: VISA}


def test_card_number_in_customer_info_is_refused() -> None:
    message = refused(request(customerInfo={"customerId": "C1", "remark": f"paid {VISA}"}))
    assert message == "paymentRequest.customerInfo.remark must not contain a card number"


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "card: 4111 1111 1111 1111 exp 12/26",
        "4111 1111 1111 1111 12 26",
        "378282246310005",  # Amex, 15 digits
        "3782 822463 10005",  # Amex as printed
        "6011111111111117",  # Discover
        "4222222222222",  # 13-digit Visa
    ],
)
def test_card_numbers_as_people_type_them_are_found(text: str) -> None:
    assert refused(request(metadata={"note": text})) == (
        "paymentRequest.metadata.note must not contain a card number"
    )


def test_card_number_deep_inside_metadata_is_refused_with_its_path() -> None:
    metadata = {"lines": [{"text": "ok"}, {"text": f"x{VISA}x"}]}
    assert refused(request(metadata=metadata)) == (
        "paymentRequest.metadata.lines[1].text must not contain a card number"
    )


@pytest.mark.parametrize(
    "text",
    [
        NOT_LUHN,
        "411111111111",  # 12 digits
        "41111111111111110",  # 17 digits failing Luhn
        "41111111111111111111",  # 20 contiguous digits hold no card number
        "4111  1111  1111  1111",  # double spaces break the number
        "call +1 555-123-4567",
        "2024-01-15 10:35:30",
    ],
)
def test_text_without_a_card_number_is_accepted(text: str) -> None:
    result = validate_payment_request(request(metadata={"note": text}))
    assert result["metadata"]["note"] == text


def test_metadata_keeps_json_values() -> None:
    metadata = {"a": 1, "b": 1.5, "c": True, "d": None, "e": [1, "x", {"f": []}], "g": "é"}
    assert validate_payment_request(request(metadata=metadata))["metadata"] == metadata


def test_metadata_and_customer_info_must_be_objects() -> None:
    assert refused(request(metadata=[1])) == "paymentRequest.metadata must be an object"
    assert refused(request(customerInfo="x")) == "paymentRequest.customerInfo must be an object"


def test_metadata_nested_eight_levels_is_accepted() -> None:
    result = validate_payment_request(request(metadata=nested(8)))
    assert result["metadata"] == nested(8)


def test_metadata_nested_too_deep_is_refused() -> None:
    assert refused(request(metadata=nested(9))) == (
        "paymentRequest.metadata.a.a.a.a.a.a.a.a is nested too deeply (at most 8 levels)"
    )


def test_lists_count_as_nesting_levels() -> None:
    value: object = []
    for _ in range(8):
        value = [value]
    message = refused(request(customerInfo={"x": value}))
    assert message.endswith("is nested too deeply (at most 8 levels)")
    assert message.startswith("paymentRequest.customerInfo.x[0]")


def test_non_finite_numbers_are_refused() -> None:
    assert refused(request(metadata={"x": float("nan")})) == (
        "paymentRequest.metadata.x must be a finite number"
    )


def test_non_json_values_are_refused() -> None:
    assert refused(request(metadata={"x": {1, 2}})) == (
        "paymentRequest.metadata.x must be a JSON value"
    )
    assert refused(request(metadata={1: "x"})) == "paymentRequest.metadata keys must be strings"


# -- the terminal's response ------------------------------------------------------------------


def test_response_is_validated_and_defaults_added() -> None:
    result = validate_payment_response({"transactionId": "TXN-1", "status": "SUCCESS"})
    assert result == {
        "transactionId": "TXN-1",
        "status": "SUCCESS",
        "authorizationCode": None,
        "errorMessage": None,
    }


def test_response_keeps_extra_fields() -> None:
    data = {
        "transactionId": "TXN-1",
        "status": "DECLINED",
        "authorizationCode": None,
        "errorMessage": "Insufficient funds",
        "maskedPan": "************1111",
        "receipt": {"lines": ["VISA", "AID A0000000031010"]},
        "amount": "12.50",
    }
    assert validate_payment_response(copy.deepcopy(data)) == data


@pytest.mark.parametrize("status", ["SUCCESS", "DECLINED", "FAILED", "CANCELLED"])
def test_response_statuses_are_accepted(status: str) -> None:
    assert validate_payment_response({"transactionId": "T", "status": status})["status"] == status


@pytest.mark.parametrize("status", ["success", "TIMEOUT", "IN_PROGRESS", "", 1])
def test_unknown_response_status_is_refused(status: object) -> None:
    assert refused_response({"transactionId": "T", "status": status}) == (
        "paymentResponse.status must be one of SUCCESS, DECLINED, FAILED, CANCELLED"
    )


def test_response_requires_transaction_id_and_status() -> None:
    assert refused_response({"status": "SUCCESS"}) == "paymentResponse.transactionId is required"
    assert refused_response({"transactionId": "T"}) == "paymentResponse.status is required"
    assert refused_response({"transactionId": "T X", "status": "SUCCESS"}) == (
        "paymentResponse.transactionId must be 1 to 64 printable ASCII characters without spaces"
    )
    assert refused_response("x") == "paymentResponse must be an object"


def test_response_authorization_code_and_error_message_limits() -> None:
    ok = {"transactionId": "T", "status": "FAILED"}
    assert validate_payment_response({**ok, "authorizationCode": "A" * 64})
    assert validate_payment_response({**ok, "errorMessage": "e" * 1000})
    assert refused_response({**ok, "authorizationCode": "A" * 65}) == (
        "paymentResponse.authorizationCode must be a string of at most 64 characters or null"
    )
    assert refused_response({**ok, "errorMessage": 5}) == (
        "paymentResponse.errorMessage must be a string of at most 1000 characters or null"
    )


def test_response_masks_card_numbers_keeping_the_last_four() -> None:
    data = {
        "transactionId": "TXN-1",
        "status": "SUCCESS",
        "cardNumber": VISA,
        "errorMessage": f"card {VISA} ok",
        "receipt": {"lines": ["CARD 4111 1111 1111 1111", {"pan": "378282246310005"}]},
        "customerId": VISA,
    }
    result = validate_payment_response(data)
    assert result["cardNumber"] == "************1111"
    assert result["errorMessage"] == "card ************1111 ok"
    assert result["receipt"] == {"lines": ["CARD **** **** **** 1111", {"pan": "***********0005"}]}
    assert result["customerId"] == "************1111"
    assert data["cardNumber"] == VISA  # the input is not changed


def test_response_masks_card_numbers_sent_as_json_numbers() -> None:
    data = {"transactionId": "T", "status": "SUCCESS", "pan": int(VISA), "count": 3}
    result = validate_payment_response(data)
    assert result["pan"] == "************1111"
    assert result["count"] == 3


def test_response_leaves_non_luhn_digits_untouched() -> None:
    data = {"transactionId": "T", "status": "SUCCESS", "reference": NOT_LUHN, "n": 12}
    assert validate_payment_response(dict(data))["reference"] == NOT_LUHN


def test_response_transaction_id_is_never_masked() -> None:
    result = validate_payment_response({"transactionId": VISA, "status": "SUCCESS"})
    assert result["transactionId"] == VISA


def test_response_nested_too_deep_is_refused() -> None:
    data = {"transactionId": "T", "status": "SUCCESS", "extra": nested(7)}
    assert validate_payment_response(data)["extra"] == nested(7)
    data["extra"] = nested(8)
    assert refused_response(data) == (
        "paymentResponse.extra.a.a.a.a.a.a.a is nested too deeply (at most 8 levels)"
    )


# -- helpers ---------------------------------------------------------------------------------


def test_luhn_check() -> None:
    assert luhn_valid(VISA)
    assert luhn_valid("79927398713")
    assert not luhn_valid(NOT_LUHN)
    assert not luhn_valid("41111111111111110")
    assert not luhn_valid("")
    assert not luhn_valid("4111-1111")
    assert not luhn_valid("١٢٣")


def test_find_card_number() -> None:
    assert find_card_number(f"pan={VISA};")
    assert find_card_number("5555 5555 5555 4444")
    assert not find_card_number(NOT_LUHN)
    assert not find_card_number("no digits here")


def test_mask_card_numbers_returns_a_copy() -> None:
    value = {"a": [VISA, NOT_LUHN, 1, None, True], "b": "x"}
    masked = mask_card_numbers(value)
    assert masked == {"a": ["************1111", NOT_LUHN, 1, None, True], "b": "x"}
    assert value["a"][0] == VISA
    assert masked["a"] is not value["a"]


def test_mask_keeps_separators() -> None:
    assert mask_card_numbers("4111-1111-1111-1111") == "****-****-****-1111"


@pytest.mark.parametrize(
    ("value", "currency", "expected"),
    [
        (Decimal("12.3"), "USD", "12.30"),
        (Decimal(1500), "JPY", "1500"),
        (Decimal("1.5"), "KWD", "1.500"),
        (Decimal("12.300"), "USD", "12.30"),
        (Decimal("1E+3"), "USD", "1000.00"),
        (Decimal("-0"), "USD", "0.00"),
        (Decimal("-5.5"), "EUR", "-5.50"),
        (Decimal("999999999999.99"), "USD", "999999999999.99"),
    ],
)
def test_format_amount(value: Decimal, currency: str, expected: str) -> None:
    assert format_amount(value, currency) == expected


def test_format_amount_refuses_to_round() -> None:
    with pytest.raises(ValueError, match="more decimals than USD allows"):
        format_amount(Decimal("12.345"), "USD")
    with pytest.raises(ValueError, match="ISO 4217"):
        format_amount(Decimal(1), "usd")
    with pytest.raises(ValueError, match="finite"):
        format_amount(Decimal("NaN"), "USD")


def test_parse_amount() -> None:
    assert parse_amount("12.3", "USD") == "12.30"
    assert parse_amount("007.10") == "7.10"
    assert parse_amount("0", "USD", allow_zero=True) == "0.00"
    with pytest.raises(BadRequest) as info:
        parse_amount("1,5", path="amount_min")
    assert info.value.message == 'amount_min must be a decimal string such as "12.50"'
    with pytest.raises(BadRequest) as info:
        parse_amount("0", path="amount_min")
    assert info.value.message == "amount_min must be greater than zero"
    with pytest.raises(ValueError, match="ISO 4217"):
        parse_amount("1", "ABC")


def test_an_error_may_name_a_status_of_its_own():
    """``status`` in an error frame is the transaction's, not the HTTP status of the error."""
    from posgateway.core.protocol import Conflict

    frame = Conflict("Transaction already completed", transactionId="T-1", status="SUCCESS")
    assert frame.to_frame() == {
        "error": "Conflict",
        "message": "Transaction already completed",
        "transactionId": "T-1",
        "status": "SUCCESS",
    }
