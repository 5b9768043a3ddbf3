"""Protocol fuzzing (issue 8): generated frames and Terminal API bodies against a real daphne.

hypothesis generates the inputs (derandomized: every CI run sends the same ones, and a failure
shows the input that caused it); they are then pipelined to a live gateway process:

- WebSocket: 10,240 frames, about half from a desktop's socket and half from a terminal's (each
  socket also gets the frames only the other kind of device may send): random JSON
  of every type, every action with its fields mutated (wrong types, huge and NaN-looking numbers,
  exponent and signed amounts, 10,000-item product lists, deep nesting, NUL, lone surrogates as
  escapes, right-to-left marks, long strings), non-JSON text and binary frames. After each one
  the client sends a separator frame (an unknown action with a counter) whose ``Bad Request``
  marks where that frame's answers end, so every frame is checked for exactly one answer.
- Terminal API: 2,048 bodies POSTed to ``/terminal-api/sync`` (and some to ``/async``): random
  JSON, mutated ``SaleToPOIRequest`` documents, and ``ServiceIdentification`` holding random
  bytes, bad Base64, Base64 of random JSON and of mutated session documents.

Nothing generated can be a valid state-changing request: the fuzzed store's own terminal is
never named (its deviceId is filtered out of every pool; its connectionId does not exist yet
when the inputs are made), and no transaction, request or session exists to be answered,
cancelled or ended. Other identifiers are real: another store's terminal by deviceId and by
connectionId, the desktop's own connectionId. So every answer must be an error in the
protocol's own form or a read (pong, terminalsResponse, a Failure document), and no row of the
database may change. The server's log must hold no traceback and no ERROR line.

The server runs with the per-connection flood guard raised (``WS_FRAMES_PER_S`` and
``WS_FRAMES_BURST``): the fuzzer pipelines thousands of frames a second, and the guard would
otherwise answer ``Too Many Requests`` in the validators' place. The guard has tests of its own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import http.client
import json
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import DeviceClient, Gateway, Store
from tests.e2e.harness import Deployment, deployment_for_this_run

# server_dependent: generated frames (binary, invalid UTF-8, over the limits) and HTTP bodies (up
# to 413) as the server parses and delivers them; its log must hold no traceback or ERROR line.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server_dependent,
    pytest.mark.usefixtures("close_clients"),
]

WS_FRAMES = 10_240
API_BODIES = 2_048
MAX_MESSAGE_BYTES = 65_536  # the contract's default; the Terminal API's body limit as well
FUZZ_SERVER_ENV = {
    "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
    # The flood guard, raised: see the module's docstring.
    "WS_FRAMES_PER_S": "1000000",
    "WS_FRAMES_BURST": "1000000",
}

# The fuzzed store: its terminal is the socket that sends terminal frames, and is never named
# in a generated frame (a payment or session addressed to it would be a valid request).
OWN_TERMINAL = "FUZZ-TERM"
OTHER_TERMINAL = "OTHER-TERM"

SEPARATOR = "fuzz-separator-"
PUSHED = {"terminalStatusUpdate"}  # frames a desktop may get unasked while the fuzzer runs
CLIENT_ERRORS = {"Bad Request", "Not Found", "Forbidden", "Payload Too Large"}
ERROR_KEYS = {"error", "message", "requestAction", "transactionId", "requestId"}
NEXO_CONDITIONS = {"MessageFormat", "NotFound", "Busy", "UnreachableHost"}
INVALID_JSON = "Invalid JSON in message body"

TABLES = (
    "terminals_group",
    "terminals_device",
    "terminals_connection",
    "payments_transaction",
    "payments_transactionevent",
    "payments_desktopmessage",
    "terminal_sessions_terminalsession",
    "terminal_sessions_terminalrequest",
)


@dataclass
class Inputs:
    frames: list[Frame]
    bodies: list[Body]
    seconds: float


def generate_inputs() -> Inputs:
    started = time.monotonic()
    frames = ws_frames(WS_FRAMES)
    bodies = api_bodies(API_BODIES)
    return Inputs(frames, bodies, time.monotonic() - started)


@dataclass
class Fuzzed:
    gateway: Gateway
    own: Store  # the fuzzed store: two desktops, one terminal (never named in an input)
    other: Store  # another store, with a terminal
    inputs: Inputs


def _start(stack: contextlib.ExitStack) -> tuple[Gateway, Store, Store]:
    deployment = stack.enter_context(deployment_for_this_run())
    gateway = Gateway(deployment, deployment.server(**FUZZ_SERVER_ENV))
    stack.callback(gateway.close)
    with ThreadPoolExecutor(max_workers=2) as pool:
        own = pool.submit(
            gateway.store, desktops=2, desktop_id="FUZZ-POS", terminal_id=OWN_TERMINAL
        )
        other = pool.submit(gateway.store, desktop_id="OTHER-POS", terminal_id=OTHER_TERMINAL)
        return gateway, own.result(), other.result()


@pytest.fixture(scope="module")
def fuzzed():
    """A gateway with two stores, and the generated inputs.

    The inputs are generated while a worker thread waits for the deployment's subprocesses
    (migrate, daphne, create_device). hypothesis stays in this thread: it reads lambdas' source
    with ast.parse, and Python 3.11 keeps ast.parse's recursion count interpreter-wide, so a
    second thread parsing at the same time (pytest, showing a traceback) fails with
    "AST constructor recursion depth mismatch".
    """
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as pool:
        started = pool.submit(_start, stack)
        inputs = generate_inputs()
        gateway, own, other = started.result()
        yield Fuzzed(gateway, own, other, inputs)


# --- Raw JSON text inside generated values ------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put into a frame as it is: tokens json.dumps cannot write (NaN, 1e999, a
    5,000-digit integer, nesting deeper than the encoder recurses)."""

    text: str


