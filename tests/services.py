"""Which real services this machine has, and the rule for tests that need them.

A test that needs PostgreSQL, Redis, Node or Chromium skips with a clear reason where they are
missing, except under CI (CI=true), where such a skip is a failure: CI has them all.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI requires this, but: {reason}", pytrace=False)
    pytest.skip(reason)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def postgres_url() -> str:
    """The PostgreSQL server to use: DATABASE_URL if it is one, else the machine's default."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    if not _reachable(url, 5432):
        missing(f"PostgreSQL is not reachable at {url}")
    return url


def redis_url() -> str:
    url = os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if not _reachable(url, 6379):
        missing(f"Redis is not reachable at {url}")
    return url


def node_with_ws() -> str:
    node = shutil.which("node")
    if node is None:
        missing("Node.js is not installed")
    if not (ROOT / "tests" / "node" / "node_modules" / "ws").is_dir():
        missing("the npm ws package is not installed (make node-deps)")
    return node
