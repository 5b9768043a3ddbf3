"""Template helpers: status words with their colour, store-local times, relative times, money."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import template
from django.utils.html import format_html

from payments.exports import customer_id, money, order_id
from payments.selectors import store_zone
from posgateway.core.protocol import iso

register = template.Library()

# The colour is a second signal beside the word (never the only one): a class per status.
TONES = {
    "online": "ok",
    "reconnecting": "warn",
    "offline": "off",
    "SUCCESS": "ok",
    "DECLINED": "bad",
    "FAILED": "bad",
    "CANCELLED": "off",
    "TIMEOUT": "warn",
    "IN_PROGRESS": "busy",
    "PENDING": "busy",
    "ACTIVE": "busy",
    "ENDED": "off",
    "EXPIRED": "warn",
    "deactivated": "off",
    "succeeded": "ok",
    "pending": "busy",
    "retrying": "warn",
    "failed": "bad",
    "active": "ok",
}


@register.simple_tag
def status(word: str, extra: str = "") -> str:
    """``<span class="status tone-ok" data-status="SUCCESS">SUCCESS</span>``: the wire's word."""
    word = str(word)
    tone = TONES.get(word, "off")
    classes = f"status tone-{tone} {extra}".strip()
    return format_html('<span class="{}" data-status="{}">{}</span>', classes, word, word)


def _zone(store: Any) -> dt.tzinfo:
    return store_zone(getattr(store, "timezone", None) or "UTC")


@register.filter
def local(value: dt.datetime | None, store: Any = None) -> str:
    """A time in the store's own zone: ``14:03:12`` today, ``2024-01-15 14:03`` otherwise."""
    if value is None:
        return ""
    zone = _zone(store)
    local_value = value.astimezone(zone)
    today = dt.datetime.now(dt.UTC).astimezone(zone).date()
    if local_value.date() == today:
        return local_value.strftime("%H:%M:%S")
    return local_value.strftime("%Y-%m-%d %H:%M")


@register.filter
def local_full(value: dt.datetime | None, store: Any = None) -> str:
    """Date, time with milliseconds and zone abbreviation, for the timeline."""
    if value is None:
        return ""
    local_value = value.astimezone(_zone(store))
    millis = f"{local_value.microsecond // 1000:03d}"
    return local_value.strftime(f"%Y-%m-%d %H:%M:%S.{millis} %Z")


@register.filter
def utc_iso(value: dt.datetime | None) -> str:
    return iso(value) or ""


def ago_text(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``just now``, ``42 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (the page's JS keeps
    it current between refreshes with the same rule)."""
    if value is None:
        return "never"
    seconds = int(((now or dt.datetime.now(dt.UTC)) - value).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


@register.simple_tag
def ago(value: dt.datetime | None) -> str:
    """A relative time the page keeps current: ``<time datetime=… data-ago>5 min ago</time>``."""
    if value is None:
        return format_html('<span class="muted">{}</span>', "never")
    return format_html(
        '<time datetime="{}" data-ago title="{}">{}</time>',
        iso(value),
        iso(value),
        ago_text(value),
    )


@register.filter
def amount(txn: Any) -> str:
    """A payment's amount with its currency's minor units: ``12.50``."""
    return money(txn.amount, txn.currency)


@register.filter(name="money")
def money_in(value: Any, currency: str) -> str:
    """An amount with the currency's minor units: ``{{ x.refunded_amount|money:x.currency }}``."""
    return money(value, currency)


def duration_text(seconds: float) -> str:
    """A duration as people say it: ``5 s``, ``1.5 s``, ``30 min``, ``1 h 30 min``, ``2 d``."""
    if seconds < 60:
        return f"{round(seconds, 1):g} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if secs and not days and not hours:
        parts.append(f"{secs} s")
    return " ".join(parts)


@register.filter
def duration(seconds: Any) -> str:
    """Seconds in words: ``{{ 1800|duration }}`` is ``30 min``."""
    try:
        return duration_text(float(seconds))
    except (TypeError, ValueError):
        return ""


@register.filter
def duration_ms(value: Any) -> str:
    """Milliseconds in words: ``{{ 8000|duration_ms }}`` is ``8 s``."""
    try:
        return duration_text(int(value) / 1000)
    except (TypeError, ValueError):
        return ""


@register.filter
def get(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def order_ref(txn: Any) -> str:
    """The payment's orderId (from its metadata), as the CSV export shows it."""
    return order_id(txn.metadata) or ""


@register.filter
def customer_ref(txn: Any) -> str:
    return customer_id(txn.customer_info) or ""


@register.filter
def as_json(value: Any) -> str:
    """Stored JSON, indented for reading (autoescaped by the template like any text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@register.filter
def add_seconds(value: dt.datetime | None, seconds: Any) -> dt.datetime | None:
    if value is None:
        return None
    return value + dt.timedelta(seconds=float(seconds))


# The needs-attention cases in a few words (the timeline's resolved events name theirs).
CASE_TEXT = {
    "late_success": "late success",
    "over_refunded": "over-refunded",
    "stuck": "stuck past its deadline",
    "terminal_offline": "terminal offline",
}


@register.filter
def case_text(case: Any) -> str:
    return CASE_TEXT.get(str(case), str(case))
