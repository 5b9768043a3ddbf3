"""Webhooks: a store's events, kept in the transaction of the change, delivered to its endpoints."""
