"""What one payment costs inside the gateway, without sockets: queries, channel-layer messages,
thread hops, and CPU split between building SQL (the ORM) and running it (the database).

    python bench/payment_cost.py                 # a throwaway SQLite file (embedded default)
    python bench/payment_cost.py --payments 2000 --profile-top 25
    python bench/payment_cost.py --postgres      # a throwaway database on BENCH_POSTGRES_URL's
                                                 # server (postgres://postgres@127.0.0.1:5432/test)

It calls the same handlers the WebSocket consumer dispatches to (posgateway.gateway.actions), in the
order a payment round trip runs them: the desktop's ``payment``, the terminal's
``paymentResponse`` and the desktop's ``ack`` (every 10th payment, as bench/loadgen.py does).
Each is one worker-thread hop in the consumer (``database_sync_to_async``). Channel-layer
messages are counted from the Outbox, not sent. ``lastActivity`` is not part of a payment: the
sweeper writes it for all of a process's active sockets at once (``connections_touch``, at most
every 5 s), which is timed separately.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import time

from _django import setup_django

setup_django("cost")  # a throwaway database, removed at exit (bench/_django.py)

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from posgateway.core.events import Outbox  # noqa: E402
from posgateway.gateway import connections as gateway  # noqa: E402
from posgateway.gateway import delivery  # noqa: E402
from posgateway.gateway.actions import ACTIONS  # noqa: E402
from terminals.models import Device, DeviceType, Group, generate_key  # noqa: E402
from terminals.services import connections_touch  # noqa: E402


def setup() -> tuple:
    call_command("migrate", verbosity=0)
    group = Group.objects.create(slug=f"cost-{time.time_ns()}", name="Cost")
    keys = {}
    for kind, device_id in ((DeviceType.DESKTOP, "POS-1"), (DeviceType.TERMINAL, "TERM-1")):
        key = generate_key()
        device = Device(group=group, device_type=kind, device_id=device_id)
        device.set_key(key)
        device.save()
        keys[kind] = key
    return keys


def connect(key: str, capture: bool = True) -> tuple:
    """What the consumer's connect does: key lookup, connection and backlog in one hop."""
    outbox = Outbox()
    with CaptureQueriesContext(connection) if capture else contextlib.nullcontext() as q:
        ctx, _backlog = gateway.device_connected_by_key(
            key=key,
            channel_name=f"inmemory!{key[:6]}",
            remote_addr="127.0.0.1",
            outbox=outbox,
        )
    return ctx, q.captured_queries if capture else [], outbox


PAID = [0]  # results pushed to the desktop so far: its last seq


CPU: dict[str, float] = {}  # CPU seconds per step, summed, when not capturing


def pay(desktop, terminal, n: int, capture: bool = True) -> dict[str, tuple[list, Outbox]]:
    """One round trip's handler calls; with ``capture`` their queries, else their CPU time."""
    steps: dict[str, tuple[list, Outbox]] = {}

    def step(name: str, fn) -> None:
        outbox = Outbox()
        if capture:
            with CaptureQueriesContext(connection) as q:
                fn(outbox)
            steps[name] = (q.captured_queries, outbox)
        else:
            cpu0 = time.process_time()
            fn(outbox)
            CPU[name] = CPU.get(name, 0.0) + time.process_time() - cpu0

    tid = f"cost-{n}"
    payment = {
        "action": "payment",
        "terminalId": "TERM-1",
        "paymentRequest": {
            "transactionId": tid,
            "amount": "12.50",
            "currency": "EUR",
            "paymentMethod": "CARD",
        },
    }
    result = {
        "action": "paymentResponse",
        "paymentResponse": {
            "transactionId": tid,
            "status": "SUCCESS",
            "authorizationCode": "A1",
            "errorMessage": None,
        },
    }
    step("payment", lambda o: ACTIONS["payment"].handler(desktop, payment, o))
    step("paymentResponse", lambda o: ACTIONS["paymentResponse"].handler(terminal, result, o))
    PAID[0] += 1
    if PAID[0] % 10 == 0:
        ack = {"action": "ack", "seq": PAID[0]}
        step("ack (every 10th)", lambda o: ACTIONS["ack"].handler(desktop, ack, o))
    return steps


