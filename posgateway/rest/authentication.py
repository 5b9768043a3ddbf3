"""REST API authentication: the token a client sends, looked up by its digest."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication

from terminals.tokens import token_digest


class HashedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <token>``, looked up by the token's digest."""

    def authenticate_credentials(self, key: str) -> Any:
        return super().authenticate_credentials(token_digest(key))
