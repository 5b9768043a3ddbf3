"""Dedicated workers (``manage.py webhook_worker``) in processes of their own, on PostgreSQL:
any number share the work without sending an attempt twice at once, and a worker killed with
SIGKILL mid-delivery leaves the event to another. The PostgreSQL pass only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import quote

import pytest
from django.db import connection, transaction

from tests.factories import Store
from tests.services import ROOT
from tests.webhooks.conftest import subscribe
from tests.webhooks.receivers import Receiver
from webhooks import services
from webhooks.models import DeliveryStatus, WebhookDelivery

pytestmark = [
    pytest.mark.production_pass_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_db_connections"),
]

EVENTS = 300


WORKER_APP = "posgw-test-webhook-worker"


def database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"])
    host = f"{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}"
    # Named, so that only the workers' sessions are waited for (not this process's others).
    return f"postgres://{auth}@{host}/{s['NAME']}?application_name={WORKER_APP}"


def start_worker(name: str, log, **env: str) -> subprocess.Popen:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "WEBHOOK_ALLOW_HTTP": "1",
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_POLL_INTERVAL_S": "0.1",
        "WEBHOOK_TIMEOUT_S": "2",
        "WEBHOOK_LEASE_S": "3",
        "WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.2,0.2",
        "LOG_LEVEL": "INFO",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "webhook_worker"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def sessions_gone() -> None:
    """The workers' database sessions ended (PostgreSQL ends a killed client's a moment later):
    the test database can be dropped."""

    def others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND application_name = %s",
                [WORKER_APP],
            )
            return cursor.fetchone()[0]

    wait_for(lambda: others() == 0, 10, "the workers' database sessions to end")


def all_delivered() -> bool:
    return WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == EVENTS


def test_two_worker_processes_share_the_events_without_sending_one_twice(tmp_path):
    assert connection.vendor == "postgresql"
    store = Store("store-a")
    receiver = Receiver().start()
    try:
        subscribe(store.group, receiver)
        with transaction.atomic():
            for _ in range(EVENTS):
                services.event_record(
                    group_id=store.group.pk, type="terminal.offline", subject_pk=store.terminal.pk
                )
        logs = [open(tmp_path / f"worker-{n}.log", "w+") for n in (1, 2)]  # noqa: SIM115
        workers = [start_worker(f"w{n}", log) for n, log in enumerate(logs, 1)]
        try:
            wait_for(all_delivered, 60, f"{EVENTS} deliveries")
        finally:
            for worker in workers:
                stop(worker)
            sessions_gone()
        ids = Counter(r.headers["webhook-id"] for r in receiver.received)
        duplicates = sum(n - 1 for n in ids.values())
        print(f"\n{len(ids)} events delivered by 2 workers, {duplicates} duplicates")
        assert len(ids) == EVENTS
        assert duplicates == 0
        assert all(r.error == "" for r in receiver.received)  # every signature verified
        # Both took part (each logs its deliveries), and neither crashed.
        shares = []
        for log in logs:
            log.seek(0)
            text = log.read()
            assert "Traceback" not in text, text
            shares.append(text.count(": succeeded"))
        assert sum(shares) == EVENTS
        assert all(share > 0 for share in shares), shares
    finally:
        receiver.stop()


def test_a_worker_killed_mid_delivery_leaves_the_event_to_another(tmp_path):
    store = Store("store-a")
    receiver = Receiver(mode="hang", hang_s=30).start()
    try:
        subscribe(store.group, receiver)
        services.event_record(
            group_id=store.group.pk, type="terminal.offline", subject_pk=store.terminal.pk
        )
        log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115
        first = start_worker("first", log, WEBHOOK_TIMEOUT_S="4", WEBHOOK_LEASE_S="5")
        try:
            wait_for(lambda: len(receiver.received) == 1, 30, "the first attempt to arrive")
        finally:
            first.send_signal(signal.SIGKILL)  # mid-delivery: the receiver has not answered
            first.wait(5)
        receiver.mode = "ok"
        (delivery,) = WebhookDelivery.objects.all()
        assert delivery.status == DeliveryStatus.PENDING
        assert delivery.lease_until is not None  # the dead worker's claim, until it expires
        # The killed worker's lease expires; another worker sends the event again.
        second = start_worker("second", log, WEBHOOK_TIMEOUT_S="2", WEBHOOK_LEASE_S="3")
        try:
            wait_for(
                lambda: WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).exists(),
                40,
                "the event to be delivered by the second worker",
            )
        finally:
            stop(second)
            sessions_gone()
        first_try, second_try = receiver.received
        assert first_try.headers["webhook-id"] == second_try.headers["webhook-id"]
        assert second_try.verified["type"] == "terminal.offline"
        assert WebhookDelivery.objects.get().attempts == 2
    finally:
        receiver.stop()
