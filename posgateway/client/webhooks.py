"""Verify a webhook from POS Gateway in your own receiver (docs/webhooks.md).

    from posgateway.client.webhooks import verify
    event = verify(request_body_bytes, request_headers, "whsec_...")

It checks the Standard Webhooks signature (any of the ``v1,`` signatures sent: two during the
24 h after a secret rotation) and that ``webhook-timestamp`` is within 5 minutes, with the
``standardwebhooks`` package, and returns the parsed event
``{"id", "type", "createdAt", "group", "data"}``. Events may arrive more than once and in any
order: dedupe on ``id`` (the ``webhook-id`` header).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify"]


def verify(body: bytes | str, headers: Mapping[str, str], secret: str) -> dict[str, Any]:
    """The verified event; raises WebhookVerificationError for a wrong or missing signature,
    an old or future timestamp, or missing headers. Pass the body exactly as received."""
    event = Webhook(secret).verify(body, dict(headers.items()))
    if not isinstance(event, dict):
        raise WebhookVerificationError("The body is not a JSON object")
    return event
