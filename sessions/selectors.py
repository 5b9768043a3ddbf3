"""Reads of Terminal API sessions and display / input requests for the REST API.

Scoped like every other read to the stores a user may see (``terminals.selectors``): another
store's session or request is simply not there.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from sessions.models import TerminalRequest, TerminalSession
from terminals.selectors import in_user_stores


def session_list(*, user: Any) -> QuerySet[TerminalSession]:
    """The sessions of the user's stores, newest first, with store and devices joined."""
    return in_user_stores(
        TerminalSession.objects.select_related("group", "terminal", "desktop"), user=user
    ).order_by("-begun_at", "-pk")


def session_detail_list(*, user: Any) -> QuerySet[TerminalSession]:
    """``session_list`` with each session's requests prefetched, oldest first (``request_list``)."""
    return session_list(user=user).prefetch_related(
        Prefetch(
            "requests",
            queryset=TerminalRequest.objects.order_by("created_at", "pk"),
            to_attr="request_list",
        )
    )


def terminal_request_list(*, user: Any) -> QuerySet[TerminalRequest]:
    """The display and input requests of the user's stores, newest first, in flight included."""
    return in_user_stores(
        TerminalRequest.objects.select_related("group", "terminal", "desktop", "session"),
        user=user,
    ).order_by("-created_at", "-pk")
