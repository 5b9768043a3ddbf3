"""The dashboard socket's Origin rule (posgateway.gateway.dashboard.origin_allowed), case by case.

The real-server probe is tests/security/test_origins.py; these are the settings it depends on.
"""

from __future__ import annotations

import pytest

from posgateway.gateway.dashboard import origin_allowed


def scope(host: str, scheme: str = "ws", **headers: str) -> dict:
    sent = [(b"host", host.encode())]
    sent += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": sent}


@pytest.mark.parametrize(
    ("host", "scheme", "origin", "allowed"),
    [
        ("127.0.0.1:8000", "ws", "http://127.0.0.1:8000", True),
        ("127.0.0.1:8000", "ws", "http://127.0.0.1:9999", False),
        ("127.0.0.1:8000", "ws", "https://127.0.0.1:8000", False),
        ("pos.example.com", "wss", "https://pos.example.com", True),
        ("pos.example.com", "wss", "https://pos.example.com:443", True),
        ("pos.example.com", "wss", "http://pos.example.com", False),
        ("pos.example.com", "wss", "https://pos.example.com:8443", False),
        # A Host outside ALLOWED_HOSTS is no origin of ours, whatever Origin says.
        ("evil.example", "ws", "http://evil.example", False),
        ("127.0.0.1:8000", "ws", "", False),
        ("127.0.0.1:8000", "ws", "null", False),
        ("127.0.0.1:8000", "ws", "http://127.0.0.1:8000/path", False),
    ],
)
def test_only_the_request_s_own_origin_is_allowed(settings, host, scheme, origin, allowed):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "pos.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    assert origin_allowed(scope(host, scheme), origin) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://pos.example.com", True),
        ("https://shop.example.org:8443", True),
        ("https://a.staff.example.net", True),
        ("https://shop.example.org", False),  # port 443, not 8443
        ("http://pos.example.com", False),
        ("https://staff.example.net.evil.example", False),
        ("https://evil.example", False),
    ],
)
def test_csrf_trusted_origins_are_matched_by_scheme_host_and_port(settings, origin, allowed):
    """Behind a proxy that hides the public scheme or port, the trusted origins say it."""
    settings.ALLOWED_HOSTS = ["internal"]
    settings.CSRF_TRUSTED_ORIGINS = [
        "https://pos.example.com",
        "https://shop.example.org:8443",
        "https://*.staff.example.net",
    ]
    assert origin_allowed(scope("internal:8000"), origin) is allowed


def test_the_forwarded_scheme_counts_only_where_the_proxy_header_is_trusted(settings):
    settings.ALLOWED_HOSTS = ["pos.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    behind_tls = scope("pos.example.com", "ws", x_forwarded_proto="https")
    assert not origin_allowed(behind_tls, "https://pos.example.com")
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(behind_tls, "https://pos.example.com")
    assert not origin_allowed(behind_tls, "http://pos.example.com")
