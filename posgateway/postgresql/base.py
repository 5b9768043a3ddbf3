"""Django's PostgreSQL backend, health-checking a reused connection at most once a second.

With ``conn_health_checks`` Django runs ``SELECT 1`` before the first query after every
``close_old_connections()``, which it means to happen once per HTTP request. Channels calls it
before and after every ``database_sync_to_async`` hop, that is for every frame of every
socket: a payment round trip paid two extra round trips to PostgreSQL for it (~15 % of
scenario 6's throughput, docs/performance.md).

Here a connection that passed a check less than ``HEALTH_CHECK_EVERY_S`` ago counts as checked.
What a health check is for still holds: after PostgreSQL restarts, the first hop more than a
second after the last check finds the connection dead and reconnects. A query on a dead
connection inside that second fails as it would without checks (the frame is answered
``Failed to process message``), and Django closes the connection after that hop
(``errors_occurred``), so the next one reconnects.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_EVERY_S = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _checked_at = float("-inf")

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and self.health_check_enabled:
            now = time.monotonic()
            if now - self._checked_at < HEALTH_CHECK_EVERY_S:
                self.health_check_done = True
                return
            if not self.health_check_done:
                self._checked_at = now
        super().close_if_health_check_failed()

    def connect(self) -> None:
        super().connect()
        self._checked_at = time.monotonic()  # a new connection needs no check for a second
