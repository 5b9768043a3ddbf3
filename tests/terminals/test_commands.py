"""The operator's commands: create_device, create_staff, demo_setup."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.exceptions import AuthenticationFailed

from posgateway.rest.authentication import HashedTokenAuthentication
from terminals.models import Device, DeviceType, Group
from terminals.selectors import device_for_key, groups_for_user, managed_groups, role_of
from tests.factories import make_device, make_group

pytestmark = pytest.mark.django_db


def manage(*args: str) -> list[str]:
    """Run a command; return its stdout lines (what a script would capture)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue().splitlines()


# --- create_device ---------------------------------------------------------------------------


def test_create_device_prints_the_key_alone_on_the_last_line_and_creates_the_group():
    assert not Group.objects.filter(slug="new-store").exists()

    lines = manage(
        "create_device", "--group", "new-store", "--type", "terminal", "--device-id", "TERM-1"
    )

    key = lines[-1]
    assert key == key.strip()
    assert " " not in key
    device = device_for_key(key=key)
    assert device is not None
    assert device.group.slug == "new-store"
    assert device.device_type == DeviceType.TERMINAL
    assert device.device_id == "TERM-1"


def test_create_device_adds_to_an_existing_group_with_label():
    group = make_group("store-a")

    lines = manage(
        "create_device",
        "--group",
        "store-a",
        "--type",
        "desktop",
        "--label",
        "Front counter",
    )

    device = device_for_key(key=lines[-1])
    assert device.group == group
    assert device.device_type == DeviceType.DESKTOP
    assert device.device_id is None
    assert device.label == "Front counter"
    assert Group.objects.filter(slug="store-a").count() == 1


def test_create_device_with_count_prints_the_keys_in_order_of_device_id():
    lines = manage(
        "create_device",
        "--group",
        "fleet",
        "--type",
        "terminal",
        "--device-id",
        "T",
        "--count",
        "3",
    )

    keys = lines[-3:]
    assert len(set(keys)) == 3
    assert [device_for_key(key=key).device_id for key in keys] == ["T-1", "T-2", "T-3"]
    assert Device.objects.filter(group__slug="fleet").count() == 3


def test_create_device_with_count_one_still_numbers_the_device_id():
    lines = manage(
        "create_device",
        "--group",
        "fleet",
        "--type",
        "terminal",
        "--device-id",
        "T",
        "--count",
        "1",
    )

    assert device_for_key(key=lines[-1]).device_id == "T-1"
    assert Device.objects.filter(group__slug="fleet").count() == 1


def test_create_device_without_count_keeps_the_device_id_as_given():
    lines = manage("create_device", "--group", "fleet", "--type", "terminal", "--device-id", "T")

    assert device_for_key(key=lines[-1]).device_id == "T"


def test_create_device_with_count_and_no_device_id_creates_devices_without_ids():
    lines = manage("create_device", "--group", "fleet", "--type", "desktop", "--count", "2")

    devices = [device_for_key(key=key) for key in lines[-2:]]
    assert [d.device_id for d in devices] == [None, None]
    assert devices[0] != devices[1]


def test_create_device_with_a_device_id_taken_in_the_group_is_a_command_error():
    make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    with pytest.raises(CommandError):
        manage("create_device", "--group", "store-a", "--type", "terminal", "--device-id", "TERM-1")

    assert Device.objects.filter(group__slug="store-a").count() == 1


def test_create_device_count_clashing_with_an_existing_id_creates_none_of_them():
    make_device("store-a", DeviceType.TERMINAL, "T-2")

    with pytest.raises(CommandError):
        manage(
            "create_device",
            "--group",
            "store-a",
            "--type",
            "terminal",
            "--device-id",
            "T",
            "--count",
            "3",
        )

    assert list(
        Device.objects.filter(group__slug="store-a").values_list("device_id", flat=True)
    ) == ["T-2"]


def test_create_device_same_device_id_in_another_group_is_fine():
    make_device("store-a", DeviceType.TERMINAL, "TERM-1")

    lines = manage(
        "create_device", "--group", "store-b", "--type", "terminal", "--device-id", "TERM-1"
    )

    assert device_for_key(key=lines[-1]).group.slug == "store-b"


@pytest.mark.parametrize(
    "args",
    [
        ["--type", "printer"],
        ["--type", "terminal", "--count", "0"],
    ],
    ids=["unknown-type", "zero-count"],
)
def test_create_device_rejects_bad_arguments(args):
    with pytest.raises(CommandError):
        manage("create_device", "--group", "store-a", *args)

    assert Device.objects.count() == 0


# --- create_staff ----------------------------------------------------------------------------


def token_user(token: str):
    user, _ = HashedTokenAuthentication().authenticate_credentials(token)
    return user


def test_create_staff_creates_a_staff_member_of_exactly_those_groups_with_a_token():
    make_group("c")

    lines = manage(
        "create_staff",
        "alice",
        "--group",
        "a",
        "--group",
        "b",
        "--password",
        "first-Kq7-passphrase",
    )

    user = get_user_model().objects.get(username="alice")
    assert user.is_staff
    assert user.check_password("first-Kq7-passphrase")
    assert set(user.stores.values_list("slug", flat=True)) == {"a", "b"}
    assert token_user(lines[-1]) == user


