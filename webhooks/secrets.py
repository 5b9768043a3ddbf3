"""Signing secrets: made, encrypted at rest, decrypted only to sign.

A secret is ``whsec_`` + Base64 of 32 random bytes (Standard Webhooks). The database keeps it
encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key from the
settings, so a database dump alone does not let anyone sign:

- ``WEBHOOK_ENCRYPTION_KEYS`` (comma-separated Fernet keys): the first encrypts, every one
  decrypts. To rotate: put a new key first, keep the old one after it, run
  ``manage.py webhook_reencrypt``, then drop the old key.
- unset: a key derived from ``SECRET_KEY`` (and one from each of ``SECRET_KEY_FALLBACKS``, so a
  ``SECRET_KEY`` rotated the Django way still decrypts until ``webhook_reencrypt`` ran).

A secret is never logged: it is shown once (creation, rotation) and leaves this module only
for the signing code.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as random

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A new signing secret: ``whsec_`` + Base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(random.token_bytes(SECRET_BYTES)).decode()


def _derived(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"posgateway webhook secrets\x00" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


def _keys() -> list[bytes]:
    configured = list(getattr(settings, "WEBHOOK_ENCRYPTION_KEYS", []) or [])
    if configured:
        return [key.encode() for key in configured]
    fallbacks = list(getattr(settings, "SECRET_KEY_FALLBACKS", []) or [])
    return [_derived(settings.SECRET_KEY), *(_derived(key) for key in fallbacks)]


def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key) for key in _keys()])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "WEBHOOK_ENCRYPTION_KEYS: each key must be 32 url-safe Base64-encoded bytes "
            "(Fernet.generate_key())"
        ) from exc


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    """The secret of an encrypted token; ImproperlyConfigured when no configured key opens it
    (the encryption key was changed without keeping the old one)."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A webhook signing secret cannot be decrypted with the configured keys: keep the "
            "old key in WEBHOOK_ENCRYPTION_KEYS (or SECRET_KEY_FALLBACKS) until "
            "`manage.py webhook_reencrypt` ran (docs/webhooks.md)"
        ) from None


def reencrypt(token: str) -> str:
    """The same secret under the first (current) key."""
    return _fernet().rotate(token.encode()).decode()
