"""The benchmark (issue 7): real WebSocket clients against real servers on 127.0.0.1, the gateway
and the reference relay (``bench/reference_relay.py``) side by side, each scenario run several
times (min / median / max) with ratios to the reference measured in the same invocation.
Bounded in count and time; stops by itself. Results and how to read them: docs/performance.md.

    python bench/run.py                          # scenarios 1-6, 3 runs each (make bench)
    python bench/run.py --smoke                  # tiny sizes, one run each: it runs, it prints
    python bench/run.py --scenarios 2,3 --runs 5 --json /tmp/bench.json
    python bench/run.py --scenarios 2 --runs 1 --profile /tmp/prof   # py-spy the gateway
    python bench/run.py --scenarios 5 --runs 1 --storm 1000       # a smaller storm
    python bench/run.py --scenarios 2 --webhooks --targets gateway,gateway-webhooks  # issue 15

Scenarios:
  1  one pair, sequential payments: p50 / p99 latency
  2  100 desktop/terminal pairs in a closed loop: round trips/s, p50 / p99, server CPU per round
     trip, peak RSS (also under uvicorn when it is installed, see --uvicorn-scenarios)
  3  1,000 pairs: the same figures
  4  10,000 idle terminals sending the protocol's ping every HEARTBEAT_INTERVAL_S (30 s, the
     real cadence; --ping-every scales it): server RSS per connection, probe payment latency
  5  reconnect storm, 5,000 terminals at once: connections/s, time until all are online in
     getTerminals
  6  production shape: two daphne processes on PostgreSQL + Redis, scenario 2 again; every
     payment must be answered and stored
  7  (diagnostic, not in the issue) scenario 2's desktops sending ping instead of payment: what
     the transport costs without the database (also under uvicorn, see --uvicorn-scenarios)

The gateway runs on a fresh copy of a migrated SQLite file holding the fleet (the embedded
default: SQLite + in-memory channel layer), one process, unless the scenario says otherwise.
Clients run in --clients worker processes for the closed loops and the socket fleets, so one
client process is not what limits a fast server; the load generator's own CPU is printed (on
2 cores the reference is limited by the machine as a whole: see docs/performance.md).

--webhooks (issue 15) adds a column "gateway-webhooks" to scenarios 2 and 6: the same gateway,
with one webhook endpoint per store subscribed to every event type ("*"), pointing at a small
receiver on 127.0.0.1 (bench/webhook_receiver.py: verifies each signature, answers 204), so the
gateway's in-process delivery worker sends while payments run (WEBHOOK_ALLOW_HTTP=1 and
WEBHOOK_ALLOWED_HOSTS=127.0.0.1 let it through the SSRF rules). Its throughput is compared
with the plain gateway's (issue 15: >= 0.9x), and it prints wh_delivered_s (deliveries received
per second in the window), wh_pending_end (events not yet fanned out + deliveries not yet
sent when the window closed), wh_received and wh_events (deliveries received, events stored,
after the loop), wh_drain_s (seconds after the loop until nothing was pending; n/a if not within
the bound), wh_failed_attempts, wh_bad (bad signature or path), wh_duplicates, receiver_cpu_pct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(sys.executable).parent
DAPHNE = str(BIN / "daphne")
UVICORN = str(BIN / "uvicorn")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAIRS_PER_STORE = 10
MAX_WARM_S = 120.0  # a closed loop's first answers must all come within this
DAPHNE_STORM_FLAGS = ("--websocket_connect_timeout", "30")
DAPHNE_LISTEN = "interface=127.0.0.1:backlog=1024"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- Servers ---------------------------------------------------------------------------------


class Proc:
    """A server process whose CPU time and memory we read from /proc."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def memory_kib(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in KiB."""
        rss = hwm = 0
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return rss, hwm

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_listening(proc: Proc, timeout: float = 60, health: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"server exited: see {proc.log}\n{proc.log.read_text()[-2000:]}")
        try:
            if health:
                url = f"http://127.0.0.1:{proc.port}/healthz"
                with urllib.request.urlopen(url, timeout=2):
                    return
            else:
                with socket.create_connection(("127.0.0.1", proc.port), 1):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {proc.port}")


