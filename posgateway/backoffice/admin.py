"""The admin: stores, devices and their connections; payments; sessions and requests.

Devices are added, re-keyed and deactivated through the same services as the dashboard (so the
same rules apply and the dashboards hear of it), with their socket messages sent after commit.
A new key is shown once, in the page answering the POST itself: never through ``messages``
(whose default storage is a cookie) nor a session, and the page is never cached.

Superusers see and change everything. Anyone else given model permissions here works within
their stores and roles (contract section 8): they see the rows of the stores they belong to,
and change, add, delete or run actions only in the stores they manage; a viewer's store is
read-only. Memberships (who is a manager or a viewer of a store) are edited by superusers, under
the store.
"""

from django.contrib import admin, messages
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from payments.exports import money
from payments.models import DesktopMessage, Transaction, TransactionEvent
from posgateway.core.events import Outbox
from posgateway.gateway.delivery import deliver_sync
from sessions.models import TerminalRequest, TerminalSession
from terminals import services
from terminals.models import Connection, Device, Group, Membership
from terminals.selectors import in_user_stores, is_manager, managed_groups
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent

KEY_TEMPLATE = "admin/terminals/device/new_keys.html"


def _flush_after_commit(outbox: Outbox) -> None:
    """Send the outbox once the admin's transaction (if any) commits: now, outside one."""
    transaction.on_commit(lambda: deliver_sync(outbox))


def _store_pk(obj, path: str) -> int:
    """The pk of the store ``obj`` belongs to, along ``path`` (``"group"``,
    ``"device__group"``; ``"pk"``: obj is the store)."""
    *hops, last = path.split("__")
    for hop in hops:
        obj = getattr(obj, hop)
    return obj.pk if last == "pk" else getattr(obj, f"{last}_id")


_admin_index = admin.site.index


def _index(request, extra_context=None):
    """The admin is for operators: a staff member it shows nothing to (a store's manager or
    viewer without admin rights) is sent to the dashboard, where their stores are, instead of
    "You don't have permission to view or edit anything"."""
    if not request.user.is_superuser and not admin.site.get_app_list(request):
        messages.info(request, "The admin is for operators: your stores are on the dashboard.")
        return redirect("dashboard:terminals")
    return _admin_index(request, extra_context)


# Set on the site before its URLs are built (urls.py reads admin.site.urls after autodiscover).
admin.site.index = _index  # type: ignore[method-assign]


