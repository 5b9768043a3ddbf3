"""``make run``'s helpers, before and after the server: is the port free, is the server ready.

Standard library only: ``make run`` calls it with the system's python3, before the virtualenv
exists, so a taken port is reported before anything is installed, migrated or re-keyed.

    python3 -m posgateway.backoffice.demo check-port HOST PORT
    python3 -m posgateway.backoffice.demo announce-ready HOST PORT PID
"""

from __future__ import annotations

import os
import socket
import sys
import time

READY_TIMEOUT_S = 120


def port_taken(host: str, port: int) -> bool:
    """Something already listens on host:port (another ``make run``, say)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def urls(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    return (
        f"{base}/ (dashboard {base}/dashboard/, admin {base}/admin/, "
        f"POS and terminals ws://{host}:{port}/ws/)"
    )


def check_port(host: str, port: int) -> int:
    if port_taken(host, port):
        sys.stderr.write(
            f"make run: port {port} on {host} is already in use (another `make run`?): "
            f"stop it, or choose another port with PORT={port + 1} make run\n"
        )
        return 1
    return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announce_ready(host: str, port: int, pid: int) -> int:
    """Print one line once the server (process ``pid``) accepts connections."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and alive(pid):
        if port_taken(host, port):
            sys.stdout.write(f"ready: {urls(host, port)}\n")
            sys.stdout.flush()
            return 0
        time.sleep(0.1)
    return 1


def main(argv: list[str]) -> int:
    command, host, port, *rest = argv
    if command == "check-port":
        return check_port(host, int(port))
    if command == "announce-ready":
        return announce_ready(host, int(port), int(rest[0]))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
