"""The PostgreSQL backend health-checks a reused connection at most once a second, and still
replaces a dead one (posgateway/postgresql/base.py). Against the machine's real PostgreSQL."""

from __future__ import annotations

import dj_database_url
import psycopg
import pytest
from django.db.utils import ConnectionHandler

from posgateway.postgresql import base
from tests.services import postgres_url


@pytest.fixture
def pg(django_db_blocker):
    """A connection of the gateway's backend, outside the test database machinery."""
    url = postgres_url()
    config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    config["ENGINE"] = "posgateway.postgresql"
    handler = ConnectionHandler({"default": config})
    with django_db_blocker.unblock():
        conn = handler["default"]
        checks = []
        usable = conn.is_usable
        conn.is_usable = lambda: checks.append(1) or usable()
        try:
            yield conn, checks, url
        finally:
            conn.close()


def backend_pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def next_hop(conn) -> int:
    """What Channels does around each database_sync_to_async call, then a query."""
    conn.close_if_unusable_or_obsolete()
    return backend_pid(conn)


def test_hops_within_a_second_run_no_health_check(pg):
    conn, checks, _ = pg
    pid = backend_pid(conn)
    assert [next_hop(conn) for _ in range(20)] == [pid] * 20
    assert checks == []  # stock Django: 20 "SELECT 1" round trips, one per hop


def test_a_hop_after_the_interval_checks_once(pg, monkeypatch):
    conn, checks, _ = pg
    pid = backend_pid(conn)
    monkeypatch.setattr(base, "HEALTH_CHECK_EVERY_S", 0.0)
    assert next_hop(conn) == pid
    assert checks == [1]


def test_a_connection_killed_by_the_server_is_replaced(pg, monkeypatch):
    conn, checks, url = pg
    pid = backend_pid(conn)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    monkeypatch.setattr(base, "HEALTH_CHECK_EVERY_S", 0.0)  # a second has passed
    new_pid = next_hop(conn)
    assert new_pid != pid
    assert checks == [1]
