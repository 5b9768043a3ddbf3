"""Roles on the REST API (contract section 8): a viewer reads and exports everything of their
store; a write that needs a manager answers a viewer 403 ``{"error": "Forbidden", …}``.

The API has no write yet (refunds will be the first): the helper and the permission are tried
on a view that exists only in this module, answered by the project's own exception handler.
"""

from __future__ import annotations

import pytest
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from posgateway.rest.base import ManagerOfObjectStore, require_manager
from terminals.models import Device, Membership
from terminals.services import staff_create_or_update
from tests.api.conftest import make_payment, token_client

pytestmark = pytest.mark.django_db

READS = [
    "/api/groups/",
    "/api/terminals/",
    "/api/devices/",
    "/api/transactions/",
    "/api/transactions/A-1/",
    "/api/transactions/export/",
    "/api/reports/daily/",
    "/api/reports/daily/export/",
    "/api/sessions/",
]


class StoreWrite(APIView):
    """A write on a device that needs a manager of its store, as a refund will."""

    def post(self, request, pk: int):
        device = Device.objects.get(pk=pk)
        require_manager(request, device.group_id, "change its devices")
        device.label = request.data.get("label", "")
        device.save(update_fields=["label"])
        return Response({"label": device.label})


class ObjectWrite(APIView):
    """The same through the object permission: reads open, writes for managers."""

    permission_classes = [*APIView.permission_classes, ManagerOfObjectStore]

    def _device(self, request, pk: int) -> Device:
        device = Device.objects.get(pk=pk)
        self.check_object_permissions(request, device)
        return device

    def get(self, request, pk: int):
        return Response({"label": self._device(request, pk).label})

    def patch(self, request, pk: int):
        device = self._device(request, pk)
        device.label = request.data.get("label", "")
        device.save(update_fields=["label"])
        return Response({"label": device.label})


urlpatterns = [
    path("write/<int:pk>/", StoreWrite.as_view()),
    path("object/<int:pk>/", ObjectWrite.as_view()),
]


@pytest.fixture
def viewer(store_a):
    user, token = staff_create_or_update(username="vera", group_slugs=[store_a.slug], role="viewer")
    user.api_token = token
    return user


def _forbidden(response, message: str) -> None:
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "Forbidden", "message": message}


@pytest.mark.urls("tests.api.test_roles")
def test_require_manager_refuses_a_viewer_with_403_json_and_changes_nothing(store_a, viewer):
    response = token_client(viewer).post(
        f"/write/{store_a.terminal.pk}/", {"label": "changed"}, format="json"
    )

    _forbidden(response, "Only a manager of the store can change its devices.")
    store_a.terminal.refresh_from_db()
    assert store_a.terminal.label == ""


@pytest.mark.urls("tests.api.test_roles")
def test_require_manager_lets_a_manager_and_a_superuser_write(store_a, staff_a, superuser):
    for user, label in ((staff_a, "by alice"), (superuser, "by root")):
        response = token_client(user).post(
            f"/write/{store_a.terminal.pk}/", {"label": label}, format="json"
        )
        assert response.status_code == 200
        store_a.terminal.refresh_from_db()
        assert store_a.terminal.label == label


@pytest.mark.urls("tests.api.test_roles")
def test_require_manager_refuses_a_manager_of_another_store(store_a, staff_b):
    response = token_client(staff_b).post(
        f"/write/{store_a.terminal.pk}/", {"label": "x"}, format="json"
    )
    _forbidden(response, "Only a manager of the store can change its devices.")


@pytest.mark.urls("tests.api.test_roles")
def test_the_object_permission_lets_a_viewer_read_but_not_write(store_a, viewer, staff_a):
    url = f"/object/{store_a.terminal.pk}/"
    client = token_client(viewer)

    assert client.get(url).status_code == 200
    _forbidden(
        client.patch(url, {"label": "x"}, format="json"),
        "Only a manager of the store can do this.",
    )
    store_a.terminal.refresh_from_db()
    assert store_a.terminal.label == ""
    assert token_client(staff_a).patch(url, {"label": "y"}, format="json").status_code == 200


@pytest.mark.parametrize("url", READS)
def test_a_viewer_reads_and_exports_what_a_manager_does(store_a, store_b, staff_a, url):
    make_payment(store_a, "A-1", amount="11.00")
    make_payment(store_b, "B-1", amount="22.00")
    vera, token = staff_create_or_update(username="vera", group_slugs=[store_a.slug], role="viewer")
    vera.api_token = token
    assert Membership.objects.get(user=vera).role == "viewer"

    as_viewer = token_client(vera).get(url)
    as_manager = token_client(staff_a).get(url)

    assert as_viewer.status_code == as_manager.status_code == 200
    if as_viewer.streaming:
        assert b"".join(as_viewer.streaming_content) == b"".join(as_manager.streaming_content)
    else:
        assert as_viewer.json() == as_manager.json()