def test_create_staff_updates_an_existing_user_to_exactly_the_new_groups():
    first = manage(
        "create_staff",
        "alice",
        "--group",
        "a",
        "--group",
        "b",
        "--password",
        "first-Kq7-passphrase",
    )

    second = manage("create_staff", "alice", "--group", "c", "--password", "second-Zr4-passphrase")

    user = get_user_model().objects.get(username="alice")
    assert get_user_model().objects.filter(username="alice").count() == 1
    assert set(user.stores.values_list("slug", flat=True)) == {"c"}
    assert user.check_password("second-Zr4-passphrase")
    assert not user.check_password("first-Kq7-passphrase")
    assert token_user(second[-1]) == user
    # Tokens are stored as digests: the new one printed replaces the old one.
    with pytest.raises(AuthenticationFailed):
        token_user(first[-1])


def test_create_staff_without_password_cannot_log_in_with_one_but_gets_a_token():
    lines = manage("create_staff", "bob", "--group", "a")

    user = get_user_model().objects.get(username="bob")
    assert not user.has_usable_password()
    assert token_user(lines[-1]) == user


def roles(username: str) -> dict[str, str]:
    user = get_user_model().objects.get(username=username)
    return {slug: role_of(user, pk) for pk, slug in Group.objects.values_list("pk", "slug")}


def test_create_staff_makes_managers_by_default_so_existing_commands_keep_their_meaning():
    manage("create_staff", "alice", "--group", "a", "--group", "b")
    make_group("c")

    assert roles("alice") == {"a": "manager", "b": "manager", "c": None}


def test_create_staff_role_viewer_makes_a_viewer_of_every_store_named():
    manage("create_staff", "vera", "--group", "a", "--group", "b", "--role", "viewer")

    assert roles("vera") == {"a": "viewer", "b": "viewer"}
    user = get_user_model().objects.get(username="vera")
    assert set(groups_for_user(user).values_list("slug", flat=True)) == {"a", "b"}
    assert not managed_groups(user).exists()


def test_create_staff_again_changes_the_role_and_drops_other_stores():
    manage("create_staff", "alice", "--group", "a", "--group", "b", "--role", "viewer")

    manage("create_staff", "alice", "--group", "a", "--role", "manager")

    assert roles("alice") == {"a": "manager", "b": None}


def test_create_staff_refuses_an_unknown_role_and_changes_nothing():
    with pytest.raises(CommandError, match="invalid choice: 'owner'"):
        manage("create_staff", "alice", "--group", "a", "--role", "owner")
    assert not get_user_model().objects.filter(username="alice").exists()


# --- demo_setup ------------------------------------------------------------------------------


KEY_LINE = re.compile(r"^\s*(desktop|terminal)\s+(\S+)\s+key:\s*(\S+)\s*$")


def demo_keys(lines: list[str]) -> dict[str, tuple[str, str]]:
    found = {}
    for line in lines:
        match = KEY_LINE.match(line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def test_demo_setup_creates_the_demo_store_with_a_desktop_and_a_terminal_and_prints_keys():
    lines = manage("demo_setup")

    keys = demo_keys(lines)
    assert set(keys) == {"desktop", "terminal"}
    for device_type, (device_id, key) in keys.items():
        device = device_for_key(key=key)
        assert device is not None
        assert device.group.slug == "demo"
        assert device.device_type == device_type
        assert device.device_id == device_id
    staff = get_user_model().objects.get(stores__slug="demo")
    assert staff.is_staff
    assert staff.username in "\n".join(lines)


def test_demo_setup_run_again_issues_fresh_keys_and_no_duplicate_devices():
    first = demo_keys(manage("demo_setup"))

    second = demo_keys(manage("demo_setup"))

    assert Device.objects.filter(group__slug="demo").count() == 2
    for device_type in ("desktop", "terminal"):
        assert device_for_key(key=first[device_type][1]) is None
        assert device_for_key(key=second[device_type][1]).device_type == device_type


def test_demo_setup_with_a_keys_file_keeps_the_keys_until_reset(tmp_path):
    keys_file = tmp_path / "demo-keys.json"
    first = manage("demo_setup", "--keys-file", str(keys_file))

    again = manage("demo_setup", "--keys-file", str(keys_file))

    assert demo_keys(again) == demo_keys(first)
    assert "kept in" in again[0]
    assert oct(keys_file.stat().st_mode & 0o777) == "0o600"
    for device_type, (_, key) in demo_keys(again).items():
        assert device_for_key(key=key).device_type == device_type
    token = re.search(r"API token: (\S+)", "\n".join(again)).group(1)
    assert token == re.search(r"API token: (\S+)", "\n".join(first)).group(1)

    reset = manage("demo_setup", "--keys-file", str(keys_file), "--reset")

    for device_type in ("desktop", "terminal"):
        assert device_for_key(key=demo_keys(first)[device_type][1]) is None
        assert device_for_key(key=demo_keys(reset)[device_type][1]) is not None
