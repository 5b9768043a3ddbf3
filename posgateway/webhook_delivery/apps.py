from django.apps import AppConfig


class WebhookDeliveryConfig(AppConfig):
    """Installed for its management command, ``webhook_worker``."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "posgateway.webhook_delivery"
    label = "webhook_delivery"
    verbose_name = "Webhook delivery"
