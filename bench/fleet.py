"""Create a fleet of stores, desktops and terminals for the benchmark; write their keys as JSON.

    DATABASE_URL=sqlite:////tmp/bench.sqlite3 python bench/fleet.py --stores 100 --pairs 10 \
        --idle 0 --out /tmp/fleet.json
    DATABASE_URL=postgres://... python bench/fleet.py --load /tmp/fleet.json   # same keys
    WEBHOOK_ALLOW_HTTP=1 WEBHOOK_ALLOWED_HOSTS=127.0.0.1 DATABASE_URL=... python bench/fleet.py \
        --subscribe http://127.0.0.1:8123 --fleet /tmp/fleet.json --secrets-out /tmp/secrets.json

Devices are bulk-created (keys hashed as usual) so a fleet of thousands takes seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "posgateway.settings")

import django

django.setup()

from terminals.models import Device, DeviceType, Group, generate_key  # noqa: E402
from webhooks import services as webhooks  # noqa: E402


def build(stores: int, pairs: int, idle: int, prefix: str) -> dict:
    fleet: dict = {"groups": []}
    devices: list[Device] = []
    for s in range(1, stores + 1):
        group, _ = Group.objects.get_or_create(
            slug=f"{prefix}-{s}", defaults={"name": f"Store {s}"}
        )
        entry = {"slug": group.slug, "desktops": [], "terminals": [], "idle": []}
        for kind, count, bucket in (
            (DeviceType.DESKTOP, pairs, "desktops"),
            (DeviceType.TERMINAL, pairs, "terminals"),
            (DeviceType.TERMINAL, idle, "idle"),
        ):
            for n in range(1, count + 1):
                key = generate_key()
                tag = {"desktops": "POS", "terminals": "TERM", "idle": "IDLE"}[bucket]
                device = Device(group=group, device_type=kind, device_id=f"{tag}-{n}")
                device.set_key(key)
                devices.append(device)
                entry[bucket].append({"deviceId": device.device_id, "key": key})
        fleet["groups"].append(entry)
    Device.objects.bulk_create(devices, batch_size=2000)
    return fleet


def load(fleet: dict) -> None:
    """Create the devices of an existing fleet file (same keys) in this database."""
    devices: list[Device] = []
    kinds = (
        ("desktops", DeviceType.DESKTOP),
        ("terminals", DeviceType.TERMINAL),
        ("idle", DeviceType.TERMINAL),
    )
    for entry in fleet["groups"]:
        group, _ = Group.objects.get_or_create(slug=entry["slug"], defaults={"name": entry["slug"]})
        for bucket, kind in kinds:
            for item in entry[bucket]:
                device = Device(group=group, device_type=kind, device_id=item["deviceId"])
                device.set_key(item["key"])
                devices.append(device)
    Device.objects.bulk_create(devices, batch_size=2000)


def subscribe(fleet: dict, base_url: str) -> dict[str, str]:
    """One webhook endpoint per store of the fleet, subscribed to every event type, at
    ``<base_url>/hook/<slug>``, created as a manager's REST call would (the SSRF rules apply:
    a loopback receiver needs WEBHOOK_ALLOW_HTTP and WEBHOOK_ALLOWED_HOSTS). {slug: secret}."""
    secrets = {}
    for entry in fleet["groups"]:
        group = Group.objects.get(slug=entry["slug"])
        _endpoint, secret = webhooks.endpoint_create(
            group_id=group.pk,
            url=f"{base_url.rstrip('/')}/hook/{group.slug}",
            events=["*"],
            description="benchmark receiver",
        )
        secrets[group.slug] = secret
    return secrets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=10, help="desktop/terminal pairs per store")
    parser.add_argument("--idle", type=int, default=0, help="extra idle terminals per store")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--out", help="write the fleet (with keys) here")
    parser.add_argument("--load", help="create the devices of this fleet file instead")
    parser.add_argument(
        "--subscribe",
        metavar="BASE_URL",
        help="instead: give every store of --fleet a webhook endpoint for every event type at "
        "BASE_URL/hook/<slug>; the secrets go to --secrets-out",
    )
    parser.add_argument("--fleet", help="the fleet file, for --subscribe")
    parser.add_argument("--secrets-out", help="for --subscribe: {slug: secret} as JSON")
    args = parser.parse_args()
    if args.subscribe:
        if not args.fleet or not args.secrets_out:
            parser.error("--subscribe needs --fleet and --secrets-out")
        secrets = subscribe(json.loads(Path(args.fleet).read_text()), args.subscribe)
        Path(args.secrets_out).write_text(json.dumps(secrets))
        return
    if args.load:
        load(json.loads(Path(args.load).read_text()))
        return
    if not args.out:
        parser.error("--out or --load is required")
    fleet = build(args.stores, args.pairs, args.idle, args.prefix)
    Path(args.out).write_text(json.dumps(fleet))


if __name__ == "__main__":
    main()
