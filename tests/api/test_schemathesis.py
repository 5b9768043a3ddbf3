"""schemathesis against the live /api/schema/: no 5xx, nothing that breaks the schema.

The schema is loaded from the running app (WSGI, in process) inside a test, so the requests
see the test database; every request carries a staff token. Bounded: a few dozen generated
requests per operation, derandomised so CI is reproducible. The module counts every request
it sends and its last test prints the total, which must be at least 500 per run.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payments.models import TransactionStatus
from tests.api.conftest import make_payment
from tests.api.test_schema import ENDPOINTS, WEBHOOKS, WRITES
from tests.api.test_sessions_api import make_request, make_session
from tests.api.test_transactions import pay_through_services

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def api_schema(db, store_a, store_b, staff_a):
    """The schema as the app serves it, with data in both stores to read."""
    pay_through_services(store_a, "ST-1")
    make_payment(store_a, "ST-2", amount="1500", currency="JPY", status=TransactionStatus.DECLINED)
    make_payment(
        store_a,
        "=ST-3",
        late=True,
        status=TransactionStatus.TIMEOUT,
        created_at=dt.datetime(2024, 1, 1, 23, 30, tzinfo=dt.UTC),
        metadata={"orderId": 12345},
        customer_info={"customerId": {"nested": True}},
    )
    make_payment(store_b, "ST-1", amount="9.99")
    session = make_session(store_a, "ST-SESSION", last_response={"SaleToPOIResponse": {}})
    make_request(store_a, "ST-REQ-1", session=session)
    make_request(store_a, "ST-REQ-2", kind="input", input_type="email", status="IN_PROGRESS")
    make_request(store_b, "ST-REQ-1", session=make_session(store_b, "ST-SESSION"))
    # Like Django's test client: the test's transaction must survive each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def auth_header(staff_a) -> dict[str, str]:
    return {"Authorization": f"Token {staff_a.api_token}"}


# Every operation the schema has (test_schema checks this is all of them). The pytest plugin's
# own parametrisation is not used: its lazy-fixture mode does not run on pytest 9.2.
OPERATIONS = [
    *((path, "get") for path in ENDPOINTS),
    *WRITES.items(),
    *((path, method) for path, methods in WEBHOOKS.items() for method in sorted(methods)),
]


# Requests sent per (operation, generation mode) in this run; the last test reports the sum.
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
REQUESTS: Counter[tuple[str, str, str]] = Counter()
MIN_REQUESTS_PER_RUN = 500


def test_every_operation_is_fuzzed(api_schema):
    assert sorted(api_schema.raw_schema["paths"]) == sorted({path for path, _ in OPERATIONS})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_answers_generated_requests_within_its_schema(
    api_schema, auth_header, path, method, mode
):
    operation = api_schema[path][method.upper()]

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case):
        REQUESTS[path, method, mode.value] += 1
        case.call_and_validate(headers=auth_header, checks=CHECKS)

    REQUESTS[path, method, mode.value] += 0  # this pair ran, even if hypothesis generated nothing
    call()


def test_at_least_500_generated_requests_per_run(capsys):
    """Runs last in this module: the sum of the requests the tests above sent."""
    expected = {(path, method, mode.value) for path, method in OPERATIONS for mode in MODES}
    if set(REQUESTS) != expected:
        pytest.skip("only part of the schemathesis module ran: no total to check")
    total = sum(REQUESTS.values())
    per_operation: Counter[str] = Counter()
    for (path, method, _mode), count in REQUESTS.items():
        per_operation[f"{method.upper()} {path}"] += count
    with capsys.disabled():
        print(
            f"\nschemathesis: {total} generated requests over {len(OPERATIONS)} operations "
            f"({', '.join(f'{path} {n}' for path, n in sorted(per_operation.items()))})"
        )
    assert total >= MIN_REQUESTS_PER_RUN, REQUESTS
