from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    """The admin and the management commands: interfaces over the apps' services, like the
    REST API and the dashboard (they live here, above the apps, not inside them)."""

    name = "posgateway.backoffice"
    label = "backoffice"
