from django.apps import AppConfig


class TerminalSessionsConfig(AppConfig):
    """Terminal API sessions; labelled apart because django.contrib.sessions owns `sessions`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "sessions"
    label = "terminal_sessions"
    verbose_name = "Terminal API sessions"