def encode(value: Any, *, ascii_only: bool = True) -> str:
    raws: list[str] = []

    def placeholder(obj: Any) -> str:
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"\x1fRAW{len(raws) - 1}\x1f"
        raise TypeError(type(obj))

    text = json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), default=placeholder)
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u001fRAW{index}\\u001f"', raw, 1)
    if not ascii_only:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: only sendable as an escape
            return encode(value, ascii_only=True)
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def decode(text: str) -> Any:
    """What the server decodes (the same parser, NaN and Infinity refused)."""
    return json.loads(text, parse_constant=_reject_constant)


# --- Strategies ---------------------------------------------------------------------------------

PANS = ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]
EDGE_STRINGS = [
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "\udfff",
    "x\udc00y",
    "\ud83d",
    "\ud83d\ude00",
    "\u202eRTL\u202c",
    "\u200f\u05d0\u05d1\u05d2",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "e\u0301\u0301\u0301",
    "\u0661\u0662\u0663",
    "\uff11\uff12\uff13",
    "\U0001d7d9\U0001d7da",
    "\t",
    "\r\n",
    "\\",
    '"',
    "'; DROP TABLE payments_transaction; --",
    "%s%s%n",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "null",
    "NaN",
    "TERM",
    "A" * 64,
    "A" * 65,
    *PANS,
]
LONG_CHARS = ["A", "\u03a9", "\u0000", "\ud800", "\U0001f600", "\u202e", "9"]
LONG_LENGTHS = [65, 201, 1_001, 16_385, 40_000, 70_000]
NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    1.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    2**53 + 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**40,
    "",
    [],
    {},
    [None],
    {"": None},
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1e999"),
    Raw("-1e999"),
    Raw("1E+2"),
    Raw("-0"),
    Raw("0.1e-400"),
]
AMOUNTS = [
    "10.00",
    "12.3",
    "1500",
    "0",
    "0.00",
    "-1.00",
    "+1.00",
    "1e3",
    "1E3",
    "1.5e2",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1_000",
    "1,00",
    " 1.00",
    "1.00 ",
    "1..0",
    "1.",
    ".5",
    ".",
    "0x1A",
    "\u0661\u0662.\u0663\u0660",
    "\uff11\uff12",
    "1.234",
    "12.300",
    "0000000000000001.00",
    "999999999999.99",
    "1000000000000.00",
    "9" * 100,
    "1/2",
    "\u00bd",
    "10.00\u0000",
    "1\u202e00",
]
CURRENCIES = ["USD", "usd", "JPY", "BHD", "EUR", "XXX", "XTS", "EUR ", "US", "USDD", "", "\u20ac"]
STATUSES = ["SUCCESS", "DECLINED", "FAILED", "CANCELLED", "TIMEOUT", "success", "PENDING", ""]
INPUT_TYPES = ["confirmation", "text", "number", "email", "phone", "menu", "signature", "MENU"]
OPERATION_TYPES = ["Payment", "DisplayRequest", "InputRequest", "payment", "Refund"]


def texts(max_size: int = 24) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=max_size),
        # Every code point, controls and lone surrogates included.
        st.text(st.characters(exclude_categories=()), max_size=max_size),
        st.sampled_from(EDGE_STRINGS),
    )


def times(text: str, count: int) -> str:
    return text * count


def long_strings() -> st.SearchStrategy[str]:
    return st.builds(times, st.sampled_from(LONG_CHARS), st.sampled_from(LONG_LENGTHS))


def nested(depth: int, kind: str) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def big_raw(name: str) -> Raw:
    """Big JSON tokens, made when drawn (hypothesis shows its strategies' literals)."""
    return Raw(
        {
            "5000 digits": "9" * 5_000,  # Python refuses to parse ints over 4,300 digits
            "1e400": "1" + "0" * 400,
            "5000 lists": "[" * 5_000 + "]" * 5_000,
            "5000 objects": '{"a":' * 5_000 + "1" + "}" * 5_000,
        }[name]
    )


def repeated(item: Any, count: int) -> list[Any]:
    return [item] * count


def big_values() -> st.SearchStrategy[Any]:
    item = st.sampled_from([{}, 1, None, "x", {"price": "1.00", "quantity": 1}])
    return st.one_of(
        st.builds(repeated, item, st.sampled_from([1_000, 1_001, 10_000])),
        st.builds(nested, st.sampled_from([8, 9, 64, 200]), st.sampled_from(["list", "dict"])),
        long_strings(),
        st.sampled_from(["5000 digits", "1e400", "5000 lists", "5000 objects"]).map(big_raw),
    )


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    texts(),
    st.sampled_from(NASTY),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(12), inner, max_size=4),
    max_leaves=12,
)
# Integers past 64 bits (a database integer's limit), for every integer field of the protocol:
# each must be a Bad Request (or a value the field may take), never an Internal Server Error.
beyond_64_bits = st.one_of(
    st.sampled_from([2**63, 2**64, 10**20, 2**200, -(2**63) - 1, -(10**20)]),
    st.integers(min_value=2**63, max_value=2**256),
    st.integers(min_value=-(2**256), max_value=-(2**63) - 1),
)


