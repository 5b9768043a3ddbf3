"""REST API tokens at rest: DRF's ``authtoken_token`` rows hold a digest, never the token.

Device keys are stored as SHA-256 digests (``terminals.models.hash_key``); API tokens get the
same treatment. Every *new* Token row, whoever makes it (``create_staff``, DRF's
``drf_create_token``, a test), is saved under the digest of its key; the instance in hand keeps
the token itself, so the one creating it can show it once, as DRF's own code expects
(``Token.objects.create(user=u).key``). A row read back holds only the digest: a lost token
cannot be shown again, only replaced. ``posgateway.rest.authentication`` hashes what a client
sends before the lookup.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authtoken.models import Token

from terminals.models import hash_key

# authtoken_token.key is 40 characters: the first 160 bits of the SHA-256 (tokens are random,
# so that is as hard to invert as the whole digest, and needs no migration of DRF's table).
DIGEST_LENGTH = 40


def token_digest(token: str) -> str:
    """What the database holds for a REST API token."""
    return hash_key(token)[:DIGEST_LENGTH]


def hash_new_token(sender: type, instance: Token, **kwargs: Any) -> None:
    """pre_save of Token: a row being inserted gets the digest as its key."""
    if instance._state.adding and not kwargs.get("raw"):
        token = instance.key or Token.generate_key()
        # An attribute of our own on DRF's model, for show_token_once.
        instance.shown_once = token  # type: ignore[attr-defined]
        instance.key = token_digest(token)


def show_token_once(sender: type, instance: Token, created: bool, **kwargs: Any) -> None:
    """post_save of Token: the creator's instance carries the token itself, this once."""
    token = getattr(instance, "shown_once", None)
    if created and token:
        instance.key = token
        del instance.shown_once  # type: ignore[attr-defined]  # set by hash_new_token
