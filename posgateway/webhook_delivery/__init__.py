"""Webhook delivery: the worker that sends a store's events to its endpoints over HTTP.

An interface over the ``webhooks`` domain app (which keeps endpoints, events, deliveries and
leases): it renders each event's body with the REST representations, signs it with the
``standardwebhooks`` package and POSTs it with ``httpx``. Every server process runs one
(``start``/``stop``, from posgateway.asgi) unless WEBHOOK_IN_PROCESS=0; ``manage.py
webhook_worker`` runs a dedicated one.
"""
