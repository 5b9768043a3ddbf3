from django.urls import path

from posgateway.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.terminals_page, name="terminals"),
    path("payments/", views.payments_page, name="payments"),
    # A transactionId is 1-64 printable characters and may contain "/" (reverse() quotes the rest).
    path("payments/<path:transaction_id>/", views.payment_page, name="payment"),
    # Its own prefix: under payments/<path>/ a payment's id could end in "/refund".
    path("refunds/new/<path:transaction_id>/", views.refund_page, name="refund"),
    path("attention/", views.attention_page, name="attention"),
    path(
        "attention/resolve/<str:case>/<path:transaction_id>/",
        views.attention_resolve_page,
        name="attention-resolve",
    ),
    path("reports/", views.reports_page, name="reports"),
    path("reports/export/", views.report_export, name="report-export"),
    path("sessions/", views.sessions_page, name="sessions"),
    path("devices/", views.devices_page, name="devices"),
    path("devices/<int:pk>/rotate/", views.device_rotate, name="device-rotate"),
    path("devices/<int:pk>/deactivate/", views.device_deactivate, name="device-deactivate"),
    path("webhooks/", views.webhooks_page, name="webhooks"),
    path("webhooks/<int:pk>/<str:what>/", views.webhook_endpoint_action, name="webhook-action"),
    path(
        "webhooks/events/<str:event_id>/redeliver/",
        views.webhook_redeliver,
        name="webhook-redeliver",
    ),
]
