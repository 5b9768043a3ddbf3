"""What a connect and a disconnect cost inside the gateway, without sockets, as the number of
connections already open grows: queries, thread hops, CPU, and SQLite's query plans.

    python bench/connect_cost.py                  # a throwaway SQLite file (embedded default)
    python bench/connect_cost.py --open 0,2000,8000 --cycles 300 --plans
    python bench/connect_cost.py --postgres       # a throwaway database on BENCH_POSTGRES_URL's
                                                  # server (postgres://postgres@127.0.0.1:5432/test)

It calls what the WebSocket consumer calls on connect (``gateway.device_connected_by_key``: one
``database_sync_to_async`` hop) and on disconnect (``gateway.device_disconnected``: one hop), for
a terminal and a desktop of one store, while ``--open`` other terminals (100 stores of equal
size) hold open connections. Channel-layer messages are counted from the Outbox, not sent.
"""

from __future__ import annotations

import argparse
import time

from _django import setup_django

setup_django("connect")  # a throwaway database, removed at exit (bench/_django.py)

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from posgateway.core.events import Outbox  # noqa: E402
from posgateway.gateway import connections as gateway  # noqa: E402
from posgateway.gateway import delivery  # noqa: E402
from terminals.models import Connection, Device, DeviceType, Group, generate_key  # noqa: E402

STORES = 100


def make_devices(group: Group, kind: str, prefix: str, count: int) -> list[tuple[Device, str]]:
    out = []
    for n in range(count):
        key = generate_key()
        device = Device(group=group, device_type=kind, device_id=f"{prefix}-{n}")
        device.set_key(key)
        out.append((device, key))
    Device.objects.bulk_create([d for d, _ in out])
    return out


def setup(open_max: int) -> dict:
    call_command("migrate", verbosity=0)
    groups = Group.objects.bulk_create(
        [Group(slug=f"store-{n}", name=f"Store {n}") for n in range(STORES)]
    )
    idle = []
    for group in groups:
        make_devices(group, DeviceType.DESKTOP, "POS", 10)
        idle += make_devices(group, DeviceType.TERMINAL, "IDLE", -(-open_max // STORES))
    probe_store = groups[0]
    terminal_key = make_devices(probe_store, DeviceType.TERMINAL, "TERM", 1)[0][1]
    desktop_key = make_devices(probe_store, DeviceType.DESKTOP, "POS-PROBE", 1)[0][1]
    # Idle terminals spread over the stores, in the order they are opened.
    idle.sort(key=lambda dk: int(dk[0].device_id.rsplit("-", 1)[1]))
    return {"terminal": terminal_key, "desktop": desktop_key, "idle": [k for _, k in idle]}


def connect(key: str, channel: str) -> tuple:
    outbox = Outbox()
    result = gateway.device_connected_by_key(
        key=key, channel_name=channel, remote_addr="127.0.0.1", outbox=outbox
    )
    return result, outbox


def cycle(key: str, n: int) -> None:
    (ctx, _backlog), _ = connect(key, f"specific.inmemory!c{n}")
    gateway.device_disconnected(ctx=ctx, code=1000, outbox=Outbox())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--open", default="0,1000,4000", help="open connections to measure at")
    parser.add_argument("--cycles", type=int, default=200, help="connect+disconnect per point")
    parser.add_argument("--plans", action="store_true", help="print SQLite's query plans")
    parser.add_argument("--sql", action="store_true", help="print the queries of one connect")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    args = parser.parse_args()
    points = sorted(int(n) for n in args.open.split(","))
    keys = setup(max(points))
    print(f"database: {connection.vendor}, {STORES} stores")
    opened = 0
    for point in points:
        for key in keys["idle"][opened:point]:
            connect(key, f"specific.inmemory!idle{opened}")
            opened += 1
        live = Connection.objects.filter(closed_at__isnull=True).count()
        print(f"with {live} open connections:")
        for kind in ("terminal", "desktop"):
            with CaptureQueriesContext(connection) as q:
                (ctx, _backlog), outbox = connect(keys[kind], f"specific.inmemory!{kind}")
            with CaptureQueriesContext(connection) as qd:
                gateway.device_disconnected(ctx=ctx, code=1000, outbox=Outbox())
            sends = tuple(len(m) for m in delivery.messages(outbox.events))
            print(
                f"  {kind:<8} connect {len(q.captured_queries):>2} queries (1 hop), layer sends "
                f"{sends} (channel, group); disconnect {len(qd.captured_queries)} queries (1 hop)"
            )
            if args.sql or (args.plans and connection.vendor == "sqlite"):
                for query in q.captured_queries + qd.captured_queries:
                    sql = query["sql"]
                    print(f"      {sql[:160]}")
                    if args.plans and sql.startswith("SELECT") and connection.vendor == "sqlite":
                        with connection.cursor() as cur:
                            cur.execute(f"EXPLAIN QUERY PLAN {sql}")
                            for row in cur.fetchall():
                                print(f"          plan: {row[-1]}")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for n in range(args.cycles):
                cycle(keys[kind], n)
            cpu = (time.process_time() - cpu0) / args.cycles
            wall = (time.perf_counter() - wall0) / args.cycles
            print(
                f"  {kind:<8} connect + disconnect: {cpu * 1e6:,.0f} us CPU, "
                f"{wall * 1e6:,.0f} us wall (mean of {args.cycles})"
            )
    Connection.objects.filter(closed_at__isnull=True).update(closed_at=timezone.now())


if __name__ == "__main__":
    main()
