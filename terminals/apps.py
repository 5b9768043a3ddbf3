from django.apps import AppConfig


class TerminalsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "terminals"
    verbose_name = "Stores, devices and connections"

    def ready(self) -> None:
        from django.db.models.signals import post_save, pre_save
        from rest_framework.authtoken.models import Token

        from terminals import tokens

        # REST API tokens are stored as digests, like device keys (terminals/tokens.py).
        pre_save.connect(tokens.hash_new_token, sender=Token, dispatch_uid="token-digest")
        post_save.connect(tokens.show_token_once, sender=Token, dispatch_uid="token-shown")
