"""CSV export benchmark: rows/s and peak memory of /api/transactions/export/ for growing row
counts, to show that memory stays flat however many rows are exported.

    python bench/export_bench.py                          # 100,000 and 1,000,000 rows, SQLite
    python bench/export_bench.py --rows 10000 --rows 100000
    python bench/export_bench.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    python bench/export_bench.py --smoke --tracemalloc    # 4,000 and 12,000 rows: quick

Each size gets its own store in a throwaway database (an SQLite file in a temporary directory,
or a fresh PostgreSQL database that is dropped afterwards), filled with bulk inserts. Each
export then runs in a fresh process, through the real view (filters, selector, CSV writer,
StreamingHttpResponse), reading the stream to the end. That process reports rows/s, the peak
of Python allocations during the export (tracemalloc) and its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_ROWS = (100_000, 1_000_000)
# Both above the export's fetch size (2,000 rows, payments/selectors.py), the smaller one by at
# least two full fetches: the peak is reached once a full fetch is read while the previous one
# is still being written, so a smaller run would compare part of a fetch against several.
SMOKE_ROWS = (4_000, 12_000)
BATCH = 10_000


def django_setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "posgateway.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


# --- Filling the database ----------------------------------------------------------------------


def fill(sizes: list[int]) -> None:
    """One store per size, each with that many finished payments."""
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from payments.models import Transaction, TransactionStatus
    from terminals import services
    from terminals.models import DeviceType

    call_command("migrate", verbosity=0)
    get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
    statuses = [
        TransactionStatus.SUCCESS,
        TransactionStatus.SUCCESS,
        TransactionStatus.SUCCESS,
        TransactionStatus.DECLINED,
        TransactionStatus.TIMEOUT,
    ]
    for size in sizes:
        group = services.group_get_or_create(slug=f"bench-{size}")
        desktop, _ = services.device_create(
            group=group, device_type=DeviceType.DESKTOP, device_id="POS-1"
        )
        terminal, _ = services.device_create(
            group=group, device_type=DeviceType.TERMINAL, device_id="TERM-1"
        )
        started = time.perf_counter()
        Transaction.objects.bulk_create(
            Transaction(
                group=group,
                transaction_id=f"TXN-{n:06d}",
                amount=Decimal(n % 100_000) / 100 + 1,
                currency="EUR",
                payment_method="CARD",
                metadata={"orderId": f"ORD-{n}"},
                customer_info={"customerId": f"CUST-{n % 977}"},
                status=statuses[n % len(statuses)],
                authorization_code=f"A{n:06d}",
                desktop=desktop,
                terminal=terminal,
                terminal_ref="TERM-1",
            )
            for n in range(min(size, BATCH))
        )
        replicate(group.pk, size)
        elapsed = time.perf_counter() - started
        print(f"  filled bench-{size}: {size:,} rows in {elapsed:.1f} s", flush=True)


def replicate(group_id: int, size: int) -> None:
    """Double the store's rows in SQL (INSERT ... SELECT) until it has ``size``: much faster
    than building a million model instances, and the same SQL on SQLite and PostgreSQL."""
    from django.db import connection, transaction

    from payments.models import Transaction

    quote = connection.ops.quote_name
    table = quote(Transaction._meta.db_table)
    columns = [f.column for f in Transaction._meta.concrete_fields if not f.primary_key]
    rounds = 0
    while (count := Transaction.objects.filter(group_id=group_id).count()) < size:
        rounds += 1
        select = [
            f"{quote(c)} || '-{rounds}'" if c == "transaction_id" else quote(c) for c in columns
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}) "
                f"SELECT {', '.join(select)} FROM {table} WHERE group_id = %s "
                "ORDER BY id LIMIT %s",
                [group_id, size - count],
            )


# --- One export, measured in its own process -----------------------------------------------------


def measure(size: int, *, trace: bool) -> dict:
    import tracemalloc

    from django.contrib.auth import get_user_model
    from rest_framework.test import APIRequestFactory, force_authenticate

    from posgateway.rest.payments import TransactionViewSet

    view = TransactionViewSet.as_view({"get": "export"})
    user = get_user_model().objects.get(username="bench")
    request = APIRequestFactory().get("/api/transactions/export/", {"store": f"bench-{size}"})
    force_authenticate(request, user)

    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    response = view(request)
    lines = 0
    size_bytes = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size_bytes += len(chunk)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    tracemalloc.stop()
    rows = lines - 1  # the header
    if rows != size:
        raise SystemExit(f"exported {rows} rows, expected {size}")
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "mib": size_bytes / 2**20,
        "tracemalloc_peak_mib": peak / 2**20 if trace else None,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_in_child(database_url: str, size: int, *, trace: bool) -> dict:
    command = [sys.executable, __file__, "--measure", str(size), "--database-url", database_url]
    out = subprocess.run(
        [*command, "--tracemalloc"] if trace else command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- Databases -----------------------------------------------------------------------------------


class ThrowawayPostgres:
    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"posgw_export_bench_{uuid.uuid4().hex[:8]}"
        parsed = urlparse(server_url)
        self.url = urlunparse(parsed._replace(path=f"/{self.name}"))

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.url

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class ThrowawaySqlite:
    def __enter__(self) -> str:
        self.tmp = tempfile.TemporaryDirectory(prefix="posgw-export-bench-")
        return f"sqlite:///{Path(self.tmp.name) / 'bench.sqlite3'}"

    def __exit__(self, *exc: object) -> None:
        self.tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="a row count (repeatable)")
    parser.add_argument("--smoke", action="store_true", help=f"rows {SMOKE_ROWS}: runs quickly")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to use")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also trace Python allocations (exact peak, but 2-3x slower rows/s)",
    )
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure is not None:
        django_setup(args.database_url)
        print(json.dumps(measure(args.measure, trace=args.tracemalloc)))
        return

    sizes = sorted(set(args.rows or (SMOKE_ROWS if args.smoke else DEFAULT_ROWS)))
    database = ThrowawayPostgres(args.postgres) if args.postgres else ThrowawaySqlite()
    with database as url:
        kind = "PostgreSQL" if args.postgres else "SQLite"
        print(f"CSV export benchmark on {kind}, sizes {', '.join(f'{s:,}' for s in sizes)}")
        django_setup(url)
        fill(sizes)
        results = [measure_in_child(url, size, trace=args.tracemalloc) for size in sizes]

    print()
    print(
        f"{'rows':>12} {'seconds':>9} {'rows/s':>10} {'CSV MiB':>9} "
        f"{'peak RSS MiB':>13} {'peak alloc MiB':>15}"
    )
    for r in results:
        alloc = r["tracemalloc_peak_mib"]
        print(
            f"{r['rows']:>12,} {r['seconds']:>9.2f} {r['rows_per_s']:>10,.0f} {r['mib']:>9.1f} "
            f"{r['max_rss_mib']:>13.1f} {'-' if alloc is None else f'{alloc:.2f}':>15}"
        )
    first, last = results[0], results[-1]
    line = (
        f"{last['rows'] / first['rows']:,.0f}x the rows: "
        f"peak RSS x{last['max_rss_mib'] / first['max_rss_mib']:.2f}"
    )
    if args.tracemalloc:
        ratio = last["tracemalloc_peak_mib"] / first["tracemalloc_peak_mib"]
        line += f", peak Python allocations x{ratio:.2f} (rows/s slowed by tracemalloc)"
    print()
    print(line)


if __name__ == "__main__":
    main()
