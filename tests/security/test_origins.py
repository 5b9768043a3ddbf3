"""Cross-site WebSocket hijacking: the dashboard socket opens only from the site's own origins.

A manager logged in on the real server; a hostile page on the same host name but another port
or scheme (or on a look-alike host) opens ``/ws/dashboard/`` with the manager's cookie, which
the browser sends along. A real WebSocket client sets the Origin a browser would send.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import urllib.parse
import urllib.request

import pytest
import websockets

from tests.e2e.conftest import Gateway
from tests.security.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(False)]


def login_cookie(url: str, username: str) -> str:
    """Log in through the real login page; the session cookie as a browser would send it."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{url}/accounts/login/", timeout=15).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    request = urllib.request.Request(
        f"{url}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{url}/accounts/login/"},
    )
    opener.open(request, timeout=15)
    cookies = {c.name: c.value for c in jar}
    assert "sessionid" in cookies, "the login failed"
    return f"sessionid={cookies['sessionid']}"


async def opens(gw: Gateway, cookie: str, origin: str) -> bool:
    """Whether the socket opened; a refusal must be the handshake's 403, nothing else."""
    status = 0
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{gw.server.port}/ws/dashboard/",
            additional_headers={"Cookie": cookie},
            origin=origin,  # type: ignore[arg-type]
            open_timeout=10,
        ) as ws:
            return '"ready"' in await asyncio.wait_for(ws.recv(), 10)
    except websockets.InvalidStatus as refused:
        status = refused.response.status_code
    assert status == 403, (origin, status)
    return False


@pytest.fixture(scope="module")
def manager_cookie(security_gateway: Gateway) -> str:
    deployment = security_gateway.deployment
    deployment.manage(
        "create_staff", "origin-mgr", "--group", "sec-origins", "--password", PASSWORD
    )
    return login_cookie(security_gateway.server.url, "origin-mgr")


async def test_the_dashboard_socket_opens_only_from_the_site_s_own_origin(
    security_gateway: Gateway, manager_cookie: str
):
    port = security_gateway.server.port
    own = f"http://127.0.0.1:{port}"
    assert await opens(security_gateway, manager_cookie, own)

    hostile = [
        "http://127.0.0.1:9999",  # another port on the same host name (issue 18.3)
        "http://127.0.0.1",  # port 80
        f"https://127.0.0.1:{port}",  # another scheme
        f"http://localhost:{port}",  # an allowed host name, but not the one the page is on
        f"http://127.0.0.1.evil.example:{port}",
        "null",  # a sandboxed iframe or a file: page
    ]
    opened = [o for o in hostile if await opens(security_gateway, manager_cookie, o)]
    assert opened == []
