"""The PostgreSQL backend health-checks a reused connection at most once a second, and still
replaces a dead one (posgateway/postgresql/base.py). Against the machine's real PostgreSQL."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import dj_database_url
import psycopg
import pytest
from django.db.utils import ConnectionHandler

from posgateway.postgresql import base
from tests.services import ROOT, postgres_url


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


# What runs in a gateway process configured by the environment (posgateway/settings.py): the
# same statement a few times on one connection, then which statements the server holds prepared.
_PREPARED = """
from django.db import connection
with connection.cursor() as cursor:
    for _ in range(8):
        cursor.execute("SELECT count(*) FROM pg_class WHERE relpages > %s", [1])
    cursor.execute("SELECT statement FROM pg_prepared_statements")
    print("PREPARED", [row[0] for row in cursor.fetchall()])
"""


def prepared_statements(**env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _PREPARED],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": postgres_url(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("PREPARED"))
    return ast.literal_eval(line.removeprefix("PREPARED "))


def test_a_statement_run_again_and_again_is_prepared_once_on_its_connection():
    # PostgreSQL then parses and plans the payment's statements once per connection instead of
    # on every payment (a quarter of its CPU per payment in scenario 6, docs/performance.md).
    assert prepared_statements() == ["SELECT count(*) FROM pg_class WHERE relpages > $1"]
    # Behind a pooler that cannot keep them: Django's default, values bound in the client.
    assert prepared_statements(DB_PREPARED_STATEMENTS="off") == []
