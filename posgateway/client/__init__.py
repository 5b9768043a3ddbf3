"""A small typed Python client for POS Gateway, so a Python POS or terminal needs no hand-written
JSON: :class:`GatewayClient` speaks the WebSocket protocol as a desktop or as a terminal, and
:class:`TerminalApiClient` begins and ends Terminal API sessions over HTTP, and
:func:`posgateway.client.webhooks.verify` checks a webhook's signature in your receiver.
"""

from posgateway.client.terminal_api import Operation, TerminalApiClient, TerminalApiError
from posgateway.client.webhooks import WebhookVerificationError
from posgateway.client.webhooks import verify as verify_webhook
from posgateway.client.ws import GatewayClient, GatewayError, PaymentResult

__all__ = [
    "GatewayClient",
    "GatewayError",
    "Operation",
    "PaymentResult",
    "TerminalApiClient",
    "TerminalApiError",
    "WebhookVerificationError",
    "verify_webhook",
]
