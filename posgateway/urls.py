from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from posgateway.gateway.health import healthz
from posgateway.rest import payments as payments_api
from posgateway.rest.sessions import SessionViewSet, TerminalRequestViewSet
from posgateway.rest.terminals import DeviceViewSet, GroupViewSet, TerminalViewSet
from posgateway.rest.webhooks import WebhookEndpointViewSet, WebhookEventViewSet

# The REST API (docs/api.md): every endpoint scoped to the user's stores; reads, refunds and
# webhook endpoints.
api = SimpleRouter()
api.register("groups", GroupViewSet, basename="group")
api.register("terminals", TerminalViewSet, basename="terminal")
api.register("devices", DeviceViewSet, basename="device")
api.register("transactions", payments_api.TransactionViewSet, basename="transaction")
api.register("sessions", SessionViewSet, basename="session")
api.register("terminal-requests", TerminalRequestViewSet, basename="terminal-request")
api.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
api.register("webhook-events", WebhookEventViewSet, basename="webhook-event")

# The schema and its docs UI are public; their assets come from the sidecar package.
_public = {"permission_classes": [AllowAny], "authentication_classes": []}

urlpatterns = [
    # The address `make run` announces: the dashboard (its login first).
    path("", RedirectView.as_view(pattern_name="dashboard:terminals"), name="home"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # Staff login for the dashboard (contract section 6): back to the page asked for (?next=).
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", include("posgateway.dashboard.urls")),
    path("api/schema/", SpectacularAPIView.as_view(**_public), name="api-schema"),
    path(
        "api/docs/",
        # The page and its start-up script as two requests, the page's style in a file: no
        # inline script or style under the Content-Security-Policy (settings.py).
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", template_name="api/swagger_ui.html", **_public
        ),
        name="api-docs",
    ),
    # Before the router: a refund's URL would otherwise read as a transactionId with slashes.
    path("api/", include(payments_api.urlpatterns)),
    path("api/", include(api.urls)),
]

# A URL under /api/ that no endpoint matches answers in the API's error shape.
handler404 = "posgateway.rest.base.page_not_found"
