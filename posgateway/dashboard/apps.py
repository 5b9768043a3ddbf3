from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The staff dashboard: no models, only pages, template tags and a socket."""

    name = "posgateway.dashboard"
    label = "dashboard"
