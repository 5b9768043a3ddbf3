from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from terminals import services
from terminals.models import DeviceType


class Command(BaseCommand):
    help = (
        "Register a desktop or terminal (creating the store if missing) and print its API key "
        "alone on the last line; with --count N, N devices and their N keys, in order."
    )

    def add_arguments(self, parser):
        parser.add_argument("--group", required=True, help="store slug (created if missing)")
        parser.add_argument("--type", required=True, choices=DeviceType.values, dest="device_type")
        parser.add_argument("--device-id", help="stable deviceId; with --count, ID-1 … ID-N")
        parser.add_argument("--label", default="")
        parser.add_argument(
            "--count", type=int, default=None, help="create N devices (deviceIds ID-1 … ID-N)"
        )

    def handle(self, *args, **options):
        # Contract section 2: with --count (even --count 1) the deviceIds are ID-1 … ID-N.
        numbered = options["count"] is not None
        count = options["count"] if numbered else 1
        if count < 1:
            raise CommandError("--count must be at least 1")
        base_id = options["device_id"]
        keys = []
        try:
            with transaction.atomic():
                group = services.group_get_or_create(slug=options["group"])
                for n in range(1, count + 1):
                    device_id = f"{base_id}-{n}" if numbered and base_id else base_id
                    _, key = services.device_create(
                        group=group,
                        device_type=options["device_type"],
                        device_id=device_id,
                        label=options["label"],
                    )
                    keys.append(key)
        except (IntegrityError, ValueError) as exc:
            raise CommandError(f"could not create the device: {exc}") from exc
        except Exception as exc:
            if exc.__class__.__name__ == "ValidationError":
                raise CommandError(f"could not create the device: {exc}") from exc
            raise
        what = "device" if count == 1 else "devices"
        self.stderr.write(
            f"Created {count} {options['device_type']} {what} in store {group.slug}; "
            "keys are shown once:"
        )
        self.stdout.write("\n".join(keys))
