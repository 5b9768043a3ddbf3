"""Fail closed: with DEBUG off, a real server refuses to start on no SECRET_KEY or a public one.

Each case starts the real server process (daphne, or uvicorn under ``make test-uvicorn``) the way
docs/operations.md runs it, with only the environment an operator who forgot the key would have.
"""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from tests.e2e.harness import default_server, free_port, server_command
from tests.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.server_dependent]

PUBLIC_KEY = "django-insecure-development-key-set-SECRET_KEY-in-production"


def start(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        server_command(default_server(), free_port()),
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "posgateway.settings", **env},
        capture_output=True,
        text=True,
        timeout=30,  # a server that starts anyway would serve until killed: the test fails
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DEBUG": "0"}, "SECRET_KEY is not set"),
        ({}, "SECRET_KEY is not set"),  # DEBUG is off unless set
        ({"DEBUG": "0", "SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"DEBUG": "0", "SECRET_KEY": PUBLIC_KEY}, "SECRET_KEY is a public development key"),
        (
            {"DEBUG": "0", "SECRET_KEY": "django-insecure-" + secrets.token_urlsafe(40)},
            "SECRET_KEY is a public development key",
        ),
    ],
    ids=["debug-off", "debug-unset", "empty", "the-public-fallback", "django-insecure"],
)
def test_a_server_without_a_secret_key_of_its_own_stops_at_start_with_one_line(env, problem):
    result = start(**env)

    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [
        f"posgateway: refusing to start: {problem} and DEBUG is off; set SECRET_KEY to a long "
        "random value, the same on every process (docs/operations.md)"
    ]


def test_the_fallback_in_settings_is_the_key_the_check_knows():
    from django.conf import settings

    assert settings.DEVELOPMENT_SECRET_KEY == PUBLIC_KEY
