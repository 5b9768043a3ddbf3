"""Delivery to real receivers on 127.0.0.1: signed, retried, recorded, never across stores."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from payments import services as payments
from posgateway.client.webhooks import verify
from posgateway.rest.webhooks import event_body
from posgateway.webhook_delivery.worker import Worker
from tests.factories import Runner, Store, make_staff, open_connection
from tests.webhooks.conftest import drive, subscribe
from tests.webhooks.receivers import Listener, Receiver
from webhooks import services
from webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_db_connections"),
]


@pytest.fixture
def run(django_capture_on_commit_callbacks) -> Runner:
    return Runner(django_capture_on_commit_callbacks)


@pytest.fixture
def shop(run):
    store = Store("store-a")
    open_connection(run, store.desktop, "test!desk")
    open_connection(run, store.terminal, "test!term")
    return store


def pay(run, store: Store, tid: str, status: str = "SUCCESS") -> None:
    desk = store.desktop.connections.latest("connected_at")
    run(
        payments.payment_start,
        desktop=store.desktop,
        desktop_connection_id=desk.connection_id,
        terminal_id="TERM-1",
        payment_request={"transactionId": tid, "amount": "12.30", "currency": "EUR"},
    )
    run(
        payments.payment_result,
        terminal=store.terminal,
        payment_response={"transactionId": tid, "status": status, "authorizationCode": "A1"},
    )


def delivered(n: int = 1) -> bool:
    return WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() >= n


def settled() -> bool:
    return (
        not WebhookDelivery.objects.filter(
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING]
        ).exists()
        and not WebhookEvent.objects.filter(dispatched=False).exists()
    )


def test_a_payment_reaches_a_standard_webhooks_receiver_signed_with_its_rest_representation(
    run, shop, receiver
):
    subscribe(shop.group, receiver)

    pay(run, shop, "TXN-1")
    drive(delivered)

    (got,) = receiver.received
    assert got.error == ""
    event = got.verified
    assert event["type"] == "payment.succeeded"
    assert event["group"] == "store-a"
    assert event["id"].startswith("evt_")
    assert set(event) == {"id", "type", "createdAt", "group", "data"}
    assert got.headers["webhook-id"] == event["id"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")
    # data is the transaction exactly as the REST API shows it
    staff = make_staff("alice", "store-a")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {staff.api_token}")
    rest = api.get("/api/transactions/?transactionId=TXN-1").json()["results"][0]
    assert event["data"] == rest
    # the client's helper verifies it too, and refuses a changed body
    assert verify(got.body, got.headers, receiver.secret)["id"] == event["id"]
    with pytest.raises(Exception, match="signature"):
        verify(got.body.replace(b"12.30", b"99.99"), got.headers, receiver.secret)
    (attempt,) = WebhookAttempt.objects.all()
    assert (attempt.number, attempt.status, attempt.http_status) == (1, "succeeded", 200)
    assert attempt.response_body == '{"ok":true}'


def test_declined_and_refund_events_have_their_types(run, shop, receiver):
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1", "DECLINED")
    pay(run, shop, "TXN-2", "SUCCESS")
    run(
        payments.refund_start,
        group_id=shop.group.pk,
        terminal_id="TERM-1",
        desktop=shop.desktop,
        refund_request={"transactionId": "R-1", "originalTransactionId": "TXN-2", "amount": "2.00"},
    )
    run(
        payments.payment_result,
        terminal=shop.terminal,
        payment_response={"transactionId": "R-1", "status": "SUCCESS"},
        kind="REFUND",
    )
    drive(lambda: delivered(3))

    types = sorted(e["type"] for e in receiver.events())
    assert types == ["payment.declined", "payment.succeeded", "refund.succeeded"]
    refund = next(e for e in receiver.events() if e["type"] == "refund.succeeded")
    assert refund["data"]["originalTransactionId"] == "TXN-2"
    assert refund["data"]["amount"] == "2.00"


def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(run, shop, receivers):
    receiver = receivers(fail_first=2)
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")

    drive(delivered)

    assert len(receiver.received) == 3
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1  # the same event id on every retry
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # the same bytes
    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [(a.number, a.status, a.http_status) for a in attempts] == [
        (1, "retrying", 500),
        (2, "retrying", 500),
        (3, "succeeded", 200),
    ]
    assert attempts[0].error == "HTTP 500"
    assert attempts[0].next_attempt_at is not None
    assert len(attempts[0].response_body) == 1024  # the first 1 KiB of the answer
    assert attempts[0].response_body.startswith("receiver says no")


def test_after_the_last_attempt_the_delivery_failed(run, shop, receivers):
    receiver = receivers(mode="fail")
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")

    drive(settled)

    assert len(receiver.received) == 4  # the first attempt and the schedule's three retries
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    last = WebhookAttempt.objects.order_by("number").last()
    assert (last.number, last.status, last.next_attempt_at) == (4, "failed", None)


def test_a_receiver_that_hangs_past_the_timeout_is_retried(run, shop, receivers, settings):
    settings.WEBHOOK_TIMEOUT_S = 0.5
    settings.WEBHOOK_RETRY_SCHEDULE_S = [0.05]
    receiver = receivers(mode="hang", hang_s=2)
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")

    drive(settled)

    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [a.status for a in attempts] == ["retrying", "failed"]
    assert attempts[0].error == "No answer within 0.5 s"
    assert attempts[0].http_status is None
    assert 400 <= attempts[0].duration_ms < 1500


def test_a_redirect_is_not_followed(run, shop, receivers, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_S = []
    receiver = receivers(mode="redirect")
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")

    drive(settled)

    assert len(receiver.received) == 1  # the Location was not asked for
    (attempt,) = WebhookAttempt.objects.all()
    assert attempt.http_status == 307
    assert attempt.status == "failed"
    assert "redirect to http://127.0.0.1" in attempt.error
    assert "not followed" in attempt.error


def test_a_receiver_that_closes_the_socket_is_retried(run, shop, receivers, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_S = [0.05]
    receiver = receivers(mode="close")
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")

    drive(settled)

    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [a.status for a in attempts] == ["retrying", "failed"]
    assert attempts[0].http_status is None
    assert "RemoteProtocolError" in attempts[0].error or "ReadError" in attempts[0].error


def test_a_receiver_that_is_down_gets_it_once_it_is_back(run, shop, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_S = [0.2] * 20
    receiver = Receiver().start()
    port = receiver.port
    subscribe(shop.group, receiver)
    receiver.stop()  # down
    pay(run, shop, "TXN-1")

    drive(lambda: WebhookAttempt.objects.count() >= 2)
    assert WebhookDelivery.objects.get().status == "retrying"
    assert "ConnectError" in WebhookAttempt.objects.first().error

    back = Receiver(secret=receiver.secret).start(port=port)
    try:
        drive(delivered)
    finally:
        back.stop()
    assert [e["type"] for e in back.events()] == ["payment.succeeded"]


def test_store_b_endpoints_never_see_store_a_events(run, shop, receivers):
    for_a, for_b = receivers(), receivers()
    store_b = Store("store-b")
    subscribe(shop.group, for_a)
    subscribe(store_b.group, for_b)
    open_connection(run, store_b.desktop, "test!desk-b")
    open_connection(run, store_b.terminal, "test!term-b")
    WebhookEvent.objects.all().delete()

    pay(run, shop, "TXN-A")
    pay(run, store_b, "TXN-B")
    drive(lambda: delivered(2))

    assert [(e["group"], e["data"]["transactionId"]) for e in for_a.events()] == [
        ("store-a", "TXN-A")
    ]
    assert [(e["group"], e["data"]["transactionId"]) for e in for_b.events()] == [
        ("store-b", "TXN-B")
    ]


def test_only_subscribed_event_types_are_sent(run, shop, receiver):
    subscribe(shop.group, receiver, events=["payment.declined"])
    pay(run, shop, "TXN-1", "SUCCESS")
    pay(run, shop, "TXN-2", "DECLINED")

    drive(delivered)

    assert [e["data"]["transactionId"] for e in receiver.events()] == ["TXN-2"]


def test_during_24_h_after_a_rotation_both_secrets_sign(run, shop, receiver):
    endpoint, old = subscribe(shop.group, receiver)
    new = services.endpoint_rotate_secret(endpoint=endpoint)
    assert new != old
    assert new.startswith("whsec_")
    receiver.secret = new  # the receiver switched; the old secret still verifies (below)
    pay(run, shop, "TXN-1")
    drive(delivered)

    (got,) = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify(got.body, got.headers, old)["type"] == "payment.succeeded"
    assert verify(got.body, got.headers, new)["type"] == "payment.succeeded"

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_until=timezone.now() - dt.timedelta(seconds=1)
    )
    pay(run, shop, "TXN-2")
    drive(lambda: delivered(2))
    later = receiver.received[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    assert verify(later.body, later.headers, new)["data"]["transactionId"] == "TXN-2"
    with pytest.raises(Exception, match="signature"):
        verify(later.body, later.headers, old)


def test_secrets_are_encrypted_at_rest(shop):
    endpoint, secret = services.endpoint_create(
        group_id=shop.group.pk, url="http://127.0.0.1:9/x", events=["*"]
    )
    stored = WebhookEndpoint.objects.values_list("secret_encrypted", flat=True).get()
    assert secret.removeprefix("whsec_") not in stored
    assert secret not in json.dumps(list(WebhookEndpoint.objects.values()), default=str)
    assert services.signing_secrets(endpoint) == [secret]


def test_a_manual_redelivery_sends_it_again_with_the_same_id(run, shop, receiver):
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")
    drive(delivered)
    event = WebhookEvent.objects.get(type="payment.succeeded")

    assert services.event_redeliver(event=event) == 1
    drive(lambda: len(receiver.received) == 2 and delivered())

    first, again = receiver.received
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == event.event_id
    assert first.body == again.body
    assert [a.number for a in WebhookAttempt.objects.order_by("number")] == [1, 2]


def test_a_test_event_goes_to_its_endpoint_only(shop, receivers):
    one, other = receivers(), receivers()
    endpoint, _ = subscribe(shop.group, one)
    subscribe(shop.group, other)

    services.endpoint_test(endpoint=endpoint)
    drive(delivered)

    (event,) = one.events()
    assert event["type"] == "webhook.test"
    assert event["data"]["endpoint"] == endpoint.pk
    assert other.received == []


def test_an_endpoint_failing_for_3_days_is_deactivated(run, shop, receivers, settings):
    settings.WEBHOOK_RETRY_SCHEDULE_S = [3600]
    receiver = receivers(mode="fail")
    endpoint, _ = subscribe(shop.group, receiver)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - dt.timedelta(days=3, minutes=1)
    )
    pay(run, shop, "TXN-1")

    drive(lambda: WebhookAttempt.objects.exists())

    endpoint.refresh_from_db()
    assert endpoint.active is False
    assert endpoint.disabled_reason.startswith("Every delivery failed since ")
    assert "HTTP 500" in endpoint.disabled_reason
    # a success ends a failing streak
    services.endpoint_update(endpoint=endpoint, changes={"active": True})
    endpoint.refresh_from_db()
    assert (endpoint.active, endpoint.disabled_reason, endpoint.failing_since) == (True, "", None)


def test_ssrf_destinations_are_refused_at_creation_without_a_packet(shop, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = []
    listener = Listener()
    try:
        for url in [
            f"http://127.0.0.1:{listener.port}/x",
            f"http://localhost:{listener.port}/x",
            f"http://[::1]:{listener.port}/x",
            f"http://0.0.0.0:{listener.port}/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://192.168.0.1/",
            f"http://[::ffff:127.0.0.1]:{listener.port}/x",
        ]:
            with pytest.raises(services.BadRequest, match="loopback, private, link-local"):
                services.endpoint_create(group_id=shop.group.pk, url=url, events=["*"])
        settings.WEBHOOK_ALLOW_HTTP = False
        with pytest.raises(services.BadRequest, match="must start with https://"):
            services.endpoint_create(
                group_id=shop.group.pk, url="http://example.com/", events=["*"]
            )
        for bad in ["ftp://example.com/", "https://user:pw@example.com/", "not a url", ""]:
            with pytest.raises(services.BadRequest):
                services.endpoint_create(group_id=shop.group.pk, url=bad, events=["*"])
        assert listener.connections == 0
        assert not WebhookEndpoint.objects.exists()
    finally:
        listener.stop()


def test_the_address_is_checked_again_at_delivery_without_a_packet(run, shop, settings):
    listener = Listener()
    try:
        settings.WEBHOOK_ALLOWED_HOSTS = ["localhost"]
        services.endpoint_create(
            group_id=shop.group.pk, url=f"http://localhost:{listener.port}/x", events=["*"]
        )
        # Later the host is no longer allowed (as a name that rebinds to an inside address).
        settings.WEBHOOK_ALLOWED_HOSTS = []
        settings.WEBHOOK_RETRY_SCHEDULE_S = []
        pay(run, shop, "TXN-1")

        drive(settled)

        (attempt,) = WebhookAttempt.objects.all()
        assert attempt.status == "failed"
        assert attempt.error.startswith("Refused: localhost resolves to")
        assert listener.connections == 0
    finally:
        listener.stop()


def test_a_lease_left_by_a_dead_worker_expires_and_another_worker_delivers(
    run, shop, receiver, settings
):
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")
    services.events_dispatch(render=event_body)
    (endpoint_pk,) = services.due_endpoints()
    (claim,) = services.deliveries_claim(endpoint_pk=endpoint_pk, owner="dead", limit=5)
    # Leased: nobody else takes it.
    assert services.deliveries_claim(endpoint_pk=endpoint_pk, owner="other", limit=5) == []
    WebhookDelivery.objects.update(lease_until=timezone.now() - dt.timedelta(seconds=1))

    drive(delivered)

    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().attempts == 2
    # The dead worker's late result cannot undo the delivery.
    status = services.attempt_record(
        claim=claim,
        owner="dead",
        outcome=services.Outcome(ok=False, attempted_at=timezone.now(), error="gone"),
    )
    assert status == "succeeded"
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_old_events_are_pruned_after_the_retention(run, shop, receiver, settings):
    settings.WEBHOOK_RETENTION_DAYS = 30
    subscribe(shop.group, receiver)
    pay(run, shop, "TXN-1")
    pay(run, shop, "TXN-2")
    drive(lambda: delivered(2))
    old = WebhookEvent.objects.filter(type="payment.succeeded").order_by("pk").first()
    WebhookEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=31))

    assert services.events_prune() == 1

    assert not WebhookEvent.objects.filter(pk=old.pk).exists()
    assert WebhookDelivery.objects.count() == 1
    assert WebhookAttempt.objects.count() == 1


def test_a_hanging_receiver_does_not_hold_up_another_stores_deliveries(
    run, shop, receivers, settings
):
    settings.WEBHOOK_TIMEOUT_S = 2.0
    settings.WEBHOOK_LEASE_S = 4.0
    settings.WEBHOOK_CONCURRENCY_PER_ENDPOINT = 2
    hanging, fast = receivers(mode="hang", hang_s=2), receivers()
    store_b = Store("store-b")
    subscribe(shop.group, hanging)
    subscribe(store_b.group, fast)
    for _ in range(6):  # more than the hanging endpoint's slots
        services.event_record(
            group_id=shop.group.pk, type="terminal.offline", subject_pk=shop.terminal.pk
        )
        services.event_record(
            group_id=store_b.group.pk, type="terminal.offline", subject_pk=store_b.terminal.pk
        )

    async def scenario() -> tuple[float, int]:
        stop = asyncio.Event()
        worker = Worker()
        task = asyncio.create_task(worker.run(stop))
        started = time.monotonic()
        try:
            while len(fast.events()) < 6:
                assert time.monotonic() - started < 1.8, "store B waited for store A's receiver"
                await asyncio.sleep(0.02)
            # Counted while the hanging receiver still hangs: once it times out, its
            # endpoint's slots free up and the worker rightly tries the next ones.
            return time.monotonic() - started, len(hanging.received)
        finally:
            stop.set()
            await task

    took, hanging_meanwhile = asyncio.run(scenario())

    assert took < 1.8
    assert hanging_meanwhile <= 2  # its own two slots, no more, while it hangs
