"""The REST API's throttles: DRF's, counted in Django's cache (Redis when REDIS_URL is set, so
every process counts together), letting requests through while that cache cannot be reached.

A Redis outage already stops the real-time side (docs/operations.md); the REST API reads the
database alone and keeps answering meanwhile, unthrottled, with one warning per failed count
instead of a 500 on every request.
"""

from __future__ import annotations

import logging

from rest_framework import throttling

logger = logging.getLogger(__name__)


class _CacheDownAllows:
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except Exception as exc:
            logger.warning("REST throttle not counted, the cache is unreachable: %s", exc)
            return True


class UserRateThrottle(_CacheDownAllows, throttling.UserRateThrottle):
    """Requests per authenticated user (``API_THROTTLE_USER``)."""


class AnonRateThrottle(_CacheDownAllows, throttling.AnonRateThrottle):
    """Requests per client address without a valid login or token (``API_THROTTLE_ANON``)."""
