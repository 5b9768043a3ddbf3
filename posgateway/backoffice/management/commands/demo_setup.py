from django.core.management.base import BaseCommand
from django.db import transaction

from posgateway.core.events import Outbox
from terminals import services
from terminals.models import Device, DeviceType

DEMO_GROUP = "demo"
DEMO_DEVICES = [
    (DeviceType.DESKTOP, "POS-001", "Front counter POS"),
    (DeviceType.TERMINAL, "TERM-001", "Counter terminal"),
]


class Command(BaseCommand):
    help = (
        "Create (or refresh) the demo store with one desktop and one terminal, and a staff login. "
        "Keys are stored hashed, so each run issues fresh keys and prints them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="manager")
        parser.add_argument("--password", default="manager-demo-password")

    def handle(self, *args, **options):
        lines = []
        with transaction.atomic():
            group = services.group_get_or_create(slug=DEMO_GROUP, name="Demo store")
            for device_type, device_id, label in DEMO_DEVICES:
                device = Device.objects.filter(group=group, device_id=device_id).first()
                if device is None:
                    device, key = services.device_create(
                        group=group, device_type=device_type, device_id=device_id, label=label
                    )
                else:
                    outbox = Outbox()
                    key = services.device_rotate_key(device=device, outbox=outbox)
                lines.append(f"  {device_type:<8} {device_id:<9} key: {key}")
            user, token = services.staff_create_or_update(
                username=options["username"],
                group_slugs=[DEMO_GROUP],
                password=options["password"],
            )
        self.stdout.write(f"Demo store '{DEMO_GROUP}':")
        self.stdout.write("\n".join(lines))
        self.stdout.write(
            f"  staff    login: {user.username} / {options['password']}  API token: {token}"
        )
