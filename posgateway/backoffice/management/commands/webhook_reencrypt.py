"""``manage.py webhook_reencrypt``: every webhook signing secret under the current key."""

from django.core.management.base import BaseCommand

from webhooks.services import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every webhook signing secret with the first key of WEBHOOK_ENCRYPTION_KEYS "
        "(or the key derived from SECRET_KEY), after a key rotation (docs/webhooks.md)."
    )

    def handle(self, *args, **options) -> None:
        count = secrets_reencrypt()
        self.stdout.write(f"{count} endpoint(s) re-encrypted")