def integer_field(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An integer field's values: mostly ``usual``, also past 64 bits and any leaf."""
    return weighted((3, usual), (1, beyond_64_bits), (1, leaves))


mutants = st.one_of(st.sampled_from(NASTY), leaves, json_values, texts(), big_values())


def _slots(value: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value inside ``value``, at any depth.

    A list of more than 20 items is replaced whole, never entered: its items may all be one
    object (``[item] * 10_000``), and a change to one would be a change to all.
    """
    slots: list[tuple[Any, Any]] = []
    stack = [value]
    while stack and len(slots) < 200:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                slots.append((node, key))
                stack.append(item)
        elif isinstance(node, list) and len(node) <= 20:
            for index, item in enumerate(node):
                slots.append((node, index))
                stack.append(item)
    return slots


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any], most: int = 3) -> Any:
    """A drawn value with up to ``most`` fields replaced by anything, deleted, or added."""
    value = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(0, most))):
        slots = _slots(value)
        if not slots:
            break
        parent, key = draw(st.sampled_from(slots))
        operation = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if operation == "replace":
            parent[key] = copy.deepcopy(draw(mutants))
        elif operation == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(texts(12))] = copy.deepcopy(draw(mutants))
        else:
            parent.insert(key, copy.deepcopy(draw(mutants)))
    return value


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(_itself)


def _itself(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy


# Connection ids exist only once the sockets are open, after the inputs are made: frames name
# them by these placeholders, replaced just before sending.
OTHER_CONNECTION = "@other-store-terminal-connection@"
OWN_DESKTOP_CONNECTION = "@own-desktop-connection@"


def allowed_id(value: Any) -> bool:
    """Never the fuzzed store's own terminal: a payment or session for it could be valid."""
    return not (isinstance(value, str) and value == OWN_TERMINAL)


def terminal_ids() -> st.SearchStrategy[Any]:
    named = st.sampled_from(
        [
            OTHER_TERMINAL,
            OTHER_CONNECTION,
            OWN_DESKTOP_CONNECTION,
            "FUZZ-POS-1",
            "NOPE",
            "TERM",
            "",
            " ",
            "A" * 64,
            "A" * 65,
        ]
    )
    return weighted((3, named), (2, texts()), (1, st.sampled_from(NASTY))).filter(allowed_id)


printable_ids = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
transaction_ids = weighted((3, printable_ids), (2, texts()))
request_ids = transaction_ids
amounts = weighted(
    (4, st.sampled_from(AMOUNTS)),
    (1, st.decimals(allow_nan=True, allow_infinity=True).map(str)),
    (1, st.integers()),
    (1, beyond_64_bits),
    (1, st.floats()),
)
currencies = weighted((4, st.sampled_from(CURRENCIES)), (1, texts(4)))
free_objects = weighted(
    (3, st.dictionaries(texts(12), json_values, max_size=4)),
    (1, st.fixed_dictionaries({"note": st.sampled_from(PANS)})),
    (1, st.fixed_dictionaries({"customerId": st.sampled_from(PANS)})),
)
products = st.fixed_dictionaries(
    {"price": amounts, "quantity": integer_field(st.integers(-2, 2_000_000))},
    optional={"id": texts(), "name": weighted((3, texts()), (1, long_strings())), "sku": texts()},
)
small_products = st.fixed_dictionaries(
    {"price": st.sampled_from(AMOUNTS[:12]), "quantity": st.integers(-1, 3)},
    optional={"name": st.sampled_from(EDGE_STRINGS)},
)
product_lists = weighted(
    (4, st.lists(products, max_size=3)),
    (1, st.builds(repeated, small_products, st.sampled_from([1_000, 1_001, 10_000]))),
)


def payment_requests() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"transactionId": transaction_ids, "amount": amounts, "currency": currencies},
        optional={
            "paymentMethod": weighted((3, st.sampled_from(["CARD", "CASH", ""])), (1, texts(40))),
            "products": product_lists,
            "customerInfo": free_objects,
            "metadata": free_objects,
        },
    )


def payment_responses() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"transactionId": transaction_ids, "status": st.sampled_from(STATUSES)},
        optional={
            "authorizationCode": st.none() | texts(70),
            "errorMessage": st.none() | texts() | long_strings(),
            "cardNumber": st.sampled_from(["************1111", *PANS]),
            "receipt": json_values,
        },
    )


def display_requests() -> st.SearchStrategy[dict[str, Any]]:
    cart = st.fixed_dictionaries(
        {
            "items": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": texts(),
                        "quantity": integer_field(st.integers(-1, 5)),
                        "price": amounts,
                    }
                ),
                max_size=3,
            ),
            "total": amounts,
            "currency": currencies,
        }
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "requestId": request_ids,
            "lines": st.lists(texts(), max_size=12),
            "cart": cart,
            "durationMs": integer_field(st.integers(-1, 400_000)),
        },
    )


def input_requests() -> st.SearchStrategy[dict[str, Any]]:
    option = st.one_of(texts(), st.fixed_dictionaries({"value": texts(), "label": texts()}))
    return st.fixed_dictionaries(
        {"type": st.sampled_from(INPUT_TYPES), "prompt": texts()},
        optional={
            "requestId": request_ids,
            "options": st.lists(option, max_size=22),
            "maxInputTimeMs": integer_field(st.integers(-1, 700_000)),
        },
    )


def answers(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"requestId": request_ids, "status": st.sampled_from(STATUSES)},
        optional={"errorMessage": st.none() | texts(), "value": json_values}
        if kind == "input"
        else {"errorMessage": st.none() | texts()},
    )