class StoreScopedAdmin(admin.ModelAdmin):
    """Rows of a store (``store_field`` is the path to it). A superuser sees and changes all of
    them; anyone else (with the model permission as well) sees the rows of their stores and
    changes, adds or deletes only in those they manage."""

    store_field = "group"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return in_user_stores(queryset, user=request.user, field=self.store_field)

    def _manages(self, request, obj=None) -> bool:
        if request.user.is_superuser:
            return True
        if obj is None:  # the list and the actions: a manager of some store
            return managed_groups(request.user).exists()
        return is_manager(request.user, _store_pk(obj, self.store_field))

    def has_add_permission(self, request):
        return super().has_add_permission(request) and self._manages(request)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._manages(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._manages(request, obj)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # A page with nothing to edit (every field read-only, no inline to add to) offers no
        # Save: there would be nothing to save.
        adminform = context.get("adminform")
        editable_inlines = any(
            not isinstance(inline.opts, ReadOnlyInline)
            and (inline.has_add_permission or inline.has_change_permission)
            for inline in context.get("inline_admin_formsets", [])
        )
        if adminform is not None and not adminform.form.fields and not editable_inlines:
            context.update(
                show_save=False, show_save_and_continue=False, show_save_and_add_another=False
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def managed_only(self, request, queryset, what: str):
        """The selected rows the user may change; a message names how many were left alone."""
        if request.user.is_superuser:
            return queryset
        managed = queryset.filter(**{f"{self.store_field}__in": managed_groups(request.user)})
        left = queryset.count() - managed.count()
        if left:
            messages.error(
                request,
                f"{left} selected row{'s' if left != 1 else ''} left alone: only a manager of "
                f"the store can {what}.",
            )
        return managed


class ReadOnlyInline(admin.TabularInline):
    """A record's rows shown under it: never added, changed or deleted here."""

    extra = 0
    can_delete = False
    max_num = 0


class RecordAdmin(StoreScopedAdmin):
    """What the gateway records (connections, payments, messages, sessions): never added here."""

    def has_add_permission(self, request):
        return False


class MembershipInline(admin.TabularInline):
    """A store's staff and their role there (manager or viewer): superusers only."""

    model = Membership
    extra = 0
    fields = ["user", "role"]
    autocomplete_fields = ["user"]


@admin.register(Group)
class GroupAdmin(StoreScopedAdmin):
    list_display = ["slug", "name", "timezone", "created_at"]
    search_fields = ["slug", "name"]
    store_field = "pk"

    def get_inlines(self, request, obj):
        # Who manages or views a store is for superusers to say.
        return [MembershipInline] if request.user.is_superuser else []

    def has_add_permission(self, request):
        return request.user.is_superuser and super().has_add_permission(request)


class ConnectionInline(ReadOnlyInline):
    model = Connection
    fields = ["connection_id", "connected_at", "last_activity", "closed_at", "close_code"]
    readonly_fields = fields
    ordering = ["-connected_at"]


@admin.register(Device)
class DeviceAdmin(StoreScopedAdmin):
    list_display = [
        "device_id",
        "label",
        "group",
        "device_type",
        "status",
        "status_changed_at",
        "key_prefix",
        "is_active",
    ]
    list_filter = [
        "device_type",
        "status",
        "is_active",
        ("group", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["device_id", "label", "key_prefix", "group__slug"]
    list_select_related = ["group"]
    readonly_fields = [
        "key_prefix",
        "status",
        "status_changed_at",
        "current_connection",
        "last_seq",
        "acked_seq",
        "created_at",
        "updated_at",
    ]
    actions = ["rotate_key", "deactivate", "reactivate"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a device to another store, or switching it off here, would skip the services
        # (its live connections stay open): use the actions instead. A new device is active.
        if obj is not None:
            return [*self.readonly_fields, "group", "device_type", "is_active"]
        return [*self.readonly_fields, "is_active"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # A new device goes to a store the user manages.
        if db_field.name == "group" and not request.user.is_superuser:
            kwargs["queryset"] = managed_groups(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        outbox = Outbox()
        device, key = services.device_create(
            group=obj.group,
            device_type=obj.device_type,
            device_id=obj.device_id,
            label=obj.label,
            metadata=obj.metadata,
            outbox=outbox,
        )
        _flush_after_commit(outbox)
        # The admin goes on with ``obj`` (history, the response): make it the saved device.
        obj.__dict__.update({k: v for k, v in device.__dict__.items() if k != "_state"})
        obj._state.adding = False
        obj._state.db = device._state.db
        request._new_device_keys = [(obj, key)]

    def response_add(self, request, obj, post_url_continue=None):
        shown = getattr(request, "_new_device_keys", None)
        if not shown:
            return super().response_add(request, obj, post_url_continue)
        return self._keys_page(request, shown, "registered")

    def _keys_page(self, request, shown, what):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"API key{'s' if len(shown) > 1 else ''} {what}",
            "shown": shown,
            "what": what,
        }
        response = TemplateResponse(request, KEY_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    def delete_model(self, request, obj):
        outbox = Outbox()
        services.device_delete(device=obj, outbox=outbox)
        _flush_after_commit(outbox)  # closes its live connections

    def delete_queryset(self, request, queryset):
        for device in queryset:
            self.delete_model(request, device)

    @admin.action(
        description="Rotate the API key (closes live connections)", permissions=["change"]
    )
    def rotate_key(self, request, queryset):
        shown = []
        queryset = self.managed_only(request, queryset, "re-key its devices")
        for device in queryset.select_related("group"):
            if not device.is_active:
                messages.error(request, f"{device} is deactivated: its key cannot be rotated.")
                continue
            outbox = Outbox()
            key = services.device_rotate_key(device=device, outbox=outbox)
            _flush_after_commit(outbox)  # closes its live connections; the old key fails now
            shown.append((device, key))
        if shown:
            return self._keys_page(request, shown, "rotated")
        return None

    @admin.action(description="Deactivate (closes live connections)", permissions=["change"])
    def deactivate(self, request, queryset):
        queryset = self.managed_only(request, queryset, "deactivate its devices")
        done = _each(queryset.filter(is_active=True), services.device_deactivate)
        messages.success(
            request,
            f"{done} device{'s' if done != 1 else ''} deactivated; live connections closed.",
        )

    @admin.action(description="Reactivate (the unchanged key works again)", permissions=["change"])
    def reactivate(self, request, queryset):
        queryset = self.managed_only(request, queryset, "reactivate its devices")
        done = _each(queryset.filter(is_active=False), services.device_reactivate)
        messages.success(request, f"{done} device{'s' if done != 1 else ''} reactivated.")


def _each(devices, service) -> int:
    """Run a device service on each device, its socket messages sent after commit."""
    done = 0
    for device in devices:
        outbox = Outbox()
        service(device=device, outbox=outbox)
        _flush_after_commit(outbox)
        done += 1
    return done


@admin.register(Connection)
class ConnectionAdmin(RecordAdmin):
    list_display = [
        "connection_id",
        "device",
        "connected_at",
        "last_activity",
        "closed_at",
        "close_code",
        "remote_addr",
    ]
    store_field = "device__group"
    list_filter = ["closed_at", "device__device_type"]
    search_fields = ["connection_id", "device__device_id"]
    list_select_related = ["device__group"]
    readonly_fields = [f.name for f in Connection._meta.fields]


# REST API tokens are stored as digests (terminals/tokens.py): the admin lists and revokes them,
# but cannot show one or make one (create_staff or `drf_create_token -r` print a new one once).
admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("user", "created")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class TransactionEventInline(ReadOnlyInline):
    model = TransactionEvent
    fields = ["created_at", "kind", "source", "old_status", "new_status", "detail"]
    readonly_fields = fields


@admin.register(Transaction)
class TransactionAdmin(RecordAdmin):
    list_display = [
        "transaction_id",
        "group",
        "type",
        "original",
        "status",
        "amount_text",
        "currency",
        "terminal",
        "desktop",
        "late",
        "created_at",
        "completed_at",
    ]
    list_filter = [
        "type",
        "status",
        "late",
        "over_refunded",
        "currency",
        ("group", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = [
        "transaction_id",
        "original__transaction_id",
        "authorization_code",
        "terminal__device_id",
        "desktop__device_id",
        "terminal_ref",
    ]
    # A device's name includes its store: join it, or every row costs two queries.
    list_select_related = ["group", "terminal__group", "desktop__group", "original"]
    date_hierarchy = "created_at"
    inlines = [TransactionEventInline]
    # Money and what the terminal said are records, not settings: nobody edits them here.
    # The amount as the currency writes it ("12.30" USD), not as stored ("12.3000").
    readonly_fields = [
        "amount_text" if f.name == "amount" else f.name for f in Transaction._meta.fields
    ]
    exclude = ["amount"]

    @admin.display(description="amount", ordering="amount")
    def amount_text(self, txn: Transaction) -> str:
        return money(txn.amount, txn.currency)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TransactionEvent)
class TransactionEventAdmin(RecordAdmin):
    list_display = ["transaction", "created_at", "kind", "source", "old_status", "new_status"]
    store_field = "transaction__group"
    list_filter = ["kind", "source"]
    search_fields = ["transaction__transaction_id"]
    list_select_related = ["transaction"]
    readonly_fields = [f.name for f in TransactionEvent._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DesktopMessage)
class DesktopMessageAdmin(RecordAdmin):
    list_display = ["device", "seq", "transaction", "created_at", "acked_at"]
    store_field = "device__group"
    list_filter = ["acked_at"]
    search_fields = ["transaction__transaction_id", "device__device_id"]
    list_select_related = ["device__group", "transaction"]
    readonly_fields = [f.name for f in DesktopMessage._meta.fields]


class TerminalRequestInline(ReadOnlyInline):
    model = TerminalRequest
    fields = ["request_id", "kind", "input_type", "status", "created_at", "completed_at"]
    readonly_fields = fields


@admin.register(TerminalSession)
class TerminalSessionAdmin(RecordAdmin):
    list_display = [
        "session_id",
        "group",
        "terminal",
        "desktop",
        "state",
        "begun_at",
        "last_request_at",
        "ended_at",
        "end_reason",
    ]
    list_filter = ["state", ("group", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["session_id", "terminal__device_id", "sale_id"]
    list_select_related = ["group", "terminal__group", "desktop__group"]
    readonly_fields = [f.name for f in TerminalSession._meta.fields]
    inlines = [TerminalRequestInline]


@admin.register(TerminalRequest)
class TerminalRequestAdmin(RecordAdmin):
    list_display = [
        "request_id",
        "kind",
        "input_type",
        "group",
        "terminal",
        "status",
        "session",
        "created_at",
        "completed_at",
    ]
    list_filter = ["kind", "status", "input_type", ("group", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["request_id", "terminal__device_id", "session__session_id"]
    list_select_related = ["group", "terminal__group", "session"]
    readonly_fields = [f.name for f in TerminalRequest._meta.fields]


# --- Webhooks (managed on the dashboard and the REST API; here read-only records) -------------


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(RecordAdmin):
    """Endpoints as records: their signing secrets are never shown (encrypted at rest, and
    only the dashboard's or the API's create and rotate answers show one, once)."""

    list_display = ("id", "group", "url", "active", "disabled_reason", "created_at")
    list_filter = ("active",)
    fields = (
        "group",
        "url",
        "events",
        "description",
        "active",
        "disabled_reason",
        "failing_since",
        "previous_secret_until",
        "created_by",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields


class WebhookDeliveryInline(ReadOnlyInline):
    model = WebhookDelivery
    fields = ("endpoint", "status", "attempts", "next_attempt_at", "lease_until")
    readonly_fields = fields


@admin.register(WebhookEvent)
class WebhookEventAdmin(RecordAdmin):
    list_display = ("event_id", "group", "type", "dispatched", "created_at")
    list_filter = ("type",)
    search_fields = ("event_id",)
    fields = ("event_id", "group", "type", "subject_pk", "dispatched", "payload", "created_at")
    readonly_fields = fields
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(RecordAdmin):
    store_field = "delivery__event__group"
    list_display = ("delivery", "number", "status", "http_status", "duration_ms", "attempted_at")
    fields = (
        "delivery",
        "number",
        "status",
        "http_status",
        "duration_ms",
        "error",
        "response_body",
        "attempted_at",
        "next_attempt_at",
    )
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(RecordAdmin):
    store_field = "event__group"
    list_display = ("event", "endpoint", "status", "attempts", "next_attempt_at")
    list_filter = ("status",)
    fields = ("event", "endpoint", "status", "attempts", "next_attempt_at", "lease_until")
    readonly_fields = fields
