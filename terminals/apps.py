from django.apps import AppConfig


class TerminalsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "terminals"
    verbose_name = "Stores, devices and connections"
