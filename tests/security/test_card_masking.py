"""Every value a terminal sends is masked before it is stored, logged, pushed or exported.

A property test generates card numbers in every JSON shape a device can send them in (a string,
an integer, a float, grouped, inside text, as an object key) at any position of any nested answer,
and finds none of them in what the validation hands on. The payment answer, the refund answer,
the display answer and the input answer (every input type) all pass through it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.validation import luhn_valid, mask_card_numbers, validate_payment_response
from sessions.validation import validate_display_response, validate_input_response

VISA = "4111111111111111"
AMEX = "378282246310005"


def _with_check_digit(body: str) -> str:
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError(body)


# Card numbers of 13 to 19 digits, first digit not 0 (so an integer keeps every digit).
pans = st.builds(
    lambda first, rest: _with_check_digit(first + rest),
    st.sampled_from("3456789"),
    st.integers(min_value=11, max_value=17).flatmap(
        lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n)
    ),
)


def _spellings(pan: str) -> st.SearchStrategy[Any]:
    """One card number as a device may send it: the JSON value, and the digits that must go."""
    grouped = " ".join(pan[i : i + 4] for i in range(0, len(pan), 4))
    options: list[Any] = [pan, f"card {pan} ok", grouped, "-".join(grouped.split()), int(pan)]
    if int(float(pan)) == int(pan):  # a float holds it exactly (up to 2**53)
        options.append(float(pan))
    return st.sampled_from(options)


def _leaks(pan: str, output: Any) -> bool:
    """Whether ``output`` still shows the card number's digits before its last four (grouped
    or not)."""
    text = re.sub(r"(?<=[0-9])[ -](?=[0-9])", "", json.dumps(output))
    return pan[:-4] in text


def _placed(value: Any, pan: str) -> st.SearchStrategy[Any]:
    """``value`` somewhere in a nested JSON answer: a value, a list item, or an object key."""
    leaf = st.just(value)
    as_key = st.just({pan: "x"}) if isinstance(value, str) else leaf
    return st.recursive(
        st.one_of(leaf, as_key),
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3),
            st.dictionaries(st.sampled_from(["receipt", "card", "data", "x"]), inner, min_size=1),
        ),
        max_leaves=4,
    )


answers = pans.flatmap(
    lambda pan: _spellings(pan).flatmap(
        lambda value: st.tuples(st.just(pan), _placed(value, pan), st.just(value))
    )
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(answers)
def test_no_card_number_survives_any_terminal_answer(case):
    pan, nested, value = case
    payment = validate_payment_response(
        {"transactionId": "T-1", "status": "SUCCESS", "extra": nested}
    )
    refund = validate_payment_response(
        {"transactionId": "R-1", "status": "SUCCESS", "extra": nested}, root="refundResponse"
    )
    text = value if isinstance(value, str) else pan
    display = validate_display_response(
        {"requestId": "D-1", "status": "FAILED", "errorMessage": text}
    )
    failed_input = validate_input_response(
        {"requestId": "I-1", "status": "FAILED", "errorMessage": text},
        request={"type": "text"},
    )
    typed = validate_input_response(
        {"requestId": "I-2", "status": "SUCCESS", "value": text}, request={"type": "text"}
    )
    outputs = [payment, refund, display, failed_input, typed, mask_card_numbers(nested)]
    if len(pan) <= 15:
        outputs.append(
            validate_input_response(
                {"requestId": "I-3", "status": "SUCCESS", "value": int(pan)},
                request={"type": "number"},
            )
        )
    assert [o for o in outputs if _leaks(pan, o)] == []


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (float(VISA), "************1111"),
        (-float(VISA), "-************1111"),
        (int(VISA), "************1111"),
        (float(AMEX), "***********0005"),
        (4006381333931.5, 4006381333931.5),  # no card number: kept as the number it is
        (0.5, 0.5),
        (12, 12),
    ],
)
def test_a_card_number_sent_as_a_float_is_masked_like_an_integer(sent, stored):
    answer = validate_payment_response({"transactionId": "T-1", "status": "SUCCESS", "pan": sent})
    assert answer["pan"] == stored


def test_display_and_input_error_messages_are_masked():
    display = validate_display_response(
        {"requestId": "D-1", "status": "FAILED", "errorMessage": f"card {VISA} refused"}
    )
    assert display["errorMessage"] == "card ************1111 refused"
    answer = validate_input_response(
        {"requestId": "I-1", "status": "CANCELLED", "errorMessage": f"read {AMEX}"},
        request={"type": "text"},
    )
    assert answer["errorMessage"] == "read ***********0005"


@pytest.mark.parametrize("typed", [int(AMEX), AMEX, float(AMEX)])
def test_an_amex_number_typed_as_a_number_input_is_masked(typed):
    answer = validate_input_response(
        {"requestId": "I-1", "status": "SUCCESS", "value": typed}, request={"type": "number"}
    )
    assert AMEX not in answer["value"]
    assert answer["value"].startswith("***********0005")


def test_an_ordinary_number_input_is_kept():
    answer = validate_input_response(
        {"requestId": "I-1", "status": "SUCCESS", "value": 42.5}, request={"type": "number"}
    )
    assert answer["value"] == "42.5"
