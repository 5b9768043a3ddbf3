"""Production settings: ``check --deploy`` passes with the environment docs/operations.md gives.

The environment is read from the documentation itself (the ``/etc/posgateway/env`` block), so
the page and the settings cannot drift apart. Each run is a fresh ``manage.py`` process with only
that environment: what an operator's shell would see.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import subprocess
import sys

from tests.services import ROOT

OPERATIONS = ROOT / "docs" / "operations.md"
ENV_BLOCK = re.compile(r"sudo tee /etc/posgateway/env >/dev/null <<EOF\n(.*?)\nEOF\n", re.DOTALL)
SECRET_KEY_COMMAND = "$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
# Everything of ours the settings module reads (and Django's own): none may leak in from the
# environment the test suite runs in.
OURS = re.compile(
    r"^(DEBUG|SECRET_KEY|ALLOWED_HOSTS|CSRF_|SECURE_|SESSION_|DATABASE_URL|REDIS_URL|DJANGO_)"
)


def documented_environment() -> dict[str, str]:
    """The production environment file of docs/operations.md, its SECRET_KEY generated."""
    blocks = ENV_BLOCK.findall(OPERATIONS.read_text())
    assert len(blocks) == 1, "docs/operations.md must have one /etc/posgateway/env block"
    env = dict(line.split("=", 1) for line in blocks[0].splitlines() if line.strip())
    assert env["SECRET_KEY"] == SECRET_KEY_COMMAND
    env["SECRET_KEY"] = secrets.token_urlsafe(50)  # what that command prints
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not OURS.match(k)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_passes_with_the_documented_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=documented_environment())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_without_it_and_names_each_missing_setting():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={})

    assert result.returncode != 0
    for warning in ("W004", "W008", "W009", "W012", "W016"):
        assert f"(security.{warning})" in result.stderr, result.stderr


SHOW = (
    "import json; from django.conf import settings as s; print('SETTINGS' + json.dumps({n: "
    "getattr(s, n, None) for n in ['DEBUG', 'SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', "
    "'CSRF_COOKIE_SECURE', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', "
    "'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER', 'CSRF_TRUSTED_ORIGINS']}))"
)


def settings_with(env: dict[str, str]) -> dict[str, object]:
    result = manage("shell", "-c", SHOW, env=env)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("SETTINGS"))
    return json.loads(line[8:])


def test_every_security_setting_is_off_by_default_and_set_from_the_environment():
    assert settings_with({}) == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": None,
        "CSRF_TRUSTED_ORIGINS": [],
    }
    assert settings_with({**documented_environment(), "SECURE_PROXY_SSL_HEADER": "1"}) == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "CSRF_TRUSTED_ORIGINS": ["https://pos.example.com"],
    }


def test_the_production_settings_answer_as_documented(client, settings):
    """HTTP is redirected to HTTPS except /healthz; HTTPS answers carry HSTS; the CSRF cookie
    is HTTPS-only."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.CSRF_COOKIE_SECURE = True

    redirected = client.get("/dashboard/")
    health = client.get("/healthz")
    secure = client.get("/accounts/login/", secure=True)

    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/dashboard/"
    assert health.status_code in (200, 503)  # answered over HTTP, whatever its state
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert secure.cookies["csrftoken"]["secure"] is True


SECURITY = ROOT / "docs" / "security.md"
SETTING_DEFAULT = re.compile(r'env_\w+\("([A-Z_]+)", ([^)]+)\)')


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def test_docs_security_gives_each_limit_its_real_default():
    """The limits table of docs/security.md names real settings with their real defaults."""
    source = (ROOT / "posgateway" / "settings.py").read_text()
    defaults = {name: _literal(value) for name, value in SETTING_DEFAULT.findall(source)}
    table = SECURITY.read_text().split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    checked = []
    for names_cell, default_cell in rows:
        names = re.findall(r"`([A-Z_]+)`", names_cell)
        documented = re.findall(r"`([^`]+)`", default_cell)
        assert len(names) == len(documented), names_cell
        for name, text in zip(names, documented, strict=True):
            assert name in defaults, f"{name} is not a setting"
            assert defaults[name] == _literal(text), (
                f"{name}: documented {text}, is {defaults[name]!r}"
            )
            checked.append(name)
    assert {"MAX_MESSAGE_BYTES", "WS_FRAMES_PER_S", "MAX_CONNECTIONS_PER_STORE"} <= set(checked)
