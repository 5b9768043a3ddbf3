"""The dashboard's pages: transport over the selectors and services, nothing more.

Every page renders whole on a normal request and only its live region when asked with the
``X-Fragment`` header: the page's script fetches that on every dashboard event and on each
(re)connect of its socket, so what it shows always comes through the same scoped reads.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from payments import selectors as payments_selectors
from payments import services as payments
from payments.exports import DAILY_COLUMNS, csv_chunks, daily_row, money
from payments.models import EventKind, EventSource, Transaction, TransactionStatus, TransactionType
from payments.selectors import daily_totals, report_today, transaction_get, transaction_list
from payments.validation import MAX_REASON, parse_amount
from posgateway.core.events import Outbox
from posgateway.core.protocol import (
    REFUND_EXCEEDS_REFUNDABLE,
    TERMINAL_BUSY,
    TERMINAL_NOT_FOUND,
    BadRequest,
    Forbidden,
    NotFound,
    ProtocolError,
)
from posgateway.dashboard import charts
from posgateway.dashboard import selectors as board
from posgateway.dashboard.templatetags.dashboard import CASE_TEXT
from posgateway.gateway.delivery import deliver_sync
from posgateway.rest.csv import csv_response
from posgateway.rest.filters import DATE_RANGE_TEXT, EARLIEST, LATEST, TransactionFilter
from terminals import services as terminals
from terminals.models import DeviceType
from terminals.selectors import devices_for_user, groups_for_user, is_manager, managed_groups
from webhooks import services as webhooks
from webhooks.models import WebhookEndpoint, WebhookEvent

PAGE_SIZE = 25
FRAGMENT_HEADER = "X-Fragment"

View = Callable[..., HttpResponse]


def staff_only(view: View) -> View:
    """Logged in (else to the login page and back), and staff: store staff (managers and
    viewers) or superusers. A :class:`Forbidden` the view raises (:func:`require_manager`)
    answers 403 ``{"error": "Forbidden", "message": …}`` as JSON."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not (user.is_active and (user.is_staff or user.is_superuser)):
            raise PermissionDenied
        # PostgreSQL refuses NUL in text: a parameter carrying one is refused here, not a 500.
        values = [*kwargs.values(), *(v for _, vs in request.GET.lists() for v in vs)]
        if any("\x00" in str(value) for value in values):
            return HttpResponseBadRequest("Null characters are not allowed.")
        try:
            response = view(request, *args, **kwargs)
        except Forbidden as exc:
            response = JsonResponse(exc.to_frame(), status=exc.status)
        add_never_cache_headers(response)
        patch_vary_headers(response, [FRAGMENT_HEADER])
        return response

    return login_required(wrapper)


def require_manager(request: HttpRequest, group_id: int, what: str = "do this") -> None:
    """Contract section 8: changes need a manager of the store (or a superuser). Raises
    :class:`~posgateway.core.protocol.Forbidden`, which a :func:`staff_only` view answers with
    403 ``{"error": "Forbidden", "message": "Only a manager of the store can <what>."}``.

    Call it before changing anything, with the store of what is changed (a device's
    ``group_id``, a payment's ``group_id``) once the object was found among the user's stores:
    another store's object stays a 404, as a missing one.
    """
    if not is_manager(request.user, group_id):
        raise Forbidden(f"Only a manager of the store can {what}.")


def page(
    request: HttpRequest, template: str, fragment: str, context: dict[str, Any]
) -> HttpResponse:
    """The whole page, or only its live region when the page's script asks for it."""
    if request.headers.get(FRAGMENT_HEADER):
        response = render(request, fragment, context)
        response[FRAGMENT_HEADER] = "1"
        return response
    return render(request, template, {**context, "fragment_template": fragment})


# --- Terminals (the home page) ---------------------------------------------------------------


