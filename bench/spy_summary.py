"""Summarise a py-spy raw profile (``py-spy record --threads -f raw``) of the gateway.

    python bench/spy_summary.py /tmp/prof/s2-gateway-1234.txt [--top 30]

Prints where the samples went: per thread (the event loop vs the database worker thread that
``database_sync_to_async`` runs every ORM call in), and per kind of work: running SQL in the
driver, the ORM building queries and model instances, the channel layer, the WebSocket
transport (daphne/twisted/autobahn or uvicorn/websockets), thread hops, and time a thread spent
runnable but waiting for the GIL (py-spy counts that as active: the loop right after
``epoll_wait`` returns, or inside uvloop's C loop; the worker right after it hands a result to
the loop with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

PROJECT = ("terminals/", "payments/", "posgateway/", "sessions/")
KINDS = [
    # The loop thread counted active in epoll_wait (asyncio) or inside uvloop's C loop: it has
    # events and waits to take the GIL back (plus, for uvloop, the C loop's own work).
    (
        "GIL wait / C event loop (loop)",
        lambda fr, leaf: _in(leaf, "EpollSelector.select", "Runner.run (asyncio/runners.py"),
    ),
    # The worker right after a hop's result was handed to the loop (call_soon_threadsafe).
    ("GIL wait after waking the loop", lambda fr, leaf: _in(leaf, "_write_to_self", "_call_set_")),
    ("SQL: driver execute/commit", lambda fr, leaf: _any(fr, "CursorWrapper._execute", "_commit")),
    ("ORM: building queries, model objects", lambda fr, leaf: _any(fr, "django/db/")),
    ("channel layer", lambda fr, leaf: _any(fr, "channels/layers.py", "channels_redis", "redis/")),
    (
        "WebSocket/HTTP transport",
        lambda fr, leaf: (
            _in(leaf, "autobahn/", "twisted/", "daphne/", "uvicorn/", "websockets/")
            or _in(leaf, "httptools", "h11/", "uvloop")
        ),
    ),
    ("thread hop (asgiref)", lambda fr, leaf: _in(leaf, "asgiref/", "channels/db.py", "futures/")),
    ("json", lambda fr, leaf: _in(leaf, "json/")),
    ("logging", lambda fr, leaf: _in(leaf, "logging/")),
    ("asyncio machinery", lambda fr, leaf: _in(leaf, "asyncio/", "selectors.py")),
    ("gateway code (consumer, services)", lambda fr, leaf: _in(leaf, *PROJECT)),
    ("other", lambda fr, leaf: True),
]


def _in(frame: str, *needles: str) -> bool:
    return any(n in frame for n in needles)


def _any(frames: list[str], *needles: str) -> bool:
    return any(n in f for f in frames for n in needles)


def thread_of(first: str) -> str:
    if "MainThread" in first:
        return "event loop (main thread)"
    if "ThreadPoolExecutor" in first or "asgiref" in first:
        return "database worker thread"
    return re.sub(r"\s*\(\d+\)", "", first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25, help="inclusive functions to list")
    args = parser.parse_args()
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: collections.Counter[str] = collections.Counter()
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = thread_of(frames[0])
        total += n
        threads[thread] += n
        leaf = frames[-1]
        for name, match in KINDS:
            if match(frames, leaf):
                kinds[thread][name] += n
                break
        seen = set()
        for frame in frames[1:]:
            key = re.sub(r":\d+\)$", ")", frame)
            if key not in seen:
                seen.add(key)
                inclusive[key] += n
    print(f"{args.profile}: {total} samples")
    for thread, n in threads.most_common():
        print(f"  {n / total:6.1%}  {thread}")
        for name, k in kinds[thread].most_common():
            print(f"      {k / total:6.1%}  {name}")
    print(f"  top {args.top} by inclusive samples (project and library functions):")
    boring = ("threading.py", "thread.py", "runners.py", "base_events.py", "<module>", "cli.py")
    shown = 0
    for key, n in inclusive.most_common():
        if shown >= args.top:
            break
        if any(b in key for b in boring):
            continue
        print(f"      {n / total:6.1%}  {key}")
        shown += 1


if __name__ == "__main__":
    main()
