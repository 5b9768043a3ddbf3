"""A Content-Security-Policy on every page: no inline script or style, nothing from another
origin. The browser tests (tests/dashboard/test_browser.py) run every page under it and fail on
any violation; these check the header on each kind of answer and the templates' source."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.factories import make_staff, make_superuser
from tests.services import ROOT

pytestmark = pytest.mark.django_db

PAGES = [
    "/accounts/login/",
    "/dashboard/",
    "/dashboard/payments/",
    "/admin/",
    "/admin/terminals/device/",
    "/admin/terminals/device/add/",
    "/api/docs/",
    "/api/docs/?script=",
    "/api/transactions/",
    "/no-such-page/",
]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_the_policy(path):
    client = Client()
    client.force_login(make_superuser())

    response = client.get(path)

    assert response.status_code < 500
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"


def test_the_api_docs_page_has_no_inline_script_or_style():
    make_staff("ada", "store-a")
    page = Client().get("/api/docs/").content.decode()

    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert "/static/api/swagger.css" in page


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\son[a-z]+\s*=|\sstyle\s*=|javascript:", re.I
)


def test_no_template_has_inline_script_style_or_handler():
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "templates").rglob("*.html")
        for match in INLINE.finditer(path.read_text())
    ]
    assert found == []


def test_the_phones_hour_bars_have_no_style_attribute():
    from posgateway.dashboard.charts import hourly_list

    listed = hourly_list([(3, 1, 1)] + [(0, 0, 0)] * 23, current_hour=0)

    assert "style=" not in listed
    assert 'class="seg-ok"' in listed
    assert 'class="seg-other"' in listed
