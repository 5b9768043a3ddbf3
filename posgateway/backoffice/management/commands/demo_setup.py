"""The demo store of ``make run``: made once, its keys kept for the demo in a file of its own."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework.authtoken.models import Token

from posgateway.core.events import Outbox
from terminals import services
from terminals.models import Device, DeviceType
from terminals.selectors import device_for_key
from terminals.tokens import token_digest

DEMO_GROUP = "demo"
DEMO_DEVICES = [
    (DeviceType.DESKTOP, "POS-001", "Front counter POS"),
    (DeviceType.TERMINAL, "TERM-001", "Counter terminal"),
]
DEFAULT_KEYS_FILE = ".demo-keys.json"


class Command(BaseCommand):
    help = (
        "Create the demo store (one desktop, one terminal, a staff login) and print its keys. "
        "Keys are stored hashed: with --keys-file (make run's, git-ignored, readable only by "
        "you) they are kept there and printed again on each run while they still work, else "
        "each run issues new ones; --reset issues new ones (the old ones stop working)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="manager")
        parser.add_argument("--password", default="manager-demo-password")
        parser.add_argument(
            "--keys-file",
            help=(
                f"where the demo's keys are kept between runs (`make run`: {DEFAULT_KEYS_FILE}); "
                "without it each run issues new keys"
            ),
        )
        parser.add_argument("--reset", action="store_true", help="new keys and a new API token")

    def handle(self, *args, **options):
        path = Path(options["keys_file"]) if options["keys_file"] else None
        kept = None if options["reset"] or path is None else _read(path)
        if kept is not None and _still_valid(kept):
            status = f"kept in {path}"
        else:
            kept = _make(username=options["username"], password=options["password"])
            status = "new keys"
            if path is not None:
                _write(path, kept)
                status = f"new keys, kept in {path} (`make demo-reset` issues new ones)"
        self.stdout.write(f"Demo store '{DEMO_GROUP}' ({status}):")
        for device in kept["devices"]:
            self.stdout.write(f"  {device['type']:<8} {device['deviceId']:<9} key: {device['key']}")
        self.stdout.write(
            f"  staff    login: {kept['username']} / {kept['password']}  API token: {kept['token']}"
        )
        self.stdout.write(
            "  admin    the staff login above is for the dashboard; for /admin/ create a "
            "superuser: .venv/bin/python manage.py createsuperuser"
        )


def _make(*, username: str, password: str) -> dict[str, Any]:
    """The demo store, its devices (new keys for those that exist) and its staff login."""
    devices = []
    with transaction.atomic():
        group = services.group_get_or_create(slug=DEMO_GROUP, name="Demo store")
        for device_type, device_id, label in DEMO_DEVICES:
            device = Device.objects.filter(group=group, device_id=device_id).first()
            if device is None:
                device, key = services.device_create(
                    group=group, device_type=device_type, device_id=device_id, label=label
                )
            else:
                key = services.device_rotate_key(device=device, outbox=Outbox())
            devices.append({"type": str(device_type), "deviceId": device_id, "key": key})
        _, token = services.staff_create_or_update(
            username=username, group_slugs=[DEMO_GROUP], password=password
        )
    return {"devices": devices, "username": username, "password": password, "token": token}


def _still_valid(kept: dict[str, Any]) -> bool:
    """Every kept key and the token still work (a new database, a rotation: they do not)."""
    try:
        for device in kept["devices"]:
            found = device_for_key(key=device["key"])
            if found is None or found.device_id != device["deviceId"]:
                return False
        return Token.objects.filter(
            key=token_digest(kept["token"]), user__username=kept["username"]
        ).exists()
    except (KeyError, TypeError):
        return False


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, kept: dict[str, Any]) -> None:
    """Written readable by the owner only (0600), whatever the umask, replacing the old file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(kept, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
