"""Where the memory of an idle WebSocket connection goes in the gateway: tracemalloc in a real
daphne process, before and after ``--count`` idle terminals connect.

    python bench/conn_memory.py                   # 1,000 idle terminals, top 25 allocation sites
    python bench/conn_memory.py --count 2000 --top 40 --group filename

The gateway runs as daphne runs it in bench/run.py, on a throwaway SQLite fleet, with
tracemalloc started before anything is imported (tracemalloc itself slows the process and adds
its own overhead to RSS: read the RSS figure from bench/run.py's scenario 4, and the split from
here). Allocation sites are grouped by the innermost frame of this project, or by the innermost
frame when none is (``--group lineno``), or by file (``--group filename``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

# Run inside the daphne child: start tracemalloc, dump a snapshot on SIGUSR1.
CHILD = """
import os, pickle, signal, sys, tracemalloc
tracemalloc.start(12)
def dump(*_):
    snap = tracemalloc.take_snapshot()
    n = len([f for f in os.listdir(os.environ["SNAP_DIR"]) if f.endswith(".snap")])
    path = os.path.join(os.environ["SNAP_DIR"], f"{n}.snap")
    with open(path + ".tmp", "wb") as fh:
        pickle.dump(snap, fh)
    os.rename(path + ".tmp", path)
signal.signal(signal.SIGUSR1, dump)
from daphne.cli import CommandLineInterface
sys.argv = ["daphne", *sys.argv[1:]]
CommandLineInterface.entrypoint()
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def snapshot(proc: subprocess.Popen, snap_dir: Path) -> tracemalloc.Snapshot:
    before = set(snap_dir.glob("*.snap"))
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = set(snap_dir.glob("*.snap")) - before
        if new:
            with new.pop().open("rb") as fh:
                return pickle.load(fh)
        time.sleep(0.2)
    raise TimeoutError("no snapshot from the server")


async def hold(url: str, keys: list[str], ready: asyncio.Event, done: asyncio.Event) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    import loadgen

    sem = asyncio.Semaphore(100)
    deadline = time.monotonic() + 120

    async def one(key: str):
        async with sem:
            return await loadgen.connect(url, key, deadline)

    sockets = await asyncio.gather(*(one(k) for k in keys))
    ready.set()
    await done.wait()
    await loadgen.close_quietly(list(sockets))
    return len(sockets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("project", "lineno", "filename"), default="project")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import loadgen
    import run as bench

    loadgen.raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="posgw-mem-") as tmp:
        workdir = Path(tmp)
        fleet = bench.build_fleet(workdir, 10, args.count)
        db = workdir / "gateway.sqlite3"
        db.write_bytes(fleet.sqlite_template.read_bytes())
        port = bench.free_port()
        env = bench.base_env(DATABASE_URL=f"sqlite:///{db}", SNAP_DIR=str(workdir))
        cmd = bench.server_command("daphne", port)
        log = (workdir / "daphne.log").open("wb")
        proc = subprocess.Popen(
            [PY, "-c", CHILD, *cmd[1:]], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            target = bench.Proc.__new__(bench.Proc)
            target.proc, target.port = proc, port
            bench.wait_listening(target, health=True)
            keys = [k for _slug, k in fleet.idle(args.count)]
            url = f"ws://127.0.0.1:{port}/ws/"

            async def measure() -> None:
                # One terminal first, so every lazy import and cache is warm in the baseline.
                warm = await loadgen.connect(url, keys[0], time.monotonic() + 60)
                await asyncio.sleep(1)
                rss0 = rss_kib(proc.pid)
                loop = asyncio.get_running_loop()
                snap0 = await loop.run_in_executor(None, snapshot, proc, workdir)
                ready, done = asyncio.Event(), asyncio.Event()
                task = asyncio.create_task(hold(url, keys[1:], ready, done))
                await ready.wait()
                await asyncio.sleep(3)
                rss1 = rss_kib(proc.pid)
                snap1 = await loop.run_in_executor(None, snapshot, proc, workdir)
                done.set()
                n = await task
                await loadgen.close_quietly([warm])
                report(snap0, snap1, n, rss1 - rss0, args)

            asyncio.run(measure())
        finally:
            proc.terminate()
            proc.wait(30)


def report(snap0, snap1, n: int, rss_delta: int, args) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    snap0, snap1 = snap0.filter_traces(filters), snap1.filter_traces(filters)
    total = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    print(f"{n} idle connections: RSS +{rss_delta / n:.1f} KiB each (under tracemalloc)")
    print(f"Python allocations: +{total / n / 1024:.1f} KiB each; top sites (bytes each):")
    if args.group == "project":
        sizes: dict[str, int] = {}
        for stat in snap1.compare_to(snap0, "traceback"):
            frames = list(stat.traceback)  # oldest first
            ours = [f for f in frames if str(ROOT) in f.filename and "/.venv/" not in f.filename]
            inner = frames[-1]
            key = f"{_short(inner.filename)}:{inner.lineno}"
            if ours and ours[-1] is not inner:
                key += f"  (from {_short(ours[-1].filename)}:{ours[-1].lineno})"
            sizes[key] = sizes.get(key, 0) + stat.size_diff
        rows = sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]
    else:
        rows = [
            (f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}", s.size_diff)
            if args.group == "lineno"
            else (_short(s.traceback[0].filename), s.size_diff)
            for s in snap1.compare_to(snap0, args.group)[: args.top]
        ]
    for key, size in rows:
        print(f"  {size / n:>8,.0f}  {key}")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    main()
