"""The throwaway database of the in-process bench scripts (payment_cost.py, connect_cost.py).

    from _django import setup_django  # this folder is on sys.path when a script in it runs

    setup_django("cost")  # before anything imports Django's models

With ``--postgres`` on the command line: a new database on BENCH_POSTGRES_URL's server
(postgres://postgres@127.0.0.1:5432/test), dropped at exit. Without: a SQLite file in a new
temporary folder (the embedded default), removed at exit. The channel layer is in-memory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(name: str) -> None:
    """Point Django at a throwaway database named after ``name`` and the process, and set it up."""
    sys.path.insert(0, str(ROOT))
    if "--postgres" in sys.argv:
        os.environ["DATABASE_URL"] = _postgres_database(f"posgw_{name}_{os.getpid()}")
    else:
        tmp = tempfile.mkdtemp(prefix=f"posgw-{name}-")
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/{name}.sqlite3"
        atexit.register(shutil.rmtree, tmp, True)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "posgateway.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django

    django.setup()


def _postgres_database(db_name: str) -> str:
    """A new database on BENCH_POSTGRES_URL's server, dropped at exit; its URL."""
    import psycopg

    server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')

    @atexit.register
    def _drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    return server.rsplit("/", 1)[0] + f"/{db_name}"
