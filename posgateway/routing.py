from django.urls import re_path

from posgateway.gateway.consumers import GatewayConsumer
from posgateway.gateway.dashboard import dashboard_application

websocket_urlpatterns = [
    # Devices: authorised by key alone, no Origin check (POS and terminal clients send none).
    re_path(r"^ws/?$", GatewayConsumer.as_asgi()),
    # Staff browsers: the login session, and only from our own origins.
    re_path(r"^ws/dashboard/?$", dashboard_application()),
]
