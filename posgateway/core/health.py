"""What this process knows about the parts it depends on: up, or down since when.

The database and the channel layer (Redis in production) can each go away. Every part of the
gateway that meets such a failure reports it to :data:`DATABASE` or :data:`CHANNEL_LAYER`:
the first failure logs one warning naming the part, the ones after it are counted quietly,
and the first success once RECOVERY_QUIET_S passed without a failure logs that it is back. An
outage therefore reads as two lines per process, not a traceback per frame, even when some
uses keep succeeding meanwhile (a lock on one table, say). ``GET /healthz`` asks both parts
(posgateway.gateway.health).
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import InterfaceError, OperationalError

logger = logging.getLogger("posgateway.health")

# A part that failed is back at its first success this long after its last failure.
RECOVERY_QUIET_S = 5.0


class Dependency:
    """One part the gateway depends on, as this process last met it: up, or down since when."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.down_since: float | None = None
        self.last_failure = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, what: str = "") -> None:
        """A use of this part failed: the first failure of an outage logs one warning."""
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            self.last_failure = now
            if self.down_since is not None:
                return
            self.down_since = now
        where = f" ({what})" if what else ""
        logger.warning("%s unavailable%s: %s", self.label, where, describe(exc))

    def ok(self) -> None:
        """A use of this part succeeded: if it was down and has not failed since
        RECOVERY_QUIET_S, say it is back."""
        if self.down_since is None:
            return
        now = time.monotonic()
        with self._lock:
            if self.down_since is None or now - self.last_failure < RECOVERY_QUIET_S:
                return
            lasted, failures = self.last_failure - self.down_since, self.failures
            self.down_since, self.failures = None, 0
        logger.info(
            "%s is back after %.1f s of failures (%d failed uses)", self.label, lasted, failures
        )

    def reset(self) -> None:
        """Count the part as up, without a word (tests start from here)."""
        with self._lock:
            self.down_since, self.failures, self.last_failure = None, 0, 0.0


def describe(exc: BaseException) -> str:
    """An exception in one line: its class and its first line of text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_database_outage(exc: BaseException) -> bool:
    """The database is unreachable, restarting or locked (not: it refused one query)."""
    return isinstance(exc, OperationalError | InterfaceError)


DATABASE = Dependency("database")
CHANNEL_LAYER = Dependency("channel layer")