def session_documents() -> st.SearchStrategy[dict[str, Any]]:
    operation = st.fixed_dictionaries(
        {
            "Type": st.sampled_from(OPERATION_TYPES),
            "Variant": st.sampled_from(["WaitingScreen", "waitingscreen", ""]),
            "UserInterfaceData": st.fixed_dictionaries(
                {"WaitingScreenTimeoutMs": integer_field(st.integers(-1, 700_000))}
            ),
        }
    )
    session = st.fixed_dictionaries(
        {"Type": st.sampled_from(["Begin", "End", "begin", ""])},
        optional={"Id": request_ids, "ID": request_ids},
    )
    return st.fixed_dictionaries(
        {"Session": session, "Operation": operation | st.lists(operation, max_size=4)}
    )


def valid_session_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Begin or End documents that pass every check: only the POIID or session can fail."""
    operation = st.builds(
        lambda kind, ms: {
            "Type": kind,
            "Variant": "WaitingScreen",
            "UserInterfaceData": {"WaitingScreenTimeoutMs": ms},
        },
        st.sampled_from(OPERATION_TYPES[:3]),
        st.integers(1, 600_000),
    )
    return st.builds(
        lambda key, session_id, kind, operations: {
            "Session": {key: session_id, "Type": kind},
            "Operation": operations,
        },
        st.sampled_from(["Id", "ID"]),
        printable_ids,
        st.sampled_from(["Begin", "End"]),
        st.lists(operation, min_size=1, max_size=3, unique_by=lambda op: op["Type"]),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_json(value: Any) -> str:
    return b64(encode(value).encode("utf-8"))


def service_identifications() -> st.SearchStrategy[Any]:
    return weighted(
        (6, valid_session_documents().map(_b64_json)),
        (3, mutated(session_documents()).map(_b64_json)),
        (1, session_documents().map(_b64_json)),
        (1, st.binary(max_size=64).map(b64)),
        (1, json_values.map(_b64_json)),
        (
            1,
            st.sampled_from(
                ["", "YWJ", "YWJj=", "@@@@", "YW Jj", "YWJj\n", "-_-_", "====", "\u00e9t\u00e9"]
            ),
        ),
        (1, texts()),
        (1, st.builds(times, st.sampled_from(["A", "e3s="]), st.just(4_100))),  # over 16 KiB
        (1, st.sampled_from(NASTY)),
    )


def sale_to_poi_requests() -> st.SearchStrategy[dict[str, Any]]:
    poi_ids = weighted(
        (3, st.sampled_from([OTHER_TERMINAL, "NOPE", "FUZZ-POS-1", OTHER_CONNECTION])),
        (2, texts()),
    ).filter(allowed_id)
    header = st.fixed_dictionaries(
        {
            "ProtocolVersion": st.just("3.0"),
            "MessageClass": st.just("Service"),
            "MessageCategory": st.just("Admin"),
            "MessageType": st.just("Request"),
            "ServiceID": weighted((3, printable_ids), (1, texts(12))),
            "SaleID": weighted((3, printable_ids), (1, texts(12))),
            "POIID": poi_ids,
        }
    )
    request = st.fixed_dictionaries(
        {
            "MessageHeader": header,
            "AdminRequest": st.fixed_dictionaries(
                {"ServiceIdentification": service_identifications()}
            ),
        }
    )
    document = st.fixed_dictionaries({"SaleToPOIRequest": request})
    return weighted((1, document), (1, mutated(document)))


def actions() -> st.SearchStrategy[dict[str, Any]]:
    """Every action of the protocol, with plausible fields."""
    terminal_id = terminal_ids()

    def action(name: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"action": st.just(name), **fields})

    return st.one_of(
        action("ping"),
        action("getTerminals"),
        action("payment", terminalId=terminal_id, paymentRequest=payment_requests()),
        action("payment", terminalId=terminal_id, paymentRequest=payment_requests()),
        action("cancelPayment", transactionId=transaction_ids),
        action("getTransactionStatus", transactionId=transaction_ids),
        action("ack", seq=integer_field(st.integers(-3, 3))),
        action("display", terminalId=terminal_id, displayRequest=display_requests()),
        action("input", terminalId=terminal_id, inputRequest=input_requests()),
        action("paymentResponse", paymentResponse=payment_responses()),
        action("paymentResponse", paymentResponse=payment_responses()),
        action("displayResponse", displayResponse=answers("display")),
        action("inputResponse", inputResponse=answers("input")),
        sale_to_poi_requests().map(lambda doc: {"action": "terminalApi", **doc}),
    )


NOT_JSON = [
    "",
    " ",
    "{",
    "}",
    "[1,2",
    "{'action':'ping'}",
    '{"action":"ping",}',
    '{"action":"ping"} {"action":"ping"}',
    '{"action":"ping"}\u0000',
    '\ufeff{"action":"ping"}',
    '{"action":"ping"/* c */}',
    '{"action":"ping","action":"getTerminals"}',
    "NaN",
    "null",
    "true",
    '"ping"',
    "[]",
    "action=ping",
    "\u0000",
]


# --- Seeds from hypothesis, variants from the seed's own random generator --------------------
#
# A hypothesis draw costs tens of microseconds, and a rich frame takes dozens of draws: 10,000
# frames drawn one by one would take longer than sending them. So hypothesis draws a seed (a
# rich frame or body) together with a number that seeds a ``random.Random`` of its own (drawn
# by hypothesis, so derandomized runs repeat exactly), and each seed is sent as itself plus
# VARIANTS - 1 cheap mutations made with that generator.

VARIANTS = 16  # frames per WebSocket seed
API_VARIANTS = 8  # bodies per Terminal API seed


@dataclass
class Seed:
    kind: str
    value: Any = None  # a JSON value (with Raw tokens), encoded when sent
    data: str | bytes | None = None  # or the exact text or bytes to send
    ascii_only: bool = True

    def render(self) -> str | bytes:
        if self.data is not None:
            return self.data
        return encode(self.value, ascii_only=self.ascii_only)


def _value_seed(kind: str) -> Any:
    return lambda pair: Seed(kind, value=pair[0], ascii_only=pair[1])


def _data_seed(kind: str) -> Any:
    return lambda data: Seed(kind, data=data)


def fast_mutant(rng: random.Random) -> Any:
    """A replacement value, made with the seed's generator."""
    choice = rng.randrange(10)
    if choice == 0:
        return copy.deepcopy(rng.choice(NASTY))
    if choice == 1:
        return rng.choice(EDGE_STRINGS)
    if choice == 2:  # code points from every plane, controls and lone surrogates included
        ranges = [(0, 0x20), (0x20, 0x7F), (0x80, 0x800), (0xD800, 0xE000), (0x10000, 0x110000)]
        return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(rng.randrange(0, 16)))
    if choice == 3:
        return rng.getrandbits(rng.choice([7, 31, 63, 64, 200])) * rng.choice([1, -1])
    if choice == 4:
        return rng.choice([rng.uniform(-1e20, 1e20), rng.random(), -rng.random()])
    if choice == 5:
        return times(rng.choice(LONG_CHARS), rng.choice([65, 201, 1_001, 4_000]))
    if choice == 6:
        return nested(rng.choice([8, 9, 64]), rng.choice(["list", "dict"]))
    if choice == 7:
        return rng.choice(AMOUNTS)
    if choice == 8:
        return rng.choice([[fast_mutant(rng)], {rng.choice(EDGE_STRINGS): fast_mutant(rng)}])
    return rng.choice([None, True, False])


