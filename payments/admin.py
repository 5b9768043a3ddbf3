from django.contrib import admin

from payments.exports import money
from payments.models import DesktopMessage, Transaction, TransactionEvent


class TransactionEventInline(admin.TabularInline):
    model = TransactionEvent
    extra = 0
    can_delete = False
    max_num = 0
    fields = ["created_at", "kind", "source", "old_status", "new_status", "detail"]
    readonly_fields = fields


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = [
        "transaction_id",
        "group",
        "status",
        "amount_text",
        "currency",
        "terminal",
        "desktop",
        "late",
        "created_at",
        "completed_at",
    ]
    list_filter = ["status", "late", "currency", "group"]
    search_fields = [
        "transaction_id",
        "authorization_code",
        "terminal__device_id",
        "desktop__device_id",
        "terminal_ref",
    ]
    # A device's name includes its store: join it, or every row costs two queries.
    list_select_related = ["group", "terminal__group", "desktop__group"]
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

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TransactionEvent)
class TransactionEventAdmin(admin.ModelAdmin):
    list_display = ["transaction", "created_at", "kind", "source", "old_status", "new_status"]
    list_filter = ["kind", "source"]
    search_fields = ["transaction__transaction_id"]
    list_select_related = ["transaction"]
    readonly_fields = [f.name for f in TransactionEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DesktopMessage)
class DesktopMessageAdmin(admin.ModelAdmin):
    list_display = ["device", "seq", "transaction", "created_at", "acked_at"]
    list_filter = ["acked_at"]
    search_fields = ["transaction__transaction_id", "device__device_id"]
    list_select_related = ["device__group", "transaction"]
    readonly_fields = [f.name for f in DesktopMessage._meta.fields]

    def has_add_permission(self, request):
        return False
