"""Staff roles (contract section 8): a membership is a manager's or a viewer's.

The migration that gave memberships a role keeps every existing member, as a manager; the
selectors answer who reads a store and who may change things in it.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from terminals.models import Membership
from terminals.selectors import groups_for_user, is_manager, managed_groups, role_of
from terminals.services import staff_create_or_update
from tests.factories import make_group, make_staff, make_superuser

BEFORE = ("terminals", "0002_device_ordering_without_join")
ROLES = ("terminals", "0003_membership_role")


# --- The migration -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_existing_member_and_makes_them_managers():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE]).apps
    user_model = old.get_model("auth", "User")
    group_model = old.get_model("terminals", "Group")
    alice = user_model.objects.create(username="alice", is_staff=True)
    bob = user_model.objects.create(username="bob", is_staff=True)
    a = group_model.objects.create(slug="a")
    b = group_model.objects.create(slug="b")
    a.members.add(alice, bob)
    b.members.add(alice)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([ROLES])
    finally:
        # Whatever happened, leave the test database on the latest migrations.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    users = get_user_model().objects
    assert sorted(Membership.objects.values_list("group__slug", "user__username", "role")) == [
        ("a", "alice", "manager"),
        ("a", "bob", "manager"),
        ("b", "alice", "manager"),
    ]
    alice_now = users.get(username="alice")
    assert set(managed_groups(alice_now).values_list("slug", flat=True)) == {"a", "b"}
    assert set(groups_for_user(users.get(username="bob")).values_list("slug", flat=True)) == {"a"}
    # Still one membership per store and user.
    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(group_id=a.pk, user_id=alice.pk, role="viewer")


# --- Who reads, who manages ----------------------------------------------------------------------


@pytest.fixture
def stores(db):
    return make_group("store-a"), make_group("store-b")


def slugs(queryset) -> set[str]:
    return set(queryset.values_list("slug", flat=True))


def test_a_manager_reads_and_manages_their_store_only(stores):
    a, b = stores
    alice = make_staff("alice", "store-a")

    assert slugs(groups_for_user(alice)) == slugs(managed_groups(alice)) == {"store-a"}
    assert (role_of(alice, a.pk), role_of(alice, b.pk)) == ("manager", None)
    assert is_manager(alice, a.pk)
    assert not is_manager(alice, b.pk)


def test_a_viewer_reads_their_store_but_manages_nothing(stores):
    a, _ = stores
    vera, _ = staff_create_or_update(username="vera", group_slugs=["store-a"], role="viewer")

    assert slugs(groups_for_user(vera)) == {"store-a"}
    assert slugs(managed_groups(vera)) == set()
    assert role_of(vera, a.pk) == "viewer"
    assert not is_manager(vera, a.pk)


def test_one_user_can_manage_one_store_and_view_another(stores):
    a, b = stores
    alice = make_staff("alice", "store-a")
    Membership.objects.create(user=alice, group=b, role="viewer")

    assert slugs(groups_for_user(alice)) == {"store-a", "store-b"}
    assert slugs(managed_groups(alice)) == {"store-a"}
    assert (is_manager(alice, a.pk), is_manager(alice, b.pk)) == (True, False)


def test_a_superuser_manages_every_store(stores):
    a, b = stores
    root = make_superuser()

    assert slugs(managed_groups(root)) == {"store-a", "store-b"}
    assert is_manager(root, a.pk)
    assert role_of(root, b.pk) == "manager"
    assert role_of(root, b.pk + 1000) is None  # no such store


def test_anonymous_inactive_and_non_staff_users_have_no_role(stores):
    a, _ = stores
    alice = make_staff("alice", "store-a")
    alice.is_active = False
    alice.save()
    member = make_staff("member", "store-a")
    member.is_staff = False
    member.save()
    root = make_superuser()
    root.is_active = False
    root.save()

    for user in (AnonymousUser(), None, alice, member, root):
        assert not managed_groups(user).exists()
        assert not groups_for_user(user).exists()
        assert role_of(user, a.pk) is None
        assert not is_manager(user, a.pk)


def test_the_service_refuses_an_unknown_role(stores):
    with pytest.raises(ValueError, match="role must be one of manager, viewer"):
        staff_create_or_update(username="x", group_slugs=["store-a"], role="owner")
    assert not get_user_model().objects.filter(username="x").exists()
