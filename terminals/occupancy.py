"""What keeps a terminal busy, and what it shows between requests.

Both are rules of the terminal, but the work that occupies one (a payment, a display or input
request) and the session that puts up its waiting screen belong to the apps above this one.
Those apps describe their part here when Django starts (their ``AppConfig.ready``), so that
``terminals`` imports none of them and every app asks the same questions the same way:

- :func:`busy_with` — "one thing in flight per terminal", whatever kind of work it is;
- :func:`waiting_screen` — the waitingScreen a request forwarded now carries.

The SQL fragments (for the one-statement payment path) are built from the models' ``_meta``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models

from posgateway.core.sql import column as column_of
from posgateway.core.sql import execute
from terminals.models import Device


@dataclass(frozen=True)
class InFlightKind:
    """A kind of work that occupies its terminal while in one of ``statuses``."""

    key: str  # how the "Terminal is busy" answer names it: inFlightTransactionId
    model: type[models.Model]
    id_field: str  # the field holding the id shown: transaction_id
    status_field: str
    statuses: tuple[str, ...]

    def first(self, terminal_pk: int) -> str | None:
        """The id of this kind's work in flight on the terminal, or None."""
        return (
            self.model._default_manager.filter(
                terminal_id=terminal_pk, **{f"{self.status_field}__in": self.statuses}
            )
            .values_list(self.id_field, flat=True)
            .first()
        )

    def subquery(self, terminal_column: str) -> str:
        """SQL for the id in flight on the terminal in ``terminal_column``, NULL if none."""
        meta = self.model._meta
        column = column_of(meta.get_field(self.id_field))
        status = column_of(meta.get_field(self.status_field))
        terminal = column_of(meta.get_field("terminal"))
        statuses = ", ".join(f"'{s}'" for s in self.statuses)  # TextChoices values: constants
        return (
            f"(SELECT x.{column} FROM {meta.db_table} x"  # noqa: S608 (model metadata)
            f" WHERE x.{terminal} = {terminal_column} AND x.{status} IN ({statuses}) LIMIT 1)"
        )


_KINDS: list[InFlightKind] = []


def register_in_flight(kind: InFlightKind) -> None:
    if all(k.model is not kind.model for k in _KINDS):
        _KINDS.append(kind)


def in_flight_kinds(*, exclude: type[models.Model] | None = None) -> list[InFlightKind]:
    return [k for k in _KINDS if k.model is not exclude]


def busy_with(*, terminal_pk: int) -> dict[str, str] | None:
    """What keeps a terminal busy (``{"inFlightTransactionId": "T-1"}``), or None."""
    for kind in _KINDS:
        value = kind.first(terminal_pk)
        if value is not None:
            return {kind.key: value}
    return None


# --- The waiting screen -------------------------------------------------------------------------

Screen = Callable[..., dict[str, Any] | None]


@dataclass(frozen=True)
class WaitingScreens:
    """Where waiting screens come from (the sessions app)."""

    screen: Screen  # (terminal_pk=, operation_type=) -> waitingScreen or None; restarts its clock
    active_subquery: Callable[[str], str]  # SQL, non-NULL while the terminal has an active session


_SCREENS: list[WaitingScreens] = []


def register_waiting_screens(source: WaitingScreens) -> None:
    _SCREENS[:] = [source]


def waiting_screen(*, terminal_pk: int, operation_type: str) -> dict[str, Any] | None:
    """The waitingScreen a request of ``operation_type`` forwarded now carries, if any."""
    for source in _SCREENS:
        return source.screen(terminal_pk=terminal_pk, operation_type=operation_type)
    return None


def session_subquery(terminal_column: str) -> str:
    """SQL, non-NULL while the terminal in ``terminal_column`` may show a waiting screen."""
    for source in _SCREENS:
        return source.active_subquery(terminal_column)
    return "NULL"


def terminal_pending(*, terminal_pk: int) -> tuple[set[type[models.Model]], bool]:
    """(the models of the work in flight on the terminal, whether it may have an active
    session), in one statement: what a terminal that connects may have to be sent again."""
    columns = [kind.subquery("d.id") for kind in _KINDS] + [session_subquery("d.id")]
    row = execute(
        f"SELECT {', '.join(columns)} FROM {Device._meta.db_table} d"  # noqa: S608 (model metadata)
        " WHERE d.id = %s",
        [terminal_pk],
        fetch="one",
    )
    if row is None:
        return set(), False
    in_flight = {kind.model for kind, value in zip(_KINDS, row, strict=False) if value is not None}
    return in_flight, row[-1] is not None