@dataclass
class Database:
    """Where a gateway's data lives, to check afterwards what it stored."""

    sqlite_path: Path | None = None
    postgres_url: str | None = None
    redis_url: str | None = None

    def transactions(self) -> dict[str, int]:
        """Stored transactions by status."""
        sql = "SELECT status, COUNT(*) FROM payments_transaction GROUP BY status"
        if self.sqlite_path is not None:
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                return dict(conn.execute(sql).fetchall())
        import psycopg

        with psycopg.connect(self.postgres_url) as conn:
            return dict(conn.execute(sql).fetchall())

    def connections(self) -> int:
        """Connections the gateway registered so far (open or closed)."""
        return self.count("SELECT COUNT(*) FROM terminals_connection")

    def count(self, sql: str) -> int:
        if self.sqlite_path is not None:
            with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as conn:
                return conn.execute(sql).fetchone()[0]
        import psycopg

        with psycopg.connect(self.postgres_url) as conn:
            return conn.execute(sql).fetchone()[0]

    def webhook_backlog(self) -> int:
        """Webhook events not fanned out yet + deliveries not sent yet (pending or retrying)."""
        return self.count(
            "SELECT (SELECT COUNT(*) FROM webhooks_webhookevent WHERE NOT dispatched)"
            " + (SELECT COUNT(*) FROM webhooks_webhookdelivery"
            " WHERE status IN ('pending', 'retrying'))"
        )

    def helper_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the PostgreSQL backends serving this database, and of Redis."""
        out: dict[str, float] = {}
        if self.postgres_url:
            import psycopg

            name = urlparse(self.postgres_url).path.lstrip("/")
            with psycopg.connect(self.postgres_url) as conn:
                pids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()",
                        (name,),
                    ).fetchall()
                ]
            out["postgres"] = sum(proc_cpu_seconds(pid) for pid in pids)
        if self.redis_url:
            import redis

            info = redis.Redis.from_url(self.redis_url).info("cpu")
            out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out


@dataclass
class Target:
    """A deployment under test: its processes, the URLs clients use, its database."""

    name: str
    procs: list[Proc]
    urls: list[str]
    db: Database | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    receiver: Proc | None = None  # --webhooks: where the stores' endpoints point

    def cpu(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def rss(self) -> tuple[int, int]:
        mem = [p.memory_kib() for p in self.procs]
        return sum(m[0] for m in mem), sum(m[1] for m in mem)

    def helper_cpu(self) -> dict[str, float]:
        return self.db.helper_cpu() if self.db else {}

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        if self.receiver is not None:
            self.receiver.stop()
        for fn in self.cleanup:
            with contextlib.suppress(Exception):
                fn()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="posgateway.settings",
        LOG_LEVEL="WARNING",
        # DEBUG is off: a server refuses to start without a key of its own (posgateway/asgi.py).
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        # Every client of the benchmark comes from 127.0.0.1; a real storm comes from the
        # addresses of many stores. The per-address handshake guard would cap the storm.
        WS_HANDSHAKES_PER_S="1000000",
        # A benchmark client pings back to back (scenario 7); a real one a few times a minute.
        WS_FRAMES_PER_S="1000000",
        WS_FRAMES_BURST="1000000",
    )
    env.update(extra)
    return env


@dataclass
class Fleet:
    """Stores, desktops, terminals and idle terminals with their keys; built once per run of
    this script into a migrated SQLite template that every gateway run copies."""

    data: dict
    path: Path
    sqlite_template: Path

    def pairs(self, count: int) -> list[tuple[str, str, str]]:
        """(desktop key, terminal key, terminal deviceId) of the first ``count`` pairs."""
        out = []
        for group in self.data["groups"]:
            for d, t in zip(group["desktops"], group["terminals"], strict=True):
                out.append((d["key"], t["key"], t["deviceId"]))
        if len(out) < count:
            raise ValueError(f"the fleet has {len(out)} pairs, {count} wanted")
        return out[:count]

    def idle(self, count: int) -> list[tuple[str, str]]:
        """(store slug, key) of ``count`` idle terminals, spread evenly over the stores."""
        out = []
        columns = [[(g["slug"], t["key"]) for t in g["idle"]] for g in self.data["groups"]]
        for row in range(max(len(c) for c in columns)):
            out += [c[row] for c in columns if row < len(c)]
        if len(out) < count:
            raise ValueError(f"the fleet has {len(out)} idle terminals, {count} wanted")
        return out[:count]


def build_fleet(workdir: Path, pairs: int, idle: int) -> Fleet:
    stores = max(1, -(-pairs // PAIRS_PER_STORE))
    idle_per_store = -(-idle // stores)
    template = workdir / "template.sqlite3"
    env = base_env(DATABASE_URL=f"sqlite:///{template}")
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    path = workdir / "fleet.json"
    subprocess.run(
        [
            PY,
            "bench/fleet.py",
            *("--stores", str(stores), "--pairs", str(PAIRS_PER_STORE)),
            *("--idle", str(idle_per_store), "--out", str(path)),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=600,
    )
    return Fleet(json.loads(path.read_text()), path, template)


def server_command(server: str, port: int) -> list[str]:
    app = "posgateway.asgi:application"
    if server == "daphne":
        # As docs/operations.md runs it: a storm queues (listen backlog 1,024, 30 s to be
        # accepted) instead of being refused after daphne's defaults of 50 and 5 s.
        return [DAPHNE, *DAPHNE_STORM_FLAGS, "-e", f"tcp:port={port}:{DAPHNE_LISTEN}", app]
    if server == "uvicorn":
        # As docs/operations.md runs it (uvloop + httptools, lifespan, access log on).
        return [
            *(UVICORN, app, "--host", "127.0.0.1", "--port", str(port), "--backlog", "1024"),
            *("--ws-max-size", "1048576", "--ws-per-message-deflate", "false"),
            *("--timeout-graceful-shutdown", "10"),
        ]
    raise ValueError(server)


def start_gateway(
    workdir: Path,
    fleet: Fleet,
    *,
    server: str = "daphne",
    processes: int = 1,
    production: bool = False,
    env_extra: dict[str, str] | None = None,
    name: str = "gateway",
    webhooks: bool = False,
) -> Target:
    cleanup: list[Callable[[], None]] = []
    receiver: Proc | None = None
    if production:
        import psycopg

        pg_server = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
        redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        dbname = f"posgw_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')

        def drop() -> None:
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

        cleanup.append(drop)
        db = Database(
            postgres_url=urlunparse(urlparse(pg_server)._replace(path=f"/{dbname}")),
            redis_url=redis_url,
        )
        env = base_env(
            DATABASE_URL=db.postgres_url, REDIS_URL=redis_url, CHANNEL_PREFIX=f"{dbname}:"
        )
        run = {"cwd": ROOT, "env": env, "check": True, "timeout": 300}
        subprocess.run([PY, "manage.py", "migrate", "-v0"], **run)
        subprocess.run([PY, "bench/fleet.py", "--load", str(fleet.path)], **run)
    else:
        path = workdir / "gateway.sqlite3"
        shutil.copyfile(fleet.sqlite_template, path)
        db = Database(sqlite_path=path)
        env = base_env(DATABASE_URL=f"sqlite:///{path}")
    env.update(env_extra or {})
    procs = []
    try:
        if webhooks:
            receiver = start_receiver(workdir, fleet, env)
        for _ in range(processes):
            port = free_port()
            log = workdir / f"{server}-{port}.log"
            procs.append(Proc(server_command(server, port), env, port, log))
        for p in procs:
            wait_listening(p, health=True)
    except BaseException:
        Target(name, procs, [], db, cleanup, receiver).stop()
        raise
    urls = [f"ws://127.0.0.1:{p.port}/ws/" for p in procs]
    return Target(name, procs, urls, db, cleanup, receiver)


def start_receiver(workdir: Path, fleet: Fleet, env: dict[str, str]) -> Proc:
    """--webhooks: one endpoint per store of the fleet for every event type, in the gateway's
    database (``env``, changed here so the gateway may post to 127.0.0.1 over http), pointing
    at a receiver started here."""
    # What the SSRF rules need for a loopback receiver (docs/webhooks.md).
    env.update(WEBHOOK_ALLOW_HTTP="1", WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
    port = free_port()
    secrets = workdir / "webhook-secrets.json"
    subprocess.run(
        [
            *(PY, "bench/fleet.py", "--subscribe", f"http://127.0.0.1:{port}"),
            *("--fleet", str(fleet.path), "--secrets-out", str(secrets)),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    receiver = Proc(
        [PY, "bench/webhook_receiver.py", "--port", str(port), "--secrets", str(secrets)],
        base_env(),
        port,
        workdir / "webhook-receiver.log",
    )
    try:
        wait_listening(receiver)
    except BaseException:
        receiver.stop()
        raise
    return receiver


def receiver_stats(receiver: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{receiver.port}/stats", timeout=10) as answer:
        return json.loads(answer.read())


def start_reference(workdir: Path, fleet: Fleet) -> Target:
    port = free_port()
    proc = Proc(
        [PY, "bench/reference_relay.py", "--port", str(port), "--fleet", str(fleet.path)],
        base_env(),
        port,
        workdir / "reference.log",
    )
    try:
        wait_listening(proc)
    except BaseException:
        proc.stop()
        raise
    return Target("reference", [proc], [f"ws://127.0.0.1:{port}/ws/"])


# --- Measurements ----------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def pair_specs(target: Target, fleet: Fleet, count: int) -> list[dict[str, str]]:
    """Pairs with their URLs. With two processes, half the pairs have the desktop and the
    terminal on different processes (the channel layer carries those), half on the same."""
    urls = target.urls
    specs = []
    for i, (dkey, tkey, tid) in enumerate(fleet.pairs(count)):
        specs.append(
            {
                "terminal_url": urls[i % len(urls)],
                "desktop_url": urls[(i // 2) % len(urls)],
                "terminal_key": tkey,
                "desktop_key": dkey,
                "terminal_id": tid,
            }
        )
    return specs


class Workers:
    """Load-generator processes, each with a pipe; always reaped, even on errors."""

    def __init__(self, entry: Callable, args_per_worker: list[tuple]) -> None:
        ctx = mp.get_context("spawn")
        self.items = []
        for args in args_per_worker:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=entry, args=(child, *args), daemon=True)
            proc.start()
            child.close()
            self.items.append((proc, parent))

    def expect(self, kind: str, timeout: float, ignore: tuple[str, ...] = ()) -> list[Any]:
        """One ``kind`` message from every worker (other kinds in ``ignore`` are skipped)."""
        deadline = time.monotonic() + timeout
        out = []
        for proc, conn in self.items:
            while True:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"load generator {proc.pid} sent no {kind!r} in time")
                message = conn.recv()
                if message[0] not in ignore:
                    break
            if message[0] != kind:
                raise RuntimeError(f"load generator {proc.pid}: {message}")
            out.append(message[1] if len(message) > 1 else None)
        return out

    def send(self, *message: Any) -> None:
        for _proc, conn in self.items:
            conn.send(message)

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(proc.pid) for proc, _ in self.items)

    def reap(self) -> None:
        for proc, conn in self.items:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            conn.close()


def split(items: list, parts: int) -> list[list]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def closed_loop(
    target: Target,
    fleet: Fleet,
    pairs: int,
    seconds: float,
    warmup: float,
    clients: int,
    profile: Path | None = None,
    action: str = "pay",
    webhook_drain_s: float = 0.0,
) -> dict[str, float]:
    """``pairs`` desktops paying their terminals back to back (or, with ``action="ping"``,
    pinging: the transport alone). Figures over ``seconds``, from ``warmup`` s after every
    desktop had its first answer. In-flight payments at the end get loadgen.PAYMENT_TIMEOUT_S.
    With a webhook receiver (--webhooks), its figures too; after the loop, up to
    ``webhook_drain_s`` for the deliveries still pending."""
    receiver = target.receiver
    wh: dict[str, Any] = {}
    connect_s = 60 + pairs * 0.1
    prefix = uuid.uuid4().hex[:6]
    chunks = split(pair_specs(target, fleet, pairs), clients)
    workers = Workers(
        loadgen.closed_loop_worker,
        [(chunk, f"{prefix}{i}", connect_s, action) for i, chunk in enumerate(chunks)],
    )
    spy = None
    try:
        workers.expect("ready", connect_s + 30)
        workers.send("go")
        # The window opens once every desktop has had its first answer (with 1,000 pairs on a
        # slow server that is one whole queue length), plus ``warmup``.
        warm = True
        try:
            workers.expect("warm", MAX_WARM_S)
        except TimeoutError:
            warm = False
        t_measure = time.monotonic() + warmup
        t_stop = t_measure + seconds
        workers.send("window", t_measure, t_stop)
        sleep_until(t_measure)
        if profile is not None:
            spy = start_py_spy(target, profile, seconds)
        cpu0, helper0, gen0 = target.cpu(), target.helper_cpu(), workers.cpu()
        if receiver is not None:
            wh["received0"] = receiver_stats(receiver)["received"]
            wh["cpu0"] = receiver.cpu_seconds()
        sleep_until(t_stop)
        cpu1, helper1, gen1 = target.cpu(), target.helper_cpu(), workers.cpu()
        if receiver is not None:
            wh["cpu1"] = receiver.cpu_seconds()
            wh["received1"] = receiver_stats(receiver)["received"]
            if target.db is not None:
                wh["pending_end"] = target.db.webhook_backlog()
        peak = target.rss()[1]
        results = workers.expect("done", loadgen.PAYMENT_TIMEOUT_S + 30, ignore=("warm",))
    finally:
        workers.reap()
        if spy is not None:
            spy.wait(60)
    if receiver is not None and target.db is not None:
        # Bounded: the deliveries still pending when the loop ended, sent within the bound?
        t_end = time.monotonic()
        drained = float("nan")
        while True:
            if target.db.webhook_backlog() == 0:
                drained = time.monotonic() - t_end
                break
            if time.monotonic() - t_end > webhook_drain_s:
                break
            time.sleep(0.2)
        stats = receiver_stats(receiver)
        wh.update(
            drain_s=drained,
            stats=stats,
            events=target.db.count("SELECT COUNT(*) FROM webhooks_webhookevent"),
            failed_attempts=target.db.count(
                "SELECT COUNT(*) FROM webhooks_webhookattempt WHERE status <> 'succeeded'"
            ),
        )
        print(f"  ({target.name}: webhooks received by type {stats['types']})", flush=True)
    latencies = [x for r in results for x in r["latencies"]]
    n = len(latencies)
    sums = {k: sum(r[k] for r in results) for k in ("sent", "answered", "errors", "timeouts")}
    out = {
        "round_trips_s": n / seconds,
        "p50_ms": pct(latencies, 50) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "cpu_us_per_rt": (cpu1 - cpu0) / n * 1e6 if n else float("nan"),
        "server_cpu_pct": (cpu1 - cpu0) / seconds * 100,
        "peak_rss_mib": peak / 1024,
        "loadgen_cpu_pct": (gen1 - gen0) / seconds * 100,
        "errors": sums["errors"],
        "timeouts": sums["timeouts"],
        "not_warm": 0 if warm else 1,
    }
    for name in helper1:
        out[f"{name}_cpu_us_per_rt"] = (helper1[name] - helper0[name]) / n * 1e6 if n else 0
    if target.db is not None and action == "pay":
        stored = target.db.transactions()
        # Nothing lost: every payment sent was answered, and stored as SUCCESS.
        out["lost"] = (
            sums["sent"]
            - sums["answered"]
            - sums["errors"]
            + abs(stored.get("SUCCESS", 0) - sums["answered"])
            + sum(v for k, v in stored.items() if k != "SUCCESS")
        )
    if "stats" in wh:
        out.update(
            wh_delivered_s=(wh["received1"] - wh["received0"]) / seconds,
            wh_pending_end=wh.get("pending_end", float("nan")),
            wh_received=wh["stats"]["received"],
            wh_events=wh["events"],
            wh_drain_s=wh["drain_s"],
            wh_failed_attempts=wh["failed_attempts"],
            wh_bad=wh["stats"]["bad_signature"] + wh["stats"]["unknown_path"],
            wh_duplicates=wh["stats"]["duplicates"],
            receiver_cpu_pct=(wh["cpu1"] - wh["cpu0"]) / seconds * 100,
        )
    return out


def start_py_spy(target: Target, stem: Path, seconds: float) -> subprocess.Popen:
    stem.parent.mkdir(parents=True, exist_ok=True)
    pid = target.procs[0].pid
    return subprocess.Popen(
        [
            *(str(BIN / "py-spy"), "record", "-p", str(pid), "-d", str(int(seconds))),
            *("-r", "200", "--threads", "--nonblocking", "-f", "raw", "-o", f"{stem}-{pid}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=Path(f"{stem}-{pid}.log").open("ab"),
    )


async def _sequential(target: Target, fleet: Fleet, count: int) -> list[float]:
    spec = pair_specs(target, fleet, 1)[0]
    deadline = time.monotonic() + 60
    desktops, others, _ = await loadgen.open_pairs([spec], deadline)
    prefix = uuid.uuid4().hex[:6]
    try:
        return [await desktops[0].pay(f"s{prefix}-{i}") for i in range(count)]
    finally:
        await loadgen.close_pairs(desktops, others)


def sequential(target: Target, fleet: Fleet, count: int) -> dict[str, float]:
    latencies = asyncio.run(_sequential(target, fleet, count))
    return {"p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000}


def idle_fleet(
    target: Target,
    fleet: Fleet,
    count: int,
    probes: int,
    ping_every: float,
    hold: float,
    clients: int,
    connect_s: float,
    profile: Path | None = None,
) -> dict[str, float]:
    """``count`` idle terminals connect (500 handshakes in flight at most, for up to
    ``connect_s``) and send ``ping`` every ``ping_every`` s; after ``hold`` s of that, the
    server's RSS growth per connection, then ``probes`` sequential payments of one pair while
    the heartbeats go on. Those that did not connect in time are counted, not waited for."""
    keys = [k for _slug, k in fleet.idle(count)]
    targets = [(target.urls[i % len(target.urls)], k) for i, k in enumerate(keys)]
    spec = pair_specs(target, fleet, 1)[0]

    async def measure() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        desktops, others, _ = await loadgen.open_pairs([spec], time.monotonic() + 60)
        prefix = uuid.uuid4().hex[:6]
        try:
            for i in range(20):  # warm up the probe pair before the baseline
                await desktops[0].pay(f"w{prefix}-{i}")
            await asyncio.sleep(1)
            rss_before = target.rss()[0]
            workers = Workers(
                loadgen.holder_worker,
                [
                    (chunk, max(1, 500 // clients), ping_every, connect_s, connect_s + hold + 120)
                    for chunk in split(targets, clients)
                ],
            )
            try:
                await loop.run_in_executor(None, workers.expect, "ready", 120)
                t0 = time.monotonic() + 0.2
                workers.send("go", t0)
                infos = await loop.run_in_executor(
                    None, workers.expect, "connected", connect_s + 30
                )
                connected = sum(len(i["done_at"]) for i in infos)
                all_in = max((max(i["done_at"], default=t0) for i in infos), default=t0) - t0
                hold_cpu0 = target.cpu()
                await asyncio.sleep(hold)
                hold_cpu = (target.cpu() - hold_cpu0) / hold * 100
                rss_after = target.rss()[0]
                cpu0, started = target.cpu(), time.monotonic()
                spy = start_py_spy(target, profile, 10) if profile else None
                latencies = [await desktops[0].pay(f"p{prefix}-{i}") for i in range(probes)]
                if spy is not None:
                    await loop.run_in_executor(None, spy.wait, 60)
                cpu_pct = (target.cpu() - cpu0) / (time.monotonic() - started) * 100
                workers.send("close")
                closed = await loop.run_in_executor(None, workers.expect, "closed", 60)
            finally:
                await loop.run_in_executor(None, workers.reap)
        finally:
            await loadgen.close_pairs(desktops, others)
        return {
            "kib_per_conn": (rss_after - rss_before) / max(1, connected),
            "probe_p50_ms": pct(latencies, 50) * 1000,
            "probe_p99_ms": pct(latencies, 99) * 1000,
            "hold_cpu_pct": hold_cpu,
            "probe_cpu_pct": cpu_pct,
            "connect_all_s": all_in,
            "not_connected": count - connected,
            "dropped": sum(c["dropped"] + c["closed_by_server"] for c in closed),
        }

    return asyncio.run(measure())


def storm(
    target: Target,
    fleet: Fleet,
    count: int,
    clients: int,
    connect_s: float,
    profile: Path | None = None,
) -> dict[str, float]:
    """``count`` terminals of many stores connect at the same instant (no cap on handshakes in
    flight; a refused or timed-out attempt is retried with a short backoff, as a terminal would,
    for up to ``connect_s``). Then each store's desktop asks getTerminals until every one is
    online."""
    chosen = fleet.idle(count)
    per_store: dict[str, int] = {}
    for slug, _ in chosen:
        per_store[slug] = per_store.get(slug, 0) + 1
    desktop_keys = {g["slug"]: g["desktops"][0]["key"] for g in fleet.data["groups"]}
    targets = [(target.urls[i % len(target.urls)], k) for i, (_s, k) in enumerate(chosen)]

    async def measure() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 60
        desktops = {
            slug: await loadgen.connect(target.urls[0], desktop_keys[slug], deadline)
            for slug in per_store
        }
        replies: dict[str, asyncio.Queue] = {slug: asyncio.Queue() for slug in desktops}

        async def read(slug: str, ws) -> None:  # drains terminalStatusUpdate frames too
            with contextlib.suppress(Exception):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("action") == "terminalsResponse":
                        replies[slug].put_nowait(msg)

        readers = [asyncio.create_task(read(s, ws)) for s, ws in desktops.items()]
        readers.append(asyncio.create_task(loadgen.keepalive(list(desktops.values()))))

        async def online(slug: str) -> int:
            """Terminals of the store online in getTerminals; -1 if no answer within 30 s."""
            while not replies[slug].empty():  # a late answer to an earlier request
                replies[slug].get_nowait()
            await loadgen.send(desktops[slug], '{"action":"getTerminals"}')
            try:
                msg = await asyncio.wait_for(replies[slug].get(), 30)
            except TimeoutError:
                return -1
            return sum(
                1
                for t in msg["terminals"]
                if t["status"] == "online" and (t["deviceId"] or "").startswith("IDLE-")
            )

        workers = Workers(
            loadgen.holder_worker,
            [(chunk, 0, 0.0, connect_s, connect_s + 90) for chunk in split(targets, clients)],
        )
        try:
            await loop.run_in_executor(None, workers.expect, "ready", 120)
            registered0 = target.db.connections() if target.db else 0
            t0 = time.monotonic() + 0.3
            workers.send("go", t0)
            spy = start_py_spy(target, profile, 20) if profile else None
            infos = await loop.run_in_executor(None, workers.expect, "connected", connect_s + 60)
            # Handshakes the server completed, the ones clients had given up on included.
            registered = (target.db.connections() - registered0) if target.db else None
            registered_s = time.monotonic() - t0
            done_at = sorted(x for i in infos for x in i["done_at"])
            all_online = float("nan")
            pending = set(per_store)
            while pending and time.monotonic() < t0 + connect_s + 30:
                counts = await asyncio.gather(*(online(s) for s in sorted(pending)))
                ordered = sorted(pending)
                pending = {s for s, c in zip(ordered, counts, strict=True) if c < per_store[s]}
                if not pending:
                    all_online = time.monotonic() - t0
                    break
                await asyncio.sleep(0.2)
            workers.send("close")
            await loop.run_in_executor(None, workers.expect, "closed", 60)
            if spy is not None:
                await loop.run_in_executor(None, spy.wait, 60)
        finally:
            await loop.run_in_executor(None, workers.reap)
            for r in readers:
                r.cancel()
            await loadgen.close_quietly(list(desktops.values()))
        kinds: dict[str, int] = {}
        for info in infos:
            for kind, n in info["failure_kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + n
        if kinds:
            print(f"  ({target.name}: failed handshake attempts by kind: {kinds})", flush=True)
        span = (done_at[-1] - t0) if done_at else float("nan")
        return {
            "connects_s": len(done_at) / span if done_at else 0.0,
            "connect_p50_s": pct([x - t0 for x in done_at], 50),
            "connect_all_s": span,
            "all_online_s": all_online,
            "failed_attempts": sum(i["failed_attempts"] for i in infos),
            "not_connected": sum(i["gave_up"] for i in infos),
            **({"registered_s": registered / registered_s} if registered is not None else {}),
        }

    return asyncio.run(measure())


# --- Orchestration ---------------------------------------------------------------------------

SIZES = {
    "full": {
        "seq": 500,
        "s2_pairs": 100,
        "s3_pairs": 1000,
        "seconds": 10.0,
        "s3_seconds": 15.0,
        "warmup": 2.0,
        "idle": 10000,
        "probes": 200,
        "ping_every": 30.0,
        "hold": 10.0,
        "idle_connect_s": 90.0,
        "storm": 5000,
        "storm_connect_s": 45.0,
        "webhook_drain_s": 30.0,
    },
    "smoke": {
        "seq": 20,
        "s2_pairs": 4,
        "s3_pairs": 10,
        "seconds": 2.0,
        "s3_seconds": 2.0,
        "warmup": 0.5,
        "idle": 50,
        "probes": 10,
        "ping_every": 1.0,
        "hold": 1.0,
        "idle_connect_s": 30.0,
        "storm": 40,
        "storm_connect_s": 20.0,
        "webhook_drain_s": 15.0,
    },
}

WEBHOOK_SCENARIOS = (2, 6)  # --webhooks adds the column "gateway-webhooks" to these

TITLES = {
    1: "Scenario 1: one pair, sequential payments",
    2: "Scenario 2: {s2_pairs} pairs, closed loop (embedded default: SQLite + in-memory layer)",
    3: "Scenario 3: {s3_pairs} pairs, closed loop",
    4: "Scenario 4: {idle} idle terminals, ping every {ping_every:g} s; probe payments",
    5: "Scenario 5: reconnect storm, {storm} terminals at once",
    6: "Scenario 6: two server processes, PostgreSQL + Redis, {s2_pairs} pairs closed loop",
    7: "Scenario 7 (diagnostic): {s2_pairs} desktops, ping/pong closed loop: transport only",
}


def run_one(
    number: int, target: Target, fleet: Fleet, size: dict, args: argparse.Namespace
) -> dict:
    if number == 1:
        return sequential(target, fleet, size["seq"])
    if number in (2, 3, 6):
        pairs = size["s3_pairs"] if number == 3 else size["s2_pairs"]
        seconds = size["s3_seconds"] if number == 3 else size["seconds"]
        profile = None
        if args.profile and target.name != "reference":
            profile = args.profile / f"s{number}-{target.name}"
        return closed_loop(
            target,
            fleet,
            pairs,
            seconds,
            size["warmup"],
            args.clients,
            profile,
            webhook_drain_s=size["webhook_drain_s"],
        )
    if number == 7:
        return closed_loop(
            target,
            fleet,
            size["s2_pairs"],
            size["seconds"],
            size["warmup"],
            args.clients,
            action="ping",
            profile=args.profile / f"s7-{target.name}" if args.profile else None,
        )
    if number == 4:
        return idle_fleet(
            target,
            fleet,
            size["idle"],
            size["probes"],
            size["ping_every"],
            size["hold"],
            args.clients,
            size["idle_connect_s"],
            args.profile / f"s4-{target.name}"
            if args.profile and target.name != "reference"
            else None,
        )
    return storm(
        target,
        fleet,
        size["storm"],
        args.clients,
        size["storm_connect_s"],
        args.profile / f"s5-{target.name}" if args.profile and target.name != "reference" else None,
    )


def targets_for(number: int, args: argparse.Namespace) -> list[str]:
    names = ["reference", "gateway"]
    if number in args.uvicorn_scenarios:
        names.append("gateway-uvicorn")
    if args.webhooks and number in WEBHOOK_SCENARIOS:
        names.append("gateway-webhooks")
    if args.targets:
        names = [n for n in names if n in args.targets]
    return names


def start_target(name: str, number: int, workdir: Path, fleet: Fleet, size: dict) -> Target:
    if name == "reference":
        return start_reference(workdir, fleet)
    env = {}
    if number == 4:
        env["HEARTBEAT_INTERVAL_S"] = f"{size['ping_every']:g}"
    server = "uvicorn" if name == "gateway-uvicorn" else "daphne"
    webhooks = name == "gateway-webhooks"
    if number == 6:
        return start_gateway(
            workdir,
            fleet,
            server=server,
            processes=2,
            production=True,
            env_extra=env,
            name=name,
            webhooks=webhooks,
        )
    return start_gateway(workdir, fleet, server=server, env_extra=env, name=name, webhooks=webhooks)


def run_scenario(
    number: int, size: dict, runs: int, workdir: Path, fleet: Fleet, args: argparse.Namespace
) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    names = targets_for(number, args)
    if "gateway-uvicorn" in names and not Path(UVICORN).exists():
        print("  (uvicorn is not installed: its column is skipped)", flush=True)
        names.remove("gateway-uvicorn")
    # Interleaved (reference, gateway, reference, gateway, ...): slow drifts of the machine's
    # load hit both sides alike.
    for _ in range(runs):
        for name in names:
            sub = Path(tempfile.mkdtemp(dir=workdir))
            target = start_target(name, number, sub, fleet, size)
            try:
                results.setdefault(name, []).append(run_one(number, target, fleet, size, args))
            finally:
                target.stop()
    return results


def fmt(value: float) -> str:
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summarise(results: dict[str, list[dict]]) -> list[str]:
    lines = []
    for name, runs in results.items():
        # The webhooks column is compared with the same gateway without webhooks (issue 15).
        base_name = "gateway" if name == "gateway-webhooks" else "reference"
        base = results.get(base_name) if name != base_name else None
        for key in runs[0]:
            values = [r[key] for r in runs]
            med = statistics.median(values)
            line = (
                f"  {name:<16} {key:<22} min {fmt(min(values)):>9}  "
                f"median {fmt(med):>9}  max {fmt(max(values)):>9}"
            )
            if base and key in base[0]:
                ref = statistics.median(r[key] for r in base)
                if ref and ref == ref and med == med:
                    line += f"   ratio {med / ref:7.3f}x"
                    if base_name != "reference":
                        line += f" of {base_name}"
            lines.append(line)
    return lines


def median_of(all_results: dict, number: int, name: str, key: str) -> float | None:
    runs = all_results.get(number, {}).get(name)
    if not runs or key not in runs[0]:
        return None
    return statistics.median(r[key] for r in runs)


def targets_report(all_results: dict) -> list[str]:
    """The targets of issue 7, each met or not, from the medians of this invocation."""

    def m(number: int, name: str, key: str) -> float | None:
        return median_of(all_results, number, name, key)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    checks: list[tuple[str, float | None, str, bool | None]] = []

    def check(label: str, value: float | None, goal: str, ok: Callable[[float], bool]) -> None:
        checks.append((label, value, goal, None if value is None else ok(value)))

    # daphne's figures, then uvicorn's when it ran (scenario 6 on uvicorn is against its own 2).
    for name, tag in (("gateway", ""), ("gateway-uvicorn", " [uvicorn]")):
        s2 = ratio(m(2, name, "round_trips_s"), m(2, "reference", "round_trips_s"))
        check(f"2{tag}: throughput / reference", s2, ">= 0.10", lambda v: v >= 0.10)
        check(f"2{tag}: p99 ms", m(2, name, "p99_ms"), "<= 150", lambda v: v <= 150)
        s3 = ratio(m(3, name, "round_trips_s"), m(2, name, "round_trips_s"))
        check(f"3{tag}: throughput / own scenario 2", s3, ">= 0.8", lambda v: v >= 0.8)
        check(f"3{tag}: p99 ms", m(3, name, "p99_ms"), "<= 1000", lambda v: v <= 1000)
        s4 = ratio(m(4, name, "kib_per_conn"), m(4, "reference", "kib_per_conn"))
        check(f"4{tag}: RSS per idle conn / reference", s4, "<= 1.5", lambda v: v <= 1.5)
        check(f"4{tag}: probe p99 ms", m(4, name, "probe_p99_ms"), "<= 50", lambda v: v <= 50)
        s5 = ratio(m(5, name, "connects_s"), m(5, "reference", "connects_s"))
        check(f"5{tag}: connects/s / reference", s5, ">= 0.3", lambda v: v >= 0.3)
        check(f"5{tag}: all online s", m(5, name, "all_online_s"), "<= 10", lambda v: v <= 10)
        s6 = ratio(m(6, name, "round_trips_s"), m(2, name, "round_trips_s"))
        check(f"6{tag}: throughput / scenario 2", s6, ">= 0.8", lambda v: v >= 0.8)
        # The same, each against the reference of its own scenario (less sensitive to drift).
        s6n = ratio(
            s6, ratio(m(6, "reference", "round_trips_s"), m(2, "reference", "round_trips_s"))
        )
        check(f"6{tag}: same, reference-normalised", s6n, ">= 0.8", lambda v: v >= 0.8)
        runs6 = all_results.get(6, {}).get(name)
        lost = sum(r.get("lost", 0) + r["timeouts"] for r in runs6) if runs6 else None
        check(f"6{tag}: payments lost (all runs)", lost, "== 0", lambda v: v == 0)
    # Issue 15: one endpoint per store subscribed to every event, against none (--webhooks).
    for n in WEBHOOK_SCENARIOS:
        wh = ratio(m(n, "gateway-webhooks", "round_trips_s"), m(n, "gateway", "round_trips_s"))
        check(f"{n} [webhooks]: throughput / without", wh, ">= 0.9", lambda v: v >= 0.9)
        runs_wh = all_results.get(n, {}).get("gateway-webhooks")
        lost = sum(r.get("lost", 0) + r["timeouts"] for r in runs_wh) if runs_wh else None
        check(f"{n} [webhooks]: payments lost (all runs)", lost, "== 0", lambda v: v == 0)
    lines = []
    for label, value, goal, ok in checks:
        if value is None:
            continue
        verdict = "met" if ok else "NOT MET"
        shown = f"{value:.3f}" if value == value and abs(value) < 10 else fmt(value)
        lines.append(f"  {label:<46} {shown:>9}   target {goal:<8} {verdict}")
    return lines


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({model}), {platform.platform()}, "
        f"Python {platform.python_version()}; load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenarios", default="1,2,3,4,5,6", help="default 1,2,3,4,5,6 (7 is a diagnostic)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run each")
    parser.add_argument(
        "--clients", type=int, default=2, help="load-generator processes (default 2)"
    )
    parser.add_argument(
        "--uvicorn-scenarios",
        default="2,7",
        help="scenarios also run on uvicorn, when installed (default 2,7; '' for none)",
    )
    parser.add_argument(
        "--targets",
        help="only these, e.g. 'reference', 'gateway,gateway-uvicorn' or "
        "'gateway,gateway-webhooks'",
    )
    parser.add_argument("--ping-every", type=float, help="scenario 4 heartbeat interval, s")
    parser.add_argument(
        "--idle-connect-s", type=float, help="scenario 4: time to connect the idle fleet, s"
    )
    parser.add_argument("--seconds", type=float, help="measuring window of closed loops, s")
    parser.add_argument(
        "--idle", type=int, help="scenario 4: idle terminals (default 10,000; smoke 50)"
    )
    parser.add_argument(
        "--storm", type=int, help="scenario 5: terminals in the storm (default 5,000; smoke 40)"
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="scenarios 2 and 6 also run as 'gateway-webhooks': one webhook endpoint per store "
        "subscribed to every event, posting to a receiver on 127.0.0.1 (issue 15: throughput "
        ">= 0.9x the gateway without); prints deliveries received and still pending",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy (raw, 200 Hz, --threads) the gateway's first process during the measuring "
        "window of closed loops (scenarios 2, 3, 6, 7) and scenario 4's probes (10 s), one "
        "file per run in this folder",
    )
    args = parser.parse_args()
    args.uvicorn_scenarios = {int(n) for n in args.uvicorn_scenarios.split(",") if n}
    args.targets = set(args.targets.split(",")) if args.targets else None
    loadgen.raise_fd_limit()
    size = dict(SIZES["smoke" if args.smoke else "full"])
    if args.ping_every:
        size["ping_every"] = args.ping_every
    if args.seconds:
        size["seconds"] = args.seconds
    if args.idle_connect_s:
        size["idle_connect_s"] = args.idle_connect_s
    if args.idle:
        size["idle"] = args.idle
    if args.storm:
        size["storm"] = args.storm
    runs = 1 if args.smoke else args.runs
    scenarios = [int(n) for n in args.scenarios.split(",") if n]
    print(f"POS Gateway benchmark on {machine()}", flush=True)
    print(
        f"{'smoke' if args.smoke else 'full'} sizes, {runs} run(s) per scenario, "
        f"{args.clients} load-generator process(es)",
        flush=True,
    )
    all_results: dict[int, dict[str, list[dict]]] = {}
    started_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="posgw-bench-") as tmp:
        workdir = Path(tmp)
        fleet = build_fleet(
            workdir,
            max(size["s2_pairs"], size["s3_pairs"] if 3 in scenarios else 0),
            max(size["idle"] if 4 in scenarios else 0, size["storm"] if 5 in scenarios else 0),
        )
        for number in scenarios:
            started = time.monotonic()
            print(TITLES[number].format(**size), flush=True)
            results = run_scenario(number, size, runs, workdir, fleet, args)
            all_results[number] = results
            for line in summarise(results):
                print(line, flush=True)
            print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    report = targets_report(all_results)
    if report and not args.smoke:
        print("Targets of issue 7 (medians of this invocation)")
        for line in report:
            print(line)
    print(
        f"Done in {time.monotonic() - started_all:.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine(), "size": size, "runs": runs, "results": all_results},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
