"""Headless Chromium for the dashboard's browser tests: Debian's package, driven by Playwright.

Browsers are never downloaded (``playwright install`` is not used): the project's ``make test``
installs Debian's ``chromium`` where it is missing. Every launch keeps Chromium off the network
(it phones home by itself even with --disable-background-networking): a dead proxy, and every
host name but 127.0.0.1 resolving to nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.services import ROOT, missing

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-sync",
    "--disable-component-update",
    "--disable-background-networking",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = ROOT / "docs" / "screenshots"


def chromium_or_skip() -> str:
    """The Chromium executable, or skip (fail under CI) naming what is missing."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing("Playwright for Python is not installed (pip install -e '.[dev]')")
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        missing("Chromium is not installed (make test installs Debian's chromium package)")
    return path


def screenshot_dir(tmp: Path) -> Path:
    """docs/screenshots with UPDATE_SCREENSHOTS=1 (make screenshots), else a scratch directory:
    the pictures are taken on every run, and committed only when asked for."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp


# Every page reports a Content-Security-Policy violation as an event; this script (run by the
# browser before any of the page's own, and exempt from the policy) writes it to the console,
# where Chromium writes its own "Refused to …" messages too.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.violatedDirective + " blocked " +
                (event.blockedURI || "inline") + " in " + event.documentURI);
});
"""


def is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation:") or "Content Security Policy" in text


async def watch_csp(browser, violations: list[str]) -> None:
    """Make every context of ``browser`` collect the CSP violations of its pages in
    ``violations`` (the browser tests fail on any: tests/dashboard/test_browser.py)."""
    new_context = browser.new_context

    async def watched_context(*args, **kwargs):
        context = await new_context(*args, **kwargs)
        await context.add_init_script(REPORT_CSP_VIOLATIONS)

        def on_console(message) -> None:
            if is_csp_violation(message.text):
                violations.append(f"{message.page.url if message.page else '?'}: {message.text}")

        context.on("console", on_console)
        return context

    browser.new_context = watched_context
