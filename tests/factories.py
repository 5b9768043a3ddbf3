"""Test data, made through the same services production uses."""

from __future__ import annotations

from terminals import services
from terminals.models import Device, DeviceType, Group


def make_group(slug: str = "store-a") -> Group:
    return services.group_get_or_create(slug=slug)


def make_device(
    group: Group | str = "store-a",
    device_type: str = DeviceType.TERMINAL,
    device_id: str | None = None,
    label: str = "",
) -> tuple[Device, str]:
    if isinstance(group, str):
        group = make_group(group)
    return services.device_create(
        group=group, device_type=device_type, device_id=device_id, label=label
    )