def touch_cost(desktop, terminal, rounds: int = 200) -> None:
    """The sweeper's lastActivity write: one call for all of the process's active sockets."""
    pks = [desktop.connection_pk, terminal.connection_pk]
    for n in range(198):  # 200 sockets: scenario 2's 100 pairs
        key = generate_key()
        device = Device(group_id=desktop.group_id, device_type=DeviceType.TERMINAL)
        device.device_id = f"TOUCH-{n}"
        device.set_key(key)
        device.save()
        pks.append(connect(key, capture=False)[0].connection_pk)
    with CaptureQueriesContext(connection) as q:
        gone = connections_touch(connection_pks=pks, at=timezone.now())
    assert not gone, gone
    cpu0 = time.process_time()
    for _ in range(rounds):
        connections_touch(connection_pks=pks, at=timezone.now())
    cpu = (time.process_time() - cpu0) / rounds
    print(
        f"lastActivity (sweeper, every <= 5 s): connections_touch of {len(pks)} sockets, "
        f"{len(q.captured_queries)} queries, {cpu * 1e6:,.0f} us CPU per write"
    )


def sends(outbox: Outbox) -> tuple[int, int]:
    to_devices, to_groups, _follows = delivery.messages(outbox.events)
    return len(to_devices), len(to_groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=1000, help="payments for the timing")
    parser.add_argument("--profile-top", type=int, default=0, help="print the cProfile top N")
    parser.add_argument("--sql", action="store_true", help="print every query of one payment")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database")
    args = parser.parse_args()
    keys = setup()
    desktop, dq, dout = connect(keys[DeviceType.DESKTOP])
    terminal, tq, tout = connect(keys[DeviceType.TERMINAL])
    print(f"database: {connection.vendor}")
    print("connect (key lookup + connection_open + backlog: one hop), bench/connect_cost.py:")
    print(f"  desktop:  {len(dq)} queries, layer sends {sends(dout)} (channel, group)")
    print(f"  terminal: {len(tq)} queries, layer sends {sends(tout)} (channel, group)")
    with CaptureQueriesContext(connection) as q:
        gateway.device_disconnected(ctx=terminal, code=1000, outbox=Outbox())
    print(f"  disconnect (connection_close): {len(q.captured_queries)} queries")
    cycles = max(50, args.payments // 5)
    cpu0 = time.process_time()
    for _ in range(cycles):
        terminal, _q, _o = connect(keys[DeviceType.TERMINAL], capture=False)
        gateway.device_disconnected(ctx=terminal, code=1000, outbox=Outbox())
    cpu = (time.process_time() - cpu0) / cycles
    print(f"  terminal connect + disconnect in-process: {cpu * 1e6:,.0f} us CPU")
    terminal, _q, _o = connect(keys[DeviceType.TERMINAL], capture=False)
    # Warm up, then one payment in detail.
    for n in range(19):
        pay(desktop, terminal, n)
    steps = pay(desktop, terminal, 19)
    total = 0.0
    print("one payment round trip (each step one database_sync_to_async hop in the consumer):")
    for name, (queries, outbox) in steps.items():
        total += len(queries) / 10 if "every 10th" in name else len(queries)
        print(f"  {name:<32} {len(queries):>3} queries, layer sends {sends(outbox)}")
        if args.sql:
            for q in queries:
                print(f"      {q['sql'][:150]}")
    print(f"  per payment (ack amortised):     {total:.1f} queries")
    # Timing: the services alone, in one thread, no sockets, no hops, no query capture.
    start, cpu0 = time.perf_counter(), time.process_time()
    for n in range(1000, 1000 + args.payments):
        pay(desktop, terminal, n, capture=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(
        f"{args.payments} payments in-process, no profiler: "
        f"{wall / args.payments * 1e6:,.0f} us wall, {cpu / args.payments * 1e6:,.0f} us CPU "
        "per payment"
    )
    for name, seconds in CPU.items():
        count = args.payments / 10 if "every 10th" in name else args.payments
        print(f"  {name:<32} {seconds / count * 1e6:>7,.0f} us CPU per call")
    touch_cost(desktop, terminal)
    profile = cProfile.Profile()
    profile.enable()
    for n in range(100_000, 100_000 + args.payments):
        pay(desktop, terminal, n, capture=False)
    profile.disable()
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())

    def cumulative(file_end: str, func: str) -> float:
        return sum(v[3] for k, v in stats.stats.items() if k[0].endswith(file_end) and k[2] == func)

    def own(text: str) -> float:
        return sum(v[2] for k, v in stats.stats.items() if text in k[2])

    driver = cumulative("django/db/backends/utils.py", "_execute")
    as_sql = cumulative("django/db/models/sql/compiler.py", "as_sql")
    print(f"  under cProfile ({total:.2f} s profiled; the profiler inflates Python code):")
    print(f"    running SQL (driver execute + commit)   {driver / total:6.1%}")
    print(f"    building SQL (SQLCompiler.as_sql)       {as_sql / total:6.1%}")
    print(f"    json encode/decode                      {own('json') / total:6.1%}")
    print(f"    everything else (ORM objects, services) {1 - (driver + as_sql) / total:6.1%}")
    if args.profile_top:
        stats.sort_stats("cumulative").print_stats(args.profile_top)


if __name__ == "__main__":
    main()