@require_GET
@staff_only
def terminals_page(request: HttpRequest) -> HttpResponse:
    rows = board.terminal_board(user=request.user)
    glance = board.today_at_a_glance(user=request.user)
    context = {
        "nav": "terminals",
        "live_events": "device payment request session",
        "rows": rows,
        "counts": {
            word: sum(1 for r in rows if r.device.status == word)
            for word in ("online", "reconnecting", "offline")
        },
        "in_flight": sum(1 for r in rows if r.payment is not None),
        "glance": glance,
        "show_store": glance.stores > 1,
        "chart": charts.hourly_bars(glance.hours, current_hour=glance.current_hour),
        "hour_list": charts.hourly_list(glance.hours, current_hour=glance.current_hour),
        **_attention_context(request),
    }
    return page(request, "dashboard/terminals.html", "dashboard/_terminals.html", context)


# --- Payments --------------------------------------------------------------------------------


@require_GET
@staff_only
def payments_page(request: HttpRequest) -> HttpResponse:
    params = request.GET.copy()
    params.pop("page", None)
    filterset = TransactionFilter(
        params, queryset=transaction_list(user=request.user), request=request
    )
    if filterset.is_valid():
        queryset = filterset.qs.select_related("original").order_by("-created_at", "-pk")
        errors: dict[str, Any] = {}
        totals = board.filter_totals(filterset.qs)
    else:
        queryset = transaction_list(user=request.user).none()
        errors = filterset.errors
        totals = []
    payments = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    stores = list(groups_for_user(request.user).values_list("slug", flat=True))
    # The CSV export takes the very same filters: it exports exactly the set shown here.
    given = QueryDict(mutable=True)
    for key, values in params.lists():
        if any(values):
            given.setlist(key, values)
    export_url = reverse("transaction-export")
    if given:
        export_url += "?" + given.urlencode()
    context = {
        "nav": "payments",
        "live_events": "payment",
        "payments": payments,
        "totals": totals,
        "errors": errors,
        "filters": {key: params.get(key, "") for key in FILTER_KEYS},
        "filtered": bool(given),
        "query": given.urlencode(),
        "export_url": export_url,
        "stores": stores,
        "show_store": len(stores) > 1,
        "terminal_ids": board.terminal_ids_for_user(user=request.user),
        "statuses": TransactionStatus.values,
        "types": TransactionType.values,
    }
    return page(request, "dashboard/payments.html", "dashboard/_payments.html", context)


FILTER_KEYS = ("store", "type", "terminal", "status", "date_from", "date_to", "search")

EVENT_TEXT = {
    EventKind.REQUESTED: "Requested by the desktop",
    EventKind.FORWARDED: "Forwarded to the terminal; the desktop got paymentAccepted",
    EventKind.RESENT: "Sent again to the reconnected terminal",
    EventKind.DUPLICATE: "Repeated by the desktop (answered, not forwarded again)",
    EventKind.CANCEL_REQUESTED: "Cancel requested by the desktop",
    EventKind.RESULT: "Result from the terminal",
    EventKind.LATE_RESULT: "Late result from the terminal, after the gateway gave up",
    EventKind.IGNORED_RESULT: "Conflicting result from the terminal, ignored",
    EventKind.TIMEOUT: "Timed out: no result from the terminal in time",
    EventKind.FAILED: "Failed: the terminal could not be reached",
    EventKind.DELIVERED: "Delivered to the desktop (acknowledged)",
    EventKind.REFUNDED: "One of its refunds succeeded",
    EventKind.OVER_REFUNDED: "Its succeeded refunds now add up to more than the payment",
    EventKind.RESOLVED: "Marked resolved",
}


@require_GET
@staff_only
def payment_page(request: HttpRequest, transaction_id: str) -> HttpResponse:
    store = request.GET.get("store") or None
    try:
        txn = transaction_get(user=request.user, transaction_id=transaction_id, store=store)
    except NotFound:
        raise Http404("No such payment in your stores") from None
    except BadRequest:
        # The same transactionId in several of the user's stores: let them pick one.
        stores = board.payment_stores(user=request.user, transaction_id=transaction_id)
        return render(
            request,
            "dashboard/payment_choose.html",
            {"nav": "payments", "transaction_id": transaction_id, "stores": stores},
        )
    timeline = [{"event": event, "text": _event_text(txn, event)} for event in txn.events.all()]
    context = {
        "nav": "payments",
        # A payment's page follows its refunds too: their events name it originalTransactionId.
        "live_events": "payment",
        "live_transaction": txn.transaction_id,
        "txn": txn,
        "timeline": timeline,
        "store_query": f"?store={txn.group.slug}",
    }
    if not txn.is_refund:
        context.update(_refunds_context(request, txn))
    context["attention_items"] = payments_selectors.attention_items_of(txn=txn)
    context["can_resolve"] = is_manager(request.user, txn.group_id)
    return page(request, "dashboard/payment.html", "dashboard/_payment.html", context)


