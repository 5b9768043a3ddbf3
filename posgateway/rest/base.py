"""What every REST endpoint shares: the error mapper, pagination, the store filter, schema bits.

Errors take the WebSocket protocol's shape (``posgateway.core.protocol``) on every endpoint:

    {"error": <HTTP reason phrase>, "message": <text>}

plus ``"fields"`` (parameter -> messages) when query parameters were refused. A
:class:`~posgateway.core.protocol.ProtocolError` raised by a selector or view answers with its own
status, so a service's ``NotFound("Transaction not found")`` reads the same on both interfaces.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, pagination, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import set_rollback

from posgateway.core.health import DATABASE, is_database_outage
from posgateway.core.protocol import (
    Forbidden,
    InternalError,
    ProtocolError,
    ServiceUnavailable,
    error_body,
    iso,
)
from terminals.selectors import groups_for_user, is_manager

logger = logging.getLogger("posgateway.api")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


# --- Errors ------------------------------------------------------------------------------------


def _messages(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [msg for value in detail.values() for msg in _messages(value)]
    if isinstance(detail, list | tuple):
        return [msg for value in detail for msg in _messages(value)]
    return [str(detail)]


def _field_errors(detail: dict[str, Any]) -> dict[str, list[str]]:
    return {str(name): _messages(value) for name, value in detail.items()}


def _message(detail: Any) -> str:
    if isinstance(detail, dict):
        parts = []
        for name, messages in _field_errors(detail).items():
            text = " ".join(messages)
            parts.append(text if name in ("non_field_errors", "__all__") else f"{name}: {text}")
        return " ".join(parts)
    return " ".join(_messages(detail))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error as ``{"error", "message"}``, never an HTML page."""
    if isinstance(exc, ProtocolError):
        set_rollback()
        return Response(exc.to_frame(), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = f"{int(exc.wait)}"
        body = error_body(exc.status_code, _message(exc.detail))
        if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
            body["fields"] = _field_errors(exc.detail)
        set_rollback()
        return Response(body, status=exc.status_code, headers=headers)
    set_rollback()
    if is_database_outage(exc):
        DATABASE.failed(exc, f"REST {context.get('view').__class__.__name__}")
        unavailable = ServiceUnavailable()
        return Response(unavailable.to_frame(), status=unavailable.status)
    # A bug: logged with its traceback, answered without it.
    logger.error("unhandled error in %s", context.get("view"), exc_info=exc)
    return Response(InternalError().to_frame(), status=HTTPStatus.INTERNAL_SERVER_ERROR)


# --- Roles (contract section 8) ----------------------------------------------------------------


def manager_required_message(what: str = "do this") -> str:
    return f"Only a manager of the store can {what}."


def require_manager(request: Any, group_id: int, what: str = "do this") -> None:
    """A write that needs a manager of the store (refunds, device management, webhooks):
    raises :class:`~posgateway.core.protocol.Forbidden`, which :func:`exception_handler`
    answers with 403 ``{"error": "Forbidden", "message": "Only a manager of the store can
    <what>."}``. Superusers manage every store; a viewer reads and exports but changes nothing.

    Call it once the object was found among the user's stores (another store's object stays a
    404, as a missing one), with that object's store, before changing anything.
    """
    if not is_manager(getattr(request, "user", None), group_id):
        raise Forbidden(manager_required_message(what))


class ManagerOfObjectStore(permissions.BasePermission):
    """A DRF object permission: reads (GET, HEAD, OPTIONS) for anyone who may see the object,
    anything else only for a manager of its store (``obj.group_id``): 403 with the message of
    :func:`require_manager` otherwise."""

    message = manager_required_message()

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return is_manager(request.user, obj.group_id)


TERMINAL_API_PATHS = "/terminal-api/sync and /terminal-api/async (exactly, no trailing slash)"


def page_not_found(request, exception=None):
    """Django's 404 handler: JSON under /api/ and /terminal-api/ (a URL no endpoint matches),
    HTML elsewhere. The Terminal API's paths are exact (contract section 4): a near miss such
    as a trailing slash is told the right ones, never redirected (a client would re-send its
    body as a GET)."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(404, "Not found."), status=404)
    if request.path.startswith("/terminal-api/"):
        return JsonResponse(
            error_body(404, f"The Terminal API is at {TERMINAL_API_PATHS}"), status=404
        )
    return defaults.page_not_found(request, exception)


JSON_PREFIXES = ("/api/", "/terminal-api/")


class JsonErrorPagesMiddleware:
    """Error pages under /api/ and /terminal-api/ are JSON with DEBUG on too.

    With DEBUG, Django answers an unmatched URL and an unhandled exception with its HTML
    debug pages, bypassing ``handler404``; a client reading these APIs gets the promised
    ``{"error", "message"}`` instead (the traceback is still in the server's log).
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code in (404, 500)
            and request.path.startswith(JSON_PREFIXES)
            and not response.get("Content-Type", "").startswith("application/json")
            and response.get("Content-Type", "").startswith("text/html")
        ):
            if response.status_code == 404:
                return page_not_found(request)
            return JsonResponse(error_body(500, "Failed to process the request"), status=500)
        return response


class ErrorSerializer(serializers.Serializer):
    """The one error shape (documentation only)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        # "fields" is also the name of a Serializer property: declare the fields here.
        return {
            "error": serializers.CharField(help_text="The HTTP reason phrase: `Bad Request` …"),
            "message": serializers.CharField(
                help_text="What went wrong; a refused parameter is named first"
            ),
            "fields": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()),
                required=False,
                help_text="Refused query parameters, each with its messages",
            ),
        }


_ERROR_TEXT = {
    400: "A query parameter was refused (`message` names it, `fields` lists every one)",
    401: "No credentials, or a wrong token (`WWW-Authenticate: Token`)",
    403: "Authenticated, but not allowed",
    404: "Not found, or in a store that is not yours (the same answer either way)",
    "404-page": "A page past the last one",
    429: "Throttled: retry after the `Retry-After` seconds",
}


def error_responses(*codes: int, paged: bool = False) -> dict[int, OpenApiResponse]:
    """Schema entries for the error answers an endpoint can give (401 and 429 always)."""
    texts = {code: _ERROR_TEXT[code] for code in sorted({*codes, 401, 429})}
    if paged:
        texts[404] = _ERROR_TEXT["404-page"]
    return {
        code: OpenApiResponse(ErrorSerializer, description=text)
        for code, text in sorted(texts.items())
    }


# --- Views -----------------------------------------------------------------------------------


class ApiView:
    """Mixed into every API view: a NUL character in a query parameter or in the URL is a
    400 naming it (PostgreSQL refuses NUL in text, which would otherwise surface as a 500).

    Throttles count every request, refused ones too. DRF checks them last, after
    authentication and permissions, so a client guessing tokens (401 each time) was never
    counted; here they run before the permissions and on a failed authentication, once per
    request.
    """

    def perform_authentication(self, request) -> None:
        try:
            super().perform_authentication(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            self._throttle_once(request)
            raise

    def check_permissions(self, request) -> None:
        self._throttle_once(request)
        super().check_permissions(request)  # type: ignore[misc]

    def check_throttles(self, request) -> None:
        self._throttle_once(request)

    def _throttle_once(self, request) -> None:
        if getattr(request, "_throttles_checked", False):
            return
        request._throttles_checked = True
        super().check_throttles(request)  # type: ignore[misc]

    def initial(self, request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        refused = {
            name: ["Null characters are not allowed."]
            for name, values in [
                *request.query_params.lists(),
                *((k, [v]) for k, v in kwargs.items()),
            ]
            if any("\x00" in str(value) for value in values)
        }
        if refused:
            raise exceptions.ValidationError(refused)


# --- Fields ----------------------------------------------------------------------------------


class TimestampField(serializers.DateTimeField):
    """ISO 8601 UTC with milliseconds and Z, as on the WebSocket (``2024-01-15T10:35:30.000Z``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return iso(value)


# --- Pagination ------------------------------------------------------------------------------


def _whole_number(request, param: str, default: int) -> int:
    """``?<param>=``: a whole number of at least 1; ``default`` when absent or empty."""
    raw = request.query_params.get(param)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number < 1:
        raise exceptions.ValidationError({param: ["Enter a whole number of at least 1."]})
    return number


def _query_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "required": False,
        "in": "query",
        "description": description,
        "schema": schema,
    }


class _PageSize:
    """Both paginations: ``?page_size=M`` (capped, as DRF does: asking for more is not an
    error), and in the schema their position parameter followed by the size."""

    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request) -> int:
        size = _whole_number(request, self.page_size_query_param, self.page_size)
        return min(size, self.max_page_size)

    def _position_parameter(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        return [
            self._position_parameter(),
            _query_parameter(
                self.page_size_query_param,
                f"Results per page (default {DEFAULT_PAGE_SIZE}; more than {MAX_PAGE_SIZE} "
                f"counts as {MAX_PAGE_SIZE})",
                {"type": "integer", "minimum": 1},
            ),
        ]


class PageNumberPagination(_PageSize, pagination.PageNumberPagination):
    """``?page=N&page_size=M`` with ``count``, ``next``, ``previous``, ``results``."""

    def get_page_number(self, request, paginator):
        return _whole_number(request, self.page_query_param, 1)

    def _position_parameter(self) -> dict[str, Any]:
        return _query_parameter(
            self.page_query_param,
            "Page number, from 1 (a page past the last answers 404)",
            {"type": "integer", "minimum": 1},
        )


class CursorPagination(_PageSize, pagination.CursorPagination):
    """Cursor pages (``next``, ``previous``, ``results``): stable while new rows arrive.

    ``orderings`` maps the allowed ``?ordering=`` values to the query's ordering; the first
    field is the cursor's position, the rest break ties. The FilterSet validates the value.
    """

    ordering: tuple[str, ...] = ("-created_at", "-pk")
    ordering_query_param = "ordering"
    orderings: dict[str, tuple[str, ...]] = {}
    # How to check a cursor's position for the ordering's first field: a forged cursor must
    # answer 400, not reach the database as a malformed value.
    position_parsers: dict[str, Any] = {}

    def get_ordering(self, request, queryset, view) -> tuple[str, ...]:
        return self.orderings.get(
            request.query_params.get(self.ordering_query_param), self.ordering
        )

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            cursor = None
            valid = False
        else:
            valid = True
            if cursor is not None and cursor.position is not None:
                parse = self.position_parsers.get(self.ordering[0].lstrip("-"))
                try:
                    valid = parse is None or parse(cursor.position) is not None
                except (ValueError, ArithmeticError):  # OverflowError is one
                    valid = False
        if not valid:
            raise exceptions.ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the next or previous link."]}
            )
        return cursor

    def _position_parameter(self) -> dict[str, Any]:
        return _query_parameter(
            self.cursor_query_param,
            "Opaque position from a `next` or `previous` link",
            {"type": "string"},
        )


