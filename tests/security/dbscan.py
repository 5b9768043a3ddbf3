"""Read every cell of every table, raw, and say where given strings appear.

Raw SQL (``connection.cursor``), not the ORM: what is on disk is what a stolen backup holds.
Login sessions are signed, not encrypted: their decoded contents are scanned too. Run inside a
test, or in a deployment's own process:
``NEEDLES='["…"]' manage.py shell -c "from tests.security.dbscan import main; main()"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from django.db import connection


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _session_contents(session_data: str) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    try:
        return json.dumps(SessionStore().decode(session_data), default=str)
    except Exception:
        return ""


def cells_containing(needles: Iterable[str]) -> list[tuple[str, str, str]]:
    """(table, column, needle) for each cell holding a needle; also how many cells were read."""
    needles = [n for n in needles if n]
    found: list[tuple[str, str, str]] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for column, value in zip(columns, row, strict=True):
                    text = _text(value)
                    if table == "django_session" and column == "session_data":
                        text += _session_contents(text)
                    found += [(table, column, n) for n in needles if n in text]
    return found


def table_count() -> int:
    with connection.cursor() as cursor:
        return len(connection.introspection.table_names(cursor))


def main() -> None:
    needles = json.loads(os.environ["NEEDLES"])
    print("FOUND" + json.dumps({"tables": table_count(), "found": cells_containing(needles)}))