def _event_text(txn: Transaction, event: Any) -> str:
    """What a step of the timeline was; a refund started by staff has no desktop."""
    if event.kind == EventKind.RESOLVED:
        case = CASE_TEXT.get(event.detail.get("case"), event.detail.get("case", ""))
        return f"Marked resolved ({case}) by {event.detail.get('user', 'someone')}"
    if txn.is_refund and txn.desktop_id is None:
        if event.kind == EventKind.REQUESTED:
            user = event.detail.get("user")
            return f"Requested on the {event.source}" + (f" by {user}" if user else "")
        if event.kind == EventKind.FORWARDED:
            return "Forwarded to the terminal"
    return EVENT_TEXT.get(event.kind, event.kind)


def _refunds_context(request: HttpRequest, txn: Transaction) -> dict[str, Any]:
    """A payment's refunds, what they add up to and what is left to refund."""
    refunds = board.refunds_of(payment=txn)
    succeeded = txn.status == TransactionStatus.SUCCESS
    refundable = payments.refundable_amount(txn) if succeeded else Decimal(0)
    in_flight = txn.amount - txn.refunded_amount - refundable if succeeded else Decimal(0)
    return {
        "refunds": refunds,
        "refunded_text": money(txn.refunded_amount, txn.currency),
        "refundable_text": money(max(refundable, Decimal(0)), txn.currency),
        "in_flight_text": money(in_flight, txn.currency) if in_flight > 0 else "",
        # A viewer is offered no button (and a POST of theirs is refused anyway).
        "can_refund": refundable > 0 and is_manager(request.user, txn.group_id),
    }


# --- Refunds ---------------------------------------------------------------------------------


def new_refund_id() -> str:
    """A fresh refund transactionId: ``RF-20240601-`` and 12 random hex digits (printable
    ASCII, far below 64 characters, sortable by day)."""
    return f"RF-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(6).upper()}"


