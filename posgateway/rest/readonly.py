"""What the read-only viewsets of the user's own rows share: their scope, lookup and schema.

Apart from ``base`` because it imports DRF's viewsets, which load the pagination classes of
``base`` named in the settings.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from posgateway.rest.base import ApiView, error_responses


# Read-only rows of the user's own stores, looked up by their database ``id``: ``rows_for`` is
# the selector that gives them (``user=`` in, a QuerySet out). No docstring: drf-spectacular
# would make it the description of every operation of the viewsets that have none of their own.
class ScopedViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = "[0-9]+"
    rows_for: Any = None

    def get_queryset(self):
        return self.rows_for(user=self.request.user)


def read_only_schema(
    serializer: type[serializers.Serializer],
    *,
    list_summary: str,
    list_description: str,
    retrieve_summary: str,
    retrieve_description: str | None = None,
    detail_serializer: type[serializers.Serializer] | None = None,
) -> Any:
    """The schema of a read-only viewset in numbered pages: its ``list`` and ``retrieve``."""
    return extend_schema_view(
        list=extend_schema(
            summary=list_summary,
            description=list_description,
            responses={200: serializer(many=True), **error_responses(400, paged=True)},
        ),
        retrieve=extend_schema(
            summary=retrieve_summary,
            description=retrieve_description,
            responses={200: detail_serializer or serializer, **error_responses(404)},
        ),
    )