# --- Filters ---------------------------------------------------------------------------------


class StrictBooleanField(forms.NullBooleanField):
    """``true``/``false`` (or 1/0); anything else is refused, not silently ignored."""

    values = {"true": True, "1": True, "false": False, "0": False}
    widget = forms.TextInput  # the raw text: a select widget maps anything unknown to None

    def to_python(self, value: Any) -> bool | None:
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        try:
            return self.values[str(value).strip().lower()]
        except KeyError:
            raise forms.ValidationError("Enter true or false.") from None

    def validate(self, value: Any) -> None:
        pass


class BooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


def _stores_of_request(request):
    return groups_for_user(getattr(request, "user", None))


def store_filter(field_name: str = "group", **kwargs: Any) -> django_filters.ModelChoiceFilter:
    """``?store=<slug>``: one of the user's stores; any other slug is refused the same way."""
    return django_filters.ModelChoiceFilter(
        field_name=field_name,
        to_field_name="slug",
        queryset=_stores_of_request,
        error_messages={"invalid_choice": "Unknown store, or not one of yours."},
        **kwargs,
    )


# --- Schema ----------------------------------------------------------------------------------


def allow_empty_query_values(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: an empty optional query parameter (``?store=``, as
    an HTML form sends it) means the same as leaving it out; say so in the schema."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter["allowEmptyValue"] = True
    return result