def mutate_fast(value: Any, rng: random.Random, count: int) -> Any:
    """``value`` (a fresh copy) with ``count`` fields replaced, deleted or added."""
    if not isinstance(value, dict | list):
        return fast_mutant(rng)
    for _ in range(count):
        slots = _slots(value)
        if not slots:
            return fast_mutant(rng)
        parent, key = rng.choice(slots)
        if parent is value and key == "action" and rng.random() < 0.8:
            parent, key = rng.choice(slots)  # mostly keep the action: reach its validator
        operation = rng.randrange(5)
        if operation < 3:
            parent[key] = fast_mutant(rng)
        elif operation == 3:
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(EDGE_STRINGS)] = fast_mutant(rng)
        else:
            parent.insert(key, fast_mutant(rng))
    return value


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(3)
        at = rng.randrange(len(out) + 1)
        if operation == 0 or not out:
            out[at:at] = bytes([rng.randrange(256)])
        elif operation == 1:
            del out[min(at, len(out) - 1)]
        else:
            out[min(at, len(out) - 1)] = rng.randrange(256)
    return bytes(out)


def variant(seed: Seed, rng: random.Random) -> tuple[str | bytes, str]:
    """One cheap mutation of a seed: its data and its kind."""
    rendered = seed.render()
    if seed.value is not None and len(rendered) <= 20_000:
        value = mutate_fast(copy.deepcopy(seed.value), rng, rng.randint(1, 3))
        text = encode(value, ascii_only=rng.random() < 0.5)
        roll = rng.random()
        if roll < 0.05:
            return text.encode("utf-8"), "binary"
        if roll < 0.12:
            return text[: rng.randrange(len(text) + 1)], "truncated"
        return text, seed.kind
    if isinstance(rendered, bytes):
        return mutate_bytes(rendered, rng), seed.kind
    # Big or raw text: cut it, or change a few bytes (kept valid UTF-8: it is a text frame).
    if rng.random() < 0.5:
        return rendered[: rng.randrange(len(rendered) + 1)], "truncated"
    return mutate_bytes(rendered.encode("utf-8"), rng).decode("utf-8", "replace"), seed.kind


@dataclass
class Frame:
    sender: str  # "desktop" or "terminal"
    data: str | bytes
    kind: str


def ws_seeds() -> st.SearchStrategy[Seed]:
    valid = actions()
    flag = st.booleans()
    random_action = st.builds(
        lambda d, a: {**d, "action": a},
        st.dictionaries(texts(12), json_values, max_size=3),
        mutants,
    )
    return weighted(
        (10, st.tuples(mutated(valid), flag).map(_value_seed("action"))),
        (4, st.tuples(valid, flag).map(_value_seed("action"))),
        (2, st.tuples(json_values, flag).map(_value_seed("random JSON"))),
        (1, st.tuples(random_action, flag).map(_value_seed("random action"))),
        (1, st.sampled_from(NOT_JSON).map(_data_seed("not JSON"))),
        (1, st.text(max_size=40).map(_data_seed("not JSON"))),
        (1, st.binary(max_size=64).map(_data_seed("binary"))),
        (1, st.sampled_from(BAD_UTF8).map(_data_seed("binary"))),
        (1, st.tuples(big_values().map(_in_ping), flag).map(_value_seed("big"))),
    )


def _in_ping(value: Any) -> dict[str, Any]:
    return {"action": "ping", "x": value}