class RefundForm(forms.Form):
    amount = forms.CharField(max_length=32)
    reason = forms.CharField(
        max_length=MAX_REASON,
        required=False,
        help_text="Optional: why the money goes back (kept with the refund)",
    )
    terminal = forms.ChoiceField(help_text="Where the customer presents the card")
    # Only the confirmation carries the refund's transactionId: submitting the same
    # confirmation again repeats the same refund instead of starting another.
    refund_id = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)

    def __init__(
        self, *args: Any, payment: Transaction, terminals: list[Any], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.payment = payment
        self.terminals = {t.device_id: t for t in terminals}
        self.fields["amount"].label = f"Amount ({payment.currency})"
        self.fields["terminal"].choices = [
            (t.device_id, f"{t.device_id} · {t.label}" if t.label else t.device_id)
            for t in terminals
        ]

    def clean_amount(self) -> str:
        try:
            return parse_amount(
                self.cleaned_data["amount"].strip(), self.payment.currency, path="The amount"
            )
        except BadRequest as exc:
            raise ValidationError(exc.message) from None

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason.isprintable():
            raise ValidationError("Write the reason on one line.")
        return reason


# Which field a refusal of the service is about (the rest are about the refund as a whole).
_ERROR_FIELDS = {
    REFUND_EXCEEDS_REFUNDABLE: "amount",
    TERMINAL_NOT_FOUND: "terminal",
    TERMINAL_BUSY: "terminal",
}


def _refusal(form: RefundForm, exc: ProtocolError) -> None:
    """The service's refusal on the form, in the contract's words."""
    message = exc.message
    if "refundableAmount" in exc.extra:
        refundable = exc.extra["refundableAmount"]
        message += f" (refundable now: {refundable} {form.payment.currency})"
    field = _ERROR_FIELDS.get(exc.message)
    for name in ("amount", "reason"):
        if exc.message.startswith(f"refundRequest.{name}"):
            field = name
    form.add_error(field, message)


def _refund_payment(request: HttpRequest, transaction_id: str) -> Transaction:
    """The payment of the user's stores to refund (404 for anything else, as on its page)."""
    try:
        txn = transaction_get(
            user=request.user, transaction_id=transaction_id, store=request.GET.get("store")
        )
    except (NotFound, BadRequest):
        raise Http404("No such payment in your stores") from None
    if txn.is_refund:
        raise Http404("A refund is not refunded")
    return txn


def _deliver(outbox: Outbox) -> None:
    """Send what the refund published; a forward the layer refused fails the refund at once
    (as a consumer does), instead of leaving it to the timeout."""
    failures = deliver_sync(outbox)
    if failures:
        retry = Outbox()
        for on_fail in failures:
            on_fail(retry)
        deliver_sync(retry)


@require_http_methods(["GET", "POST"])
@staff_only
def refund_page(request: HttpRequest, transaction_id: str) -> HttpResponse:
    """Refund (part of) a payment on a terminal of its store: the form, a confirmation that
    repeats amount and currency, then the refund's own page, which follows it live."""
    payment = _refund_payment(request, transaction_id)
    require_manager(request, payment.group_id, "refund its payments")
    store_query = f"?store={payment.group.slug}"
    succeeded = payment.status == TransactionStatus.SUCCESS
    refundable = payments.refundable_amount(payment) if succeeded else Decimal(0)
    context: dict[str, Any] = {
        "nav": "payments",
        "payment": payment,
        "store_query": store_query,
        "refundable_text": money(max(refundable, Decimal(0)), payment.currency),
        "refundable": refundable > 0,
    }
    if request.method == "GET":
        terminals = board.refund_terminals(payment=payment)
        initial = {"amount": context["refundable_text"]}
        if terminals:
            initial["terminal"] = terminals[0].device_id
        form = RefundForm(payment=payment, terminals=terminals, initial=initial)
        return render(request, "dashboard/refund.html", {**context, "form": form})
    # Any active terminal is accepted here: one that went offline meanwhile is the service's
    # refusal ("Terminal connection not found"), in the contract's words.
    terminals = board.refund_terminals(payment=payment, online_only=False)
    form = RefundForm(request.POST, payment=payment, terminals=terminals)
    confirmed = "confirm" in request.POST
    if not form.is_valid() or "edit" in request.POST:
        return render(request, "dashboard/refund.html", {**context, "form": form})
    data = form.cleaned_data
    if not confirmed:
        # Checked again, under the payment's lock, when the refund starts.
        if Decimal(data["amount"]) > refundable:
            _refusal(
                form,
                BadRequest(REFUND_EXCEEDS_REFUNDABLE, refundableAmount=context["refundable_text"]),
            )
            return render(request, "dashboard/refund.html", {**context, "form": form})
        # A new id for every confirmation: one that was already used (a refund confirmed,
        # then changed) would be refused as reused.
        confirm = {
            **data,
            "refund_id": new_refund_id(),
            "terminal_device": form.terminals[data["terminal"]],
        }
        return render(request, "dashboard/refund_confirm.html", {**context, "confirm": confirm})
    if not data["refund_id"]:
        return HttpResponseBadRequest("The confirmation carries the refund's transactionId.")
    outbox = Outbox()
    try:
        outcome = payments.refund_start(
            group_id=payment.group_id,
            terminal_id=data["terminal"],
            device_id_only=True,
            refund_request={
                "transactionId": data["refund_id"],
                "originalTransactionId": payment.transaction_id,
                "amount": data["amount"],
                "currency": payment.currency,
                "reason": data["reason"],
            },
            user=request.user,
            source=EventSource.DASHBOARD,
            outbox=outbox,
        )
    except ProtocolError as exc:
        _refusal(form, exc)  # nothing was stored
        return render(request, "dashboard/refund.html", {**context, "form": form})
    _deliver(outbox)
    # A repeat of the same confirmation answers the same refund, in flight or finished.
    refund_id = outcome.txn.transaction_id if outcome.txn is not None else data["refund_id"]
    return redirect(reverse("dashboard:payment", args=[refund_id]) + store_query)


# --- Sessions --------------------------------------------------------------------------------


@require_GET
@staff_only
def sessions_page(request: HttpRequest) -> HttpResponse:
    active, ended = board.sessions_for_user(user=request.user)
    requests = board.recent_requests(user=request.user)
    shown_stores = {row.group_id for row in [*active, *ended, *requests]}
    context = {
        "nav": "sessions",
        "live_events": "session request",
        "active": active,
        "ended": ended,
        "requests": requests,
        "show_store": len(shown_stores) > 1,
        "max_age_s": settings.SESSION_MAX_AGE_S,
    }
    return page(request, "dashboard/sessions.html", "dashboard/_sessions.html", context)


# --- Devices ---------------------------------------------------------------------------------


class RegisterForm(forms.Form):
    store = forms.ChoiceField()
    device_type = forms.ChoiceField(choices=DeviceType.choices, label="Type")
    device_id = forms.CharField(
        max_length=64,
        required=False,
        label="Device ID",
        help_text="Stable id, unique in the store; Terminal API requests name a terminal by it "
        "(their POIID, the point of interaction id)",
    )
    label = forms.CharField(max_length=200, required=False)

    def __init__(self, *args: Any, stores: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["store"].choices = [(slug, slug) for slug in stores]
        if len(stores) == 1:
            self.fields["store"].initial = stores[0]

    def clean_device_id(self) -> str | None:
        value = self.cleaned_data["device_id"].strip()
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValidationError("Use printable characters without spaces.")
        return value or None


def _form_errors(form: RegisterForm, exc: Exception) -> None:
    """The service's refusal in the form's words (a taken deviceId is the usual one)."""
    messages_by_field = exc.message_dict if isinstance(exc, ValidationError) else {}
    text = " ".join(str(m) for ms in messages_by_field.values() for m in ms) or str(exc)
    if "device_id_unique_in_group" in text or isinstance(exc, IntegrityError):
        form.add_error(
            "device_id",
            f"{form.cleaned_data['store']} already has a device with this ID.",
        )
        return
    for field, errors in messages_by_field.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)


DEVICE_CHANGES = "register, re-key or deactivate its devices"


def _devices_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    stores = list(groups_for_user(request.user).values_list("slug", flat=True))
    managed = dict(managed_groups(request.user).values_list("pk", "slug"))
    return {
        "nav": "devices",
        "live_events": "device",
        "devices": list(devices_for_user(user=request.user)),
        "show_store": len(stores) > 1,
        # A viewer is offered no form and no buttons (the server refuses them anyway).
        "managed_store_pks": set(managed),
        "form": (extra.pop("form", None) or RegisterForm(stores=list(managed.values())))
        if managed
        else None,
        **extra,
    }


def _with_new_key(request: HttpRequest, device: Any, key: str, what: str) -> HttpResponse:
    """The page with the key shown this once (never stored, never in a redirect or session)."""
    context = _devices_context(request, new_key={"device": device, "key": key, "what": what})
    return page(request, "dashboard/devices.html", "dashboard/_devices.html", context)


@require_http_methods(["GET", "POST"])
@staff_only
def devices_page(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        # A store the user reads but does not manage is refused outright; one they cannot read
        # is just not among the form's choices ("Select a valid choice"), as a missing one.
        named = groups_for_user(request.user).filter(slug=request.POST.get("store", "")).first()
        if named is not None:
            require_manager(request, named.pk, DEVICE_CHANGES)
        stores = managed_groups(request.user)
        if not stores.exists():
            raise Forbidden(f"Only a manager of the store can {DEVICE_CHANGES}.")
        form = RegisterForm(request.POST, stores=list(stores.values_list("slug", flat=True)))
        if form.is_valid():
            group = stores.get(slug=form.cleaned_data["store"])
            outbox = Outbox()
            try:
                device, key = terminals.device_create(
                    group=group,
                    device_type=form.cleaned_data["device_type"],
                    device_id=form.cleaned_data["device_id"],
                    label=form.cleaned_data["label"],
                    outbox=outbox,
                )
            except (ValidationError, IntegrityError) as exc:
                _form_errors(form, exc)
            else:
                deliver_sync(outbox)
                return _with_new_key(request, device, key, "registered")
        context = _devices_context(request, form=form)
        return page(request, "dashboard/devices.html", "dashboard/_devices.html", context)
    context = _devices_context(request)
    return page(request, "dashboard/devices.html", "dashboard/_devices.html", context)


def _own_device(request: HttpRequest, pk: int) -> Any:
    """A device of the user's stores that the user may change: 404 if it is not among their
    stores (as a missing one), 403 if they only view its store."""
    device = devices_for_user(user=request.user).filter(pk=pk).first()
    if device is None:
        raise Http404("No such device in your stores")
    require_manager(request, device.group_id, DEVICE_CHANGES)
    return device


@require_POST
@staff_only
def device_rotate(request: HttpRequest, pk: int) -> HttpResponse:
    device = _own_device(request, pk)
    if not device.is_active:
        messages.error(request, f"{_name(device)} is deactivated: its key cannot be rotated.")
        return redirect("dashboard:devices")
    outbox = Outbox()
    key = terminals.device_rotate_key(device=device, outbox=outbox)
    deliver_sync(outbox)  # closes its live connections now; the old key already fails
    return _with_new_key(request, device, key, "rotated")


@require_POST
@staff_only
def device_deactivate(request: HttpRequest, pk: int) -> HttpResponse:
    device = _own_device(request, pk)
    if device.is_active:
        outbox = Outbox()
        terminals.device_deactivate(device=device, outbox=outbox)
        deliver_sync(outbox)
        messages.success(
            request, f"{_name(device)} is deactivated; its live connections were closed."
        )
    return redirect("dashboard:devices")


def _name(device: Any) -> str:
    return f"{device.device_id or f'#{device.pk}'} ({device.group.slug})"


# --- Needs attention -------------------------------------------------------------------------


def _attention_context(request: HttpRequest) -> dict[str, Any]:
    attention = board.needs_attention(user=request.user)
    stores = {
        *(item.txn.group_id for item in attention.items),
        *(t.device.group_id for t in attention.terminals),
    }
    managed = set(managed_groups(request.user).filter(pk__in=stores).values_list("pk", flat=True))
    return {
        "attention": attention,
        # A viewer is offered no resolve link (and a POST of theirs is refused anyway).
        "attention_managed": managed,
        "show_store": len(groups_for_user(request.user)[:2]) > 1,
    }


@require_GET
@staff_only
def attention_page(request: HttpRequest) -> HttpResponse:
    context = {
        "nav": "attention",
        "live_events": "payment device",
        **_attention_context(request),
        "resolved": payments_selectors.attention_resolved(user=request.user),
    }
    return page(request, "dashboard/attention.html", "dashboard/_attention.html", context)


class ResolveForm(forms.Form):
    note = forms.CharField(
        max_length=payments.MAX_RESOLVE_NOTE,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you checked and what was done (kept on the payment's timeline)",
    )


@require_http_methods(["GET", "POST"])
@staff_only
def attention_resolve_page(request: HttpRequest, case: str, transaction_id: str) -> HttpResponse:
    """A manager marks one needs-attention item resolved, with a note."""
    try:
        txn = transaction_get(
            user=request.user, transaction_id=transaction_id, store=request.GET.get("store")
        )
    except (NotFound, BadRequest):
        raise Http404("No such payment in your stores") from None
    require_manager(request, txn.group_id, "resolve what needs attention")
    item = next((i for i in payments_selectors.attention_items_of(txn=txn) if i.case == case), None)
    store_query = f"?store={txn.group.slug}"
    context: dict[str, Any] = {"nav": "attention", "txn": txn, "item": item}
    context["store_query"] = store_query
    if item is None:
        messages.info(request, "This item no longer needs attention (it was resolved).")
        return redirect("dashboard:attention")
    if request.method == "GET":
        return render(request, "dashboard/resolve.html", {**context, "form": ResolveForm()})
    form = ResolveForm(request.POST)
    if form.is_valid():
        outbox = Outbox()
        try:
            payments.attention_resolve(
                txn=txn,
                case=case,
                note=form.cleaned_data["note"],
                user=request.user,
                outbox=outbox,
            )
        except BadRequest as exc:
            form.add_error("note", exc.message)
        except ProtocolError as exc:  # resolved meanwhile by someone else
            messages.info(request, exc.message)
            return redirect("dashboard:attention")
        else:
            deliver_sync(outbox)
            messages.success(request, f"Resolved: {txn.transaction_id}.")
            return redirect("dashboard:attention")
    return render(request, "dashboard/resolve.html", {**context, "form": form})


# --- End-of-day report -----------------------------------------------------------------------


class ReportForm(forms.Form):
    store = forms.ChoiceField(required=False)
    date = forms.DateField(
        required=False,
        label="Business day",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="In the store's own time zone",
    )

    def __init__(self, *args: Any, stores: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["store"].choices = [("", "All stores"), *((s, s) for s in stores)]

    def clean_date(self) -> dt.date | None:
        value = self.cleaned_data["date"]
        if value is not None and not EARLIEST <= value <= LATEST:
            raise ValidationError(DATE_RANGE_TEXT)
        return value


def _report(request: HttpRequest) -> tuple[ReportForm, Any, dt.date | None]:
    """The report's form, the chosen stores and day (today of those stores by default)."""
    all_stores = groups_for_user(request.user)
    form = ReportForm(request.GET or None, stores=list(all_stores.values_list("slug", flat=True)))
    if request.GET and not form.is_valid():
        return form, all_stores.none(), None
    data = form.cleaned_data if request.GET else {}
    stores = all_stores.filter(slug=data["store"]) if data.get("store") else all_stores
    day = data.get("date") or report_today(stores)
    return form, stores, day


@require_GET
@staff_only
def reports_page(request: HttpRequest) -> HttpResponse:
    form, stores, day = _report(request)
    reports = board.end_of_day(stores=stores, day=day) if day else []
    query = QueryDict(mutable=True)
    if day:
        query["date"] = day.isoformat()
    if form.is_bound and form.is_valid() and form.cleaned_data.get("store"):
        query["store"] = form.cleaned_data["store"]
    context = {
        "nav": "reports",
        "form": form,
        "day": day,
        "reports": reports,
        "export_url": reverse("dashboard:report-export") + "?" + query.urlencode(),
        "previous_day": (day - dt.timedelta(days=1)).isoformat() if day else "",
        "next_day": (day + dt.timedelta(days=1)).isoformat() if day else "",
        "store_param": query.get("store", ""),
    }
    status = 200 if day else 400
    return render(request, "dashboard/reports.html", context, status=status)


@require_GET
@staff_only
def report_export(request: HttpRequest) -> HttpResponse:
    """The report's day as the REST daily export writes it (same rows, columns, file name)."""
    form, stores, day = _report(request)
    if day is None:
        return HttpResponseBadRequest(" ".join(e for es in form.errors.values() for e in es))
    store = form.cleaned_data.get("store") if form.is_bound else ""
    rows = daily_totals(stores=stores, date_from=day, date_to=day)
    filename = f"daily-{store or 'all'}-{day}-{day}.csv"
    return csv_response(request, csv_chunks(DAILY_COLUMNS, (daily_row(r) for r in rows)), filename)


# --- Webhooks (contract section 11) ------------------------------------------------------------

WEBHOOK_CHANGES = "manage its webhooks"
RECENT_WEBHOOK_EVENTS = 50


class WebhookForm(forms.Form):
    store = forms.ChoiceField()
    url = forms.CharField(
        max_length=2000, label="URL", help_text="https:// address the events are POSTed to"
    )
    events = forms.MultipleChoiceField(
        choices=[("*", "every event"), *((t, t) for t in webhooks.SUBSCRIBABLE)],
        initial=["*"],
        widget=forms.CheckboxSelectMultiple,
    )
    description = forms.CharField(max_length=500, required=False)

    def __init__(self, *args: Any, stores: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["store"].choices = [(slug, slug) for slug in stores]
        if len(stores) == 1:
            self.fields["store"].initial = stores[0]


def _webhooks_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    stores = groups_for_user(request.user)
    managed = dict(managed_groups(request.user).values_list("pk", "slug"))
    events = list(
        WebhookEvent.objects.select_related("group")
        .filter(group__in=stores, dispatched=True)
        .exclude(deliveries=None)
        .prefetch_related("deliveries")
        .order_by("-created_at", "-pk")[:RECENT_WEBHOOK_EVENTS]
    )
    return {
        "nav": "webhooks",
        "endpoints": list(
            WebhookEndpoint.objects.select_related("group").filter(group__in=stores).order_by("pk")
        ),
        "events": events,
        "show_store": stores.count() > 1,
        "managed_store_pks": set(managed),
        "form": (extra.pop("form", None) or WebhookForm(stores=list(managed.values())))
        if managed
        else None,
        **extra,
    }


def _webhooks(request: HttpRequest, **extra: Any) -> HttpResponse:
    return render(request, "dashboard/webhooks.html", _webhooks_context(request, **extra))


@require_http_methods(["GET", "POST"])
@staff_only
def webhooks_page(request: HttpRequest) -> HttpResponse:
    """Endpoints, recent events with each delivery's status; managers add endpoints here."""
    if request.method == "GET":
        return _webhooks(request)
    named = groups_for_user(request.user).filter(slug=request.POST.get("store", "")).first()
    if named is not None:
        require_manager(request, named.pk, WEBHOOK_CHANGES)
    stores = managed_groups(request.user)
    if not stores.exists():
        raise Forbidden(f"Only a manager of the store can {WEBHOOK_CHANGES}.")
    form = WebhookForm(request.POST, stores=list(stores.values_list("slug", flat=True)))
    if form.is_valid():
        try:
            endpoint, secret = webhooks.endpoint_create(
                group_id=stores.get(slug=form.cleaned_data["store"]).pk,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                description=form.cleaned_data["description"],
                user=request.user,
            )
        except BadRequest as exc:
            field = exc.message.split(":", 1)[0]
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            return _webhooks(request, new_secret={"endpoint": endpoint, "secret": secret})
    return _webhooks(request, form=form)


def _own_endpoint(request: HttpRequest, pk: int) -> WebhookEndpoint:
    endpoint = (
        WebhookEndpoint.objects.select_related("group")
        .filter(pk=pk, group__in=groups_for_user(request.user))
        .first()
    )
    if endpoint is None:
        raise Http404("No such webhook endpoint in your stores")
    require_manager(request, endpoint.group_id, WEBHOOK_CHANGES)
    return endpoint


@require_POST
@staff_only
def webhook_endpoint_action(request: HttpRequest, pk: int, what: str) -> HttpResponse:
    """rotate (the new secret shown once), test, deactivate, activate, delete."""
    if what not in ("rotate", "test", "deactivate", "activate", "delete"):
        raise Http404("No such action")
    endpoint = _own_endpoint(request, pk)
    if what == "rotate":
        secret = webhooks.endpoint_rotate_secret(endpoint=endpoint)
        return _webhooks(request, new_secret={"endpoint": endpoint, "secret": secret})
    if what == "test":
        try:
            event = webhooks.endpoint_test(endpoint=endpoint)
        except ProtocolError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Test event {event.event_id} sent to {endpoint.url}.")
    elif what == "delete":
        webhooks.endpoint_delete(endpoint=endpoint)
        messages.success(request, f"{endpoint.url} deleted.")
    else:
        webhooks.endpoint_update(endpoint=endpoint, changes={"active": what == "activate"})
        messages.success(request, f"{endpoint.url} {what}d.")
    return redirect("dashboard:webhooks")


@require_POST
@staff_only
def webhook_redeliver(request: HttpRequest, event_id: str) -> HttpResponse:
    event = WebhookEvent.objects.filter(
        event_id=event_id, group__in=groups_for_user(request.user)
    ).first()
    if event is None:
        raise Http404("No such webhook event in your stores")
    require_manager(request, event.group_id, WEBHOOK_CHANGES)
    count = webhooks.event_redeliver(event=event)
    messages.success(request, f"{event.event_id} will be sent again ({count} endpoint(s)).")
    return redirect("dashboard:webhooks")
