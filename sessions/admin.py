from django.contrib import admin

from sessions.models import TerminalRequest, TerminalSession


class TerminalRequestInline(admin.TabularInline):
    model = TerminalRequest
    extra = 0
    can_delete = False
    max_num = 0
    fields = ["request_id", "kind", "input_type", "status", "created_at", "completed_at"]
    readonly_fields = fields


@admin.register(TerminalSession)
class TerminalSessionAdmin(admin.ModelAdmin):
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
    list_filter = ["state", "group"]
    search_fields = ["session_id", "terminal__device_id", "sale_id"]
    list_select_related = ["group", "terminal__group", "desktop__group"]
    readonly_fields = [f.name for f in TerminalSession._meta.fields]
    inlines = [TerminalRequestInline]

    def has_add_permission(self, request):
        return False


@admin.register(TerminalRequest)
class TerminalRequestAdmin(admin.ModelAdmin):
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
    list_filter = ["kind", "status", "input_type", "group"]
    search_fields = ["request_id", "terminal__device_id", "session__session_id"]
    list_select_related = ["group", "terminal__group", "session"]
    readonly_fields = [f.name for f in TerminalRequest._meta.fields]

    def has_add_permission(self, request):
        return False