def ws_frames(count: int) -> list[Frame]:
    def expand(example: tuple[str, Seed, int]) -> list[Frame]:
        sender, seed, number = example
        rng = random.Random(number)
        frames = [Frame(sender, seed.render(), seed.kind)]
        for _ in range(VARIANTS - 1):
            # Mostly from the seed's own sender; sometimes from the other side.
            side = sender if rng.random() < 0.75 else OTHER_SIDE[sender]
            frames.append(Frame(side, *variant(seed, rng)))
        return frames

    strategy = st.tuples(
        st.sampled_from(["desktop", "terminal"]), ws_seeds(), st.integers(0, 2**32 - 1)
    )
    return [frame for example in generate(strategy, count // VARIANTS) for frame in expand(example)]


OTHER_SIDE = {"desktop": "terminal", "terminal": "desktop"}
BAD_UTF8 = [b"", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b'{"action":"ping"}']


@dataclass
class Body:
    key: str  # desktop, terminal, wrong, none
    path: str
    content: bytes
    kind: str


def api_seeds() -> st.SearchStrategy[Seed]:
    flag = st.booleans()
    return weighted(
        (12, st.tuples(sale_to_poi_requests(), flag).map(_value_seed("document"))),
        (1, st.tuples(json_values, flag).map(_value_seed("random JSON"))),
        (1, st.binary(max_size=80).map(_data_seed("bytes"))),
        (1, st.sampled_from(NOT_JSON).map(_data_seed("not JSON"))),
        (1, st.tuples(big_values().map(_in_document), flag).map(_value_seed("big"))),
    )


def _in_document(value: Any) -> dict[str, Any]:
    return {"SaleToPOIRequest": value}


def api_variant(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A mutation of the document, of its POIID, or of the session document in its Base64."""
    roll = rng.random()
    header = _header(seed.value)
    if header is not None and roll < 0.25:
        document = copy.deepcopy(seed.value)
        document["SaleToPOIRequest"]["MessageHeader"]["POIID"] = rng.choice(
            [rng.choice(EDGE_STRINGS), fast_mutant(rng)]
        )
        return encode(document, ascii_only=rng.random() < 0.5).encode("utf-8"), "document"
    service = _service_document(seed.value)
    if service is not None and roll < 0.6:
        document = copy.deepcopy(seed.value)
        inner = mutate_fast(service, rng, rng.randint(1, 3))
        admin = document["SaleToPOIRequest"]["AdminRequest"]
        admin["ServiceIdentification"] = b64(encode(inner).encode("utf-8"))
        return encode(document, ascii_only=rng.random() < 0.5).encode("utf-8"), "document"
    data, kind = variant(seed, rng)
    if isinstance(data, str):
        data = data.encode("utf-8")
    return data, "bytes" if kind == "binary" else kind


def _header(document: Any) -> Any:
    try:
        header = document["SaleToPOIRequest"]["MessageHeader"]
    except (KeyError, TypeError):
        return None
    return header if isinstance(header, dict) else None


def _service_document(document: Any) -> Any:
    try:
        encoded = document["SaleToPOIRequest"]["AdminRequest"]["ServiceIdentification"]
        return decode(base64.b64decode(encoded, validate=True).decode("utf-8"))
    except (KeyError, TypeError, ValueError, RecursionError):
        return None


def api_bodies(count: int) -> list[Body]:
    def expand(example: tuple[str, str, Seed, int]) -> list[Body]:
        key, path, seed, number = example
        rng = random.Random(number)
        rendered = seed.render()
        content = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
        bodies = [Body(key, path, content, seed.kind)]
        for _ in range(API_VARIANTS - 1):
            data, kind = api_variant(seed, rng)
            bodies.append(Body(key, rng.choice(PATHS), data, kind))
        return bodies

    strategy = st.tuples(
        weighted((12, st.just("desktop")), (1, st.sampled_from(["terminal", "wrong", "none"]))),
        st.sampled_from(PATHS),
        api_seeds(),
        st.integers(0, 2**32 - 1),
    )
    return [
        body for example in generate(strategy, count // API_VARIANTS) for body in expand(example)
    ]


PATHS = ["/terminal-api/sync"] * 7 + ["/terminal-api/async"]


def generate(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` values from hypothesis, the same ones on every run."""
    values: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        values.append(value)

    collect()
    return values


# --- What the gateway must answer ---------------------------------------------------------------


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def has_unstorable_text(value: Any) -> bool:
    """A NUL or a lone surrogate in any string or key (both refused before any lookup)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and UNSTORABLE.search(item):
            return True
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


@dataclass
class Expected:
    exact: tuple[str, str] | None = None  # (error, message)
    ending: str | None = None  # or a Bad Request whose message ends so
    replies: frozenset[str] = frozenset()  # answers that are not errors, for valid reads
    may_be_silent: bool = False


def expected(frame: Frame, table: dict[str, Any]) -> Expected:
    data = frame.data
    if isinstance(data, bytes):
        return Expected(("Bad Request", "Binary frames are not supported"))
    if len(data.encode("utf-8")) > MAX_MESSAGE_BYTES:
        return Expected(
            ("Payload Too Large", f"Message exceeds the limit of {MAX_MESSAGE_BYTES} bytes")
        )
    try:
        value = decode(data)
    except (ValueError, RecursionError):
        return Expected(("Bad Request", INVALID_JSON))
    if not isinstance(value, dict):
        return Expected(("Bad Request", "Message must be a JSON object"))
    if has_unstorable_text(value):
        return Expected(ending=" must not contain NUL characters or unpaired surrogates")
    action = value.get("action")
    if action is None or action == "":
        return Expected(("Bad Request", "action is required"))
    if not isinstance(action, str):
        return Expected(("Bad Request", "action must be a string"))
    spec = table.get(action)
    if spec is None:
        return Expected(("Bad Request", f"Unknown action: {action[:64]}"))
    if frame.sender not in spec.device_types:
        return Expected(("Forbidden", spec.forbidden_message))
    replies = {
        "ping": "pong",
        "getTerminals": "terminalsResponse",
        "terminalApi": "terminalApiResponse",
    }
    seq = value.get("seq")
    return Expected(
        replies=frozenset([replies[action]] if action in replies else []),
        # Acknowledging "every result up to 0" is valid and answered by silence.
        may_be_silent=action == "ack" and type(seq) is int and seq == 0,
    )


def failure_of(document: Any) -> str | None:
    """What is wrong with a SaleToPOIResponse that must be a Failure, or None."""
    try:
        response = document["SaleToPOIResponse"]
        result = response["AdminResponse"]["Response"]
    except (KeyError, TypeError):
        return "not a SaleToPOIResponse"
    if response.get("MessageHeader", {}).get("MessageType") != "Response":
        return "MessageHeader.MessageType is not Response"
    if result.get("Result") != "Failure":
        return f"Result {result.get('Result')!r} for an invalid document"
    if result.get("ErrorCondition") not in NEXO_CONDITIONS:
        return f"ErrorCondition {result.get('ErrorCondition')!r}"
    if not isinstance(result.get("AdditionalResponse"), str) or not result["AdditionalResponse"]:
        return "no AdditionalResponse"
    return None


def problem_with(frame: Frame, got: list[dict[str, Any]], table: dict[str, Any]) -> str | None:
    want = expected(frame, table)
    if not got:
        return None if want.may_be_silent else "no answer"
    if len(got) > 1:
        return f"{len(got)} answers"
    answer = got[0]
    if "error" in answer:
        if not isinstance(answer.get("message"), str) or not answer["message"]:
            return "an error without a message"
        if not set(answer) <= ERROR_KEYS:
            return f"unexpected fields {sorted(set(answer) - ERROR_KEYS)}"
        if want.exact is not None:
            if (answer["error"], answer["message"]) != want.exact:
                return f"not {want.exact}"
        elif want.ending is not None:
            if answer["error"] != "Bad Request" or not answer["message"].endswith(want.ending):
                return f"not a Bad Request ending {want.ending!r}"
        elif answer["error"] not in CLIENT_ERRORS:
            return f"error {answer['error']!r}"
        return None
    if answer.get("action") not in want.replies:
        return f"answered {answer.get('action')!r}"
    if answer["action"] == "terminalApiResponse":
        return failure_of(answer)
    return None


# --- Evidence from the server -------------------------------------------------------------------


def row_counts(deployment: Deployment) -> dict[str, int]:
    url = deployment.env["DATABASE_URL"]
    queries = [f"SELECT count(*) FROM {table}" for table in TABLES]  # noqa: S608 (fixed names)
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return {t: conn.execute(q).fetchone()[0] for t, q in zip(TABLES, queries, strict=True)}
    with psycopg.connect(url) as conn:
        return {t: conn.execute(q).fetchone()[0] for t, q in zip(TABLES, queries, strict=True)}


def assert_clean_log(gateway: Gateway) -> None:
    log = gateway.server.log()
    bad = [
        line
        for line in log.splitlines()
        if "Traceback" in line or " ERROR " in line or "Logging error" in line
    ]
    assert not bad, "the server logged errors:\n" + "\n".join(bad[:20]) + f"\n...\n{log[-4000:]}"


def show(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# --- WebSocket ----------------------------------------------------------------------------------


async def send_all(client: DeviceClient, frames: list[Frame], window: int = 256) -> list[list]:
    """Send each frame followed by a separator; the answers of each frame, in order."""
    ws = client.ws
    answers: list[list[dict[str, Any]]] = []
    for start in range(0, len(frames), window):
        chunk = frames[start : start + window]
        for offset, frame in enumerate(chunk):
            await ws.send(frame.data)
            await ws.send(f'{{"action":"{SEPARATOR}{start + offset}"}}')
        for offset in range(len(chunk)):
            marker = f"{SEPARATOR}{start + offset}"
            got: list[dict[str, Any]] = []
            while True:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if answer.get("requestAction") == marker:
                    break
                if answer.get("action") not in PUSHED:
                    got.append(answer)
            answers.append(got)
    return answers


def with_ids(data: str | bytes, ids: dict[str, str]) -> str | bytes:
    for placeholder, real in ids.items():
        if isinstance(data, str):
            data = data.replace(placeholder, real)
        else:
            data = data.replace(placeholder.encode(), real.encode())
    return data


async def test_generated_frames_get_one_clean_answer_each_and_change_nothing(
    fuzzed: Fuzzed, capsys
):
    from posgateway.gateway.actions import ACTIONS

    gateway, own, inputs = fuzzed.gateway, fuzzed.own, fuzzed.inputs
    other_terminal = await gateway.connect(fuzzed.other.terminal)
    terminal = await gateway.connect(own.terminal)
    desktop = await gateway.connect(own.desktop_keys[0])
    ids = {
        OTHER_CONNECTION: other_terminal.connection_id,
        OWN_DESKTOP_CONNECTION: desktop.connection_id,
    }
    frames = [Frame(f.sender, with_ids(f.data, ids), f.kind) for f in inputs.frames]
    assert len(frames) >= 10_000
    table = ACTIONS
    before = row_counts(gateway.deployment)

    started = time.monotonic()
    by_sender = {side: [f for f in frames if f.sender == side] for side in ("desktop", "terminal")}
    results = await asyncio.gather(
        send_all(desktop, by_sender["desktop"]), send_all(terminal, by_sender["terminal"])
    )
    seconds = time.monotonic() - started

    problems = []
    outcome: Counter[str] = Counter()
    for side_frames, side_answers in zip(by_sender.values(), results, strict=True):
        for frame, got in zip(side_frames, side_answers, strict=True):
            outcome.update(answer.get("error") or answer.get("action") for answer in got)
            if not got:
                outcome["(none: a valid ack)"] += 1
            problem = problem_with(frame, got, table)
            if problem:
                problems.append(
                    f"{frame.sender} {frame.kind}: {problem}: {show(frame.data)} -> {show(got)}"
                )
    internal = outcome["Internal Server Error"]
    answered = sum(len(got) for side_answers in results for got in side_answers)

    # Both sockets are still open and answering, and nothing was stored or changed.
    await desktop.ping()
    await terminal.ping()
    after = row_counts(gateway.deployment)

    # A text frame that is not UTF-8 breaks the WebSocket protocol itself (RFC 6455): autobahn
    # fails that one connection by dropping it (1006; 1007 with a closing handshake); the other
    # sockets keep working.
    broken = await gateway.connect(own.desktop_keys[1])
    await broken.ws.send(b'{"action":"ping","x":"\xff"}', text=True)
    assert await broken.wait_closed() in {1006, 1007}
    await desktop.ping()
    await terminal.ping()

    with capsys.disabled():
        print(
            f"\nfuzz: {len(frames)} frames ({len(by_sender['desktop'])} desktop, "
            f"{len(by_sender['terminal'])} terminal), {answered} answers, {internal} internal "
            f"errors, {len(problems)} wrong; sent and answered in {seconds:.1f} s "
            f"(inputs generated in {inputs.seconds:.1f} s while the server started)"
        )
        print(f"fuzz: frames by kind {dict(Counter(f.kind for f in frames))}")
        print(f"fuzz: answers {dict(outcome.most_common())}")
    assert not problems, (
        f"{len(problems)} frames answered wrongly:\n"
        + "\n".join(problems[:15])
        + f"\n--- server log ---\n{gateway.server.log()[-5000:]}"
    )
    assert internal == 0
    assert after == before
    assert_clean_log(gateway)


# --- Terminal API -------------------------------------------------------------------------------


def post_all(port: int, bodies: list[Body], keys: dict[str, str | None], workers: int = 4):
    """POST every body on a few keep-alive connections; (status, content type, body) of each."""
    local = threading.local()

    def post(body: Body) -> tuple[int, str, bytes]:
        headers = {"Content-Type": "application/json"}
        if keys[body.key] is not None:
            headers["x-api-key"] = keys[body.key]
        for attempt in range(3):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", body.path, body=body.content, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheader("Content-Type", ""), response.read()
            except (http.client.HTTPException, ConnectionError):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(post, bodies))


def api_problem(body: Body, status: int, content_type: str, content: bytes) -> str | None:
    if status >= 500:
        return f"HTTP {status}"
    # The size is checked while the body is read, before the key (posgateway/core/bodylimit.py).
    if len(body.content) > MAX_MESSAGE_BYTES:
        return None if status == 413 else f"HTTP {status}, not 413"
    if body.key != "desktop":
        return None if status == 401 else f"HTTP {status}, not 401"
    if status != 200:
        return f"HTTP {status}"
    if not content_type.startswith("application/json"):
        return f"answered {content_type} {show(content)}"
    try:
        document = json.loads(content)
    except ValueError:
        return "the answer is not JSON"
    problem = failure_of(document)
    if problem is None and not well_formed(body.content):
        condition = document["SaleToPOIResponse"]["AdminResponse"]["Response"]["ErrorCondition"]
        if condition != "MessageFormat":
            return f"{condition}, not MessageFormat"
    return problem


def well_formed(content: bytes) -> bool:
    """JSON with a SaleToPOIRequest object and only storable text: not a MessageFormat for sure."""
    try:
        document = decode(content.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return (
        isinstance(document, dict)
        and isinstance(document.get("SaleToPOIRequest"), dict)
        and not has_unstorable_text(document)
    )


def test_generated_terminal_api_bodies_get_failures_and_change_nothing(fuzzed: Fuzzed, capsys):
    gateway, own = fuzzed.gateway, fuzzed.own
    bodies = [
        Body(
            b.key, b.path, with_ids(b.content, {OTHER_CONNECTION: "c0nnecti0n-0f-an0ther"}), b.kind
        )
        for b in fuzzed.inputs.bodies
    ]
    assert len(bodies) >= 2_000
    keys = {
        "desktop": own.desktop_keys[0],
        "terminal": own.terminal,
        "wrong": "not-a-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "none": None,
    }
    before = row_counts(gateway.deployment)
    started = time.monotonic()
    responses = post_all(gateway.server.port, bodies, keys)
    seconds = time.monotonic() - started
    after = row_counts(gateway.deployment)

    problems = []
    outcome: Counter[Any] = Counter()
    for body, (status, content_type, content) in zip(bodies, responses, strict=True):
        outcome[status] += 1
        if status == 200 and content_type.startswith("application/json"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                response = json.loads(content)["SaleToPOIResponse"]["AdminResponse"]["Response"]
                outcome[response.get("ErrorCondition") or response.get("Result")] += 1
        problem = api_problem(body, status, content_type, content)
        if problem:
            problems.append(f"{body.kind} {body.key} {body.path}: {problem}: {show(body.content)}")

    with capsys.disabled():
        print(
            f"\nfuzz: {len(bodies)} Terminal API bodies, {outcome[500]} HTTP 500, "
            f"{len(problems)} wrong; posted and answered in {seconds:.1f} s"
        )
        print(f"fuzz: bodies by kind {dict(Counter(b.kind for b in bodies))}")
        print(f"fuzz: answers {dict(outcome.most_common())}")
    assert not problems, (
        f"{len(problems)} bodies answered wrongly:\n"
        + "\n".join(problems[:15])
        + f"\n--- server log ---\n{gateway.server.log()[-5000:]}"
    )
    assert after == before
    assert_clean_log(gateway)
