"""Test data, made through the same services production uses, and the helpers that call them.

Plain functions and classes, no fixtures: the conftests and test modules wrap them in fixtures.
Payments and refunds in specific states and at specific times are the exception:
``make_payment`` and ``make_refund`` write them with the ORM, as the services would have left
them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

from payments.models import Transaction, TransactionStatus, TransactionType
from posgateway.core.events import Outbox
from posgateway.gateway import delivery, frames
from terminals import services
from terminals.models import Connection, Device, DeviceType, Group

STAFF_PASSWORD = "correct horse battery"

_serial = itertools.count(1)


def make_group(slug: str = "store-a") -> Group:
    return services.group_get_or_create(slug=slug)


def make_device(
    group: Group | str = "store-a",
    device_type: str = DeviceType.TERMINAL,
    device_id: str | None = None,
    label: str = "",
) -> tuple[Device, str]:
    if isinstance(group, str):
        group = make_group(group)
    return services.device_create(
        group=group, device_type=device_type, device_id=device_id, label=label
    )


class Store:
    """A store with one desktop (deviceId POS-1) and one terminal (TERM-1), and their keys."""

    terminal_label = ""

    def __init__(self, slug: str, timezone: str = "UTC") -> None:
        self.group: Group = make_group(slug)
        if timezone != "UTC":
            self.group.timezone = timezone
            self.group.save(update_fields=["timezone"])
        self.desktop, self.desktop_key = make_device(self.group, DeviceType.DESKTOP, "POS-1")
        self.terminal, self.terminal_key = make_device(
            self.group, DeviceType.TERMINAL, "TERM-1", label=self.terminal_label
        )

    @property
    def slug(self) -> str:
        return self.group.slug


def make_staff(username: str, *slugs: str):
    """A staff user of the stores ``slugs`` (password STAFF_PASSWORD), its API token in
    ``api_token``."""
    user, token = services.staff_create_or_update(
        username=username, group_slugs=slugs, password=STAFF_PASSWORD
    )
    user.api_token = token
    return user


def make_superuser():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")


def make_payment(
    store: Store,
    transaction_id: str | None = None,
    *,
    amount: str = "10.00",
    currency: str = "EUR",
    status: str = TransactionStatus.SUCCESS,
    created_at: dt.datetime | None = None,
    completed_at: dt.datetime | None = None,
    completed: bool = True,
    late: bool = False,
    terminal: Device | None = None,
    desktop: Device | None = None,
    metadata: dict[str, Any] | None = None,
    customer_info: dict[str, Any] | None = None,
    error_message: str = "",
    authorization_code: str = "",
) -> Transaction:
    """A payment as the services would have left it, written directly (any state, any time).

    A payment in a final state is completed 5 s after it was created, unless ``completed_at``
    says when; ``completed=False`` leaves it without a completion time unless one is given.
    """
    terminal = terminal or store.terminal
    txn = Transaction.objects.create(
        group=store.group,
        transaction_id=transaction_id or f"TXN-{next(_serial)}",
        amount=Decimal(amount),
        currency=currency,
        payment_method="CARD",
        metadata=metadata or {},
        customer_info=customer_info or {},
        status=status,
        late=late,
        error_message=error_message,
        authorization_code=authorization_code,
        desktop=desktop or store.desktop,
        terminal=terminal,
        terminal_ref=terminal.device_id or "",
    )
    created_at = created_at or txn.created_at
    final = status not in (TransactionStatus.PENDING, TransactionStatus.IN_PROGRESS)
    if completed and final and completed_at is None:
        completed_at = created_at + dt.timedelta(seconds=5)
    # auto_now_add would overwrite a created_at given to create().
    Transaction.objects.filter(pk=txn.pk).update(created_at=created_at, completed_at=completed_at)
    txn.refresh_from_db()
    return txn


def make_refund(
    store: Store,
    original: Transaction,
    transaction_id: str | None = None,
    *,
    amount: str = "1.00",
    status: str = TransactionStatus.SUCCESS,
    created_at: dt.datetime | None = None,
    reason: str = "",
    user: Any = None,
    terminal: Device | None = None,
) -> Transaction:
    """A refund of ``original`` as the services would have left it, written directly; a
    SUCCESS one is added to the payment's ``refunded_amount`` as the service adds it."""
    refund = make_payment(
        store,
        transaction_id,
        amount=amount,
        currency=original.currency,
        status=status,
        created_at=created_at,
        terminal=terminal,
    )
    # Started by staff (``user``), a refund has no desktop.
    Transaction.objects.filter(pk=refund.pk).update(
        type=TransactionType.REFUND,
        original=original,
        reason=reason,
        initiated_by=user,
        desktop=store.desktop if user is None else None,
    )
    if status == TransactionStatus.SUCCESS:
        original.refunded_amount += Decimal(amount)
        original.save(update_fields=["refunded_amount"])
    refund.refresh_from_db()
    return refund


def _renders(dispatcher: Any, value: Any) -> bool:
    return dispatcher.dispatch(type(value)) is not dispatcher.dispatch(object)


def render(value: Any) -> Any:
    """A service's outcome as the gateway answers with it (``frames.reply``), the events it
    returns for a socket (a backlog) as the frames they are sent as; anything else as it is."""
    if isinstance(value, list):
        return [render(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(render(item) for item in value)
    if _renders(frames.reply, value):
        return frames.reply(value)
    if _renders(frames.device_frame, value):
        return frames.device_frame(value)
    return value


def sent(outbox: Outbox) -> tuple[list, list]:
    """What the gateway sends for the outbox's committed events: (channel-layer messages to
    devices as (channel, message, on_fail), messages to groups as (group, message): the
    dashboards', and a Terminal API transaction's end to its own group)."""
    to_devices, groups, _ = delivery.messages(outbox.take())
    return to_devices, groups


class Runner:
    """Calls a service with a fresh Outbox, running its after-commit hooks as a commit would,
    and returns its outcome as the gateway renders it (:func:`render`).

    Records what was sent: ``raw`` the last call's channel-layer messages, ``groups`` the
    messages for channel-layer groups (the dashboards, a Terminal API transaction's waiters)
    of every call so far.
    """

    def __init__(self, capture) -> None:
        self.capture = capture
        self.raw: list[tuple[str, dict[str, Any], Any]] = []
        self.groups: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, service, /, **kwargs: Any) -> Any:
        outbox = Outbox()
        try:
            with self.capture(execute=True):
                return render(service(outbox=outbox, **kwargs))
        finally:
            self.raw, groups = sent(outbox)
            self.groups += groups

    @property
    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        """(channel, frame) for frames; (channel, message) for other channel-layer messages."""
        return [
            (channel, message["frame"] if message["type"] == "gateway.frame" else message)
            for channel, message, _ in self.raw
        ]

    def frames_to(self, channel: str) -> list[dict[str, Any]]:
        return [frame for ch, frame in self.sent if ch == channel]


def open_connection(run: Runner, device: Device, channel_name: str) -> Connection:
    """The device connects on ``channel_name``, through the service its consumer calls."""
    return run(
        services.connection_open, device_pk=device.pk, channel_name=channel_name, remote_addr=""
    )


def clear_own_cache() -> None:
    """Empty this test process's cache (the REST throttle counts), and only its keys.

    With REDIS_URL the cache is in the Redis every process shares: Django's ``cache.clear()``
    would empty the whole Redis database, the channel layer's and every other test process's
    keys included (tests/conftest.py gives each process its own prefix).
    """
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        cache.clear()
        return
    assert cache.key_prefix, "a shared Redis cache needs this process's own KEY_PREFIX"
    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{cache.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
