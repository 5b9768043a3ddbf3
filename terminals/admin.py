from django.contrib import admin, messages

from posgateway.realtime import Outbox
from terminals import services
from terminals.models import Connection, Device, Group, generate_key


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "timezone", "created_at"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["members"]


class ConnectionInline(admin.TabularInline):
    model = Connection
    extra = 0
    can_delete = False
    max_num = 0
    fields = ["connection_id", "connected_at", "last_activity", "closed_at", "close_code"]
    readonly_fields = fields
    ordering = ["-connected_at"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
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
    list_filter = ["device_type", "status", "is_active", "group"]
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
    actions = ["rotate_key", "deactivate"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a device to another store, or switching it off here, would skip the services
        # (its live connections stay open): use the actions instead.
        if obj is not None:
            return [*self.readonly_fields, "group", "device_type", "is_active"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if not change:
            key = generate_key()
            obj.set_key(key)
            super().save_model(request, obj, form, change)
            messages.warning(request, f"API key for {obj} (shown once, store it now): {key}")
        else:
            super().save_model(request, obj, form, change)

    @admin.action(description="Rotate the API key (closes live connections)")
    def rotate_key(self, request, queryset):
        for device in queryset:
            outbox = Outbox()
            key = services.device_rotate_key(device=device, outbox=outbox)
            outbox.flush_sync()
            messages.warning(request, f"New API key for {device} (shown once): {key}")

    @admin.action(description="Deactivate (closes live connections)")
    def deactivate(self, request, queryset):
        for device in queryset:
            outbox = Outbox()
            services.device_deactivate(device=device, outbox=outbox)
            outbox.flush_sync()


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    list_display = [
        "connection_id",
        "device",
        "connected_at",
        "last_activity",
        "closed_at",
        "close_code",
        "remote_addr",
    ]
    list_filter = ["closed_at", "device__device_type"]
    search_fields = ["connection_id", "device__device_id"]
    list_select_related = ["device__group"]
    readonly_fields = [f.name for f in Connection._meta.fields]

    def has_add_permission(self, request):
        return False
