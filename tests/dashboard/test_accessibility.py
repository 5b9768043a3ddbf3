"""Every dashboard page checked by axe-core at 1280 px and 390 px, and used by keyboard alone.

axe-core is the npm package in tests/node (``make node-deps``), injected from node_modules into
each page with Playwright's ``add_script_tag(path=...)``: nothing comes from a CDN. A page passes
when axe reports no serious or critical violation (colour contrast, names of links, buttons and
fields, landmarks, headings, table headers...). Each visit also keeps a screenshot, at both
widths, under ``test-artifacts/screenshots/`` (git-ignored; CI keeps it as an artifact).

The keyboard tests type and press Tab, Enter, Space, arrow keys and Ctrl+A only: no click, no
``focus()``. Every element they stop on must show where the focus is, and a live refresh must
leave the focus where it was.

One daphne, one Chromium and one store for the module; its terminal stays connected throughout
(a refund needs one online), and the browser pages at each width are logged in once.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from posgateway.client.terminal_api import Operation, TerminalApiClient
from tests.dashboard.browser import CHROMIUM_ARGS, DESKTOP, PHONE, chromium_or_skip
from tests.dashboard.test_browser import (
    MAKE_STORES,
    PASSWORD,
    WAIT_MS,
    answer,
    devices,
    live,
    pay,
    row,
)
from tests.e2e.harness import PYTHON, deployment_for_this_run
from tests.services import ROOT, missing

# production_pass_only: what axe and the keyboard find does not depend on the database; once
# is enough (the PostgreSQL pass).
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.production_pass_only,
    pytest.mark.asyncio(loop_scope="module"),
]

AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = {"1280": DESKTOP, "390": PHONE}
# What a page must not have: axe's two highest impacts (moderate and minor are reported by
# axe's own tools but do not fail here).
BLOCKING = {"serious", "critical"}

SLUG = "a11y-shop"
MANAGER = "ada"


def axe_or_skip() -> Path:
    if not AXE.is_file():
        missing("the npm axe-core package is not installed (make node-deps)")
    return AXE


# --- The site: one daphne, one store with a busy day, its devices connected ---------------------


@dataclass
class Site:
    url: str
    ws_url: str
    desktop_key: str
    terminal_keys: dict[str, str]
    desk: Any = None
    term: Any = None


def make_store(deployment) -> dict[str, Any]:
    spec = [(SLUG, MANAGER, [("TERM-1", "Till 1"), ("TERM-2", "Terrace")])]
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", MAKE_STORES.replace("PASSWORD", repr(PASSWORD))],
        input=json.dumps(spec),
        cwd=ROOT,
        env=deployment.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])[SLUG]


async def late_success(site: Site, tid: str, amount: str) -> None:
    """The till cancels, the terminal says so, and then charges the card after all."""
    desk, term = site.desk, site.term
    await pay(desk, term, "TERM-1", tid, amount=amount)
    await desk.send({"action": "cancelPayment", "transactionId": tid})
    await term.recv_action("cancelPayment")
    await answer(term, tid, "CANCELLED")
    await desk.recv_action("paymentComplete", transactionId=tid)
    await answer(term, tid, "SUCCESS")
    late = await desk.recv_action("paymentComplete", transactionId=tid)
    await desk.send({"action": "ack", "seq": late["seq"]})


async def busy_day(site: Site) -> None:
    """Sales, a decline, two late successes (Needs attention), a refund, a Terminal API session,
    a display request, and a terminal gone offline."""
    desk, term = site.desk, site.term
    for tid, status, amount, order in (
        ("SALE-1", "SUCCESS", "23.90", "1041"),
        ("SALE-2", "DECLINED", "8.50", "1042"),
        ("SALE-3", "SUCCESS", "40.00", None),
        ("SALE-4", "SUCCESS", "12.00", "1044"),
    ):
        extra = {"metadata": {"orderId": order}} if order else {}
        await pay(desk, term, "TERM-1", tid, amount=amount, **extra)
        await answer(term, tid, status)
        complete = await desk.recv_action("paymentComplete", transactionId=tid)
        await desk.send({"action": "ack", "seq": complete["seq"]})
    await late_success(site, "LATE-1", "18.40")
    await late_success(site, "LATE-2", "9.10")

    api = TerminalApiClient(site.url, site.desktop_key, sale_id="POS-1")
    await asyncio.to_thread(
        api.begin_session,
        poi_id="TERM-1",
        session_id="table-12",
        operations=[Operation("Payment", 8000), Operation("DisplayRequest", 5000)],
    )
    await term.recv_action("sessionBegin")
    await desk.send(
        {
            "action": "display",
            "terminalId": "TERM-1",
            "displayRequest": {"lines": ["Thank you!"], "durationMs": 3000},
        }
    )
    await desk.recv_action("displayAccepted")
    shown = await term.recv_action("displayRequest")
    await term.send(
        {
            "action": "displayResponse",
            "displayResponse": {"requestId": shown["requestId"], "status": "SUCCESS"},
        }
    )
    # TERM-2 comes and goes: offline for longer than ATTENTION_OFFLINE_AFTER_S, it needs attention.
    async with devices((site.ws_url, site.terminal_keys["TERM-2"])):
        pass


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site():
    chromium_or_skip()
    axe_or_skip()
    with deployment_for_this_run(
        ATTENTION_OFFLINE_AFTER_S="1", HEARTBEAT_INTERVAL_S="600"
    ) as deployment:
        # The server starts while the store is made (each a Django start-up of its own).
        server, made = await asyncio.gather(
            asyncio.to_thread(deployment.server), asyncio.to_thread(make_store, deployment)
        )
        site = Site(server.url, server.ws_url, made["desktop"], made["terminals"])
        async with devices(
            (site.ws_url, site.desktop_key), (site.ws_url, site.terminal_keys["TERM-1"])
        ) as (site.desk, site.term):
            await busy_day(site)
            yield site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    from playwright.async_api import async_playwright

    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser, viewport):
    # bypass_csp: axe is injected as an inline script, which a Content-Security-Policy of the
    # site may (rightly) refuse; the site's own scripts are unaffected.
    context = await browser.new_context(viewport=viewport, bypass_csp=True)
    return await context.new_page()


async def log_in(page, site: Site, path: str = "/dashboard/") -> None:
    await page.goto(site.url + path)
    await page.fill("#id_username", MANAGER)
    await page.fill("#id_password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{path}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pages(site, browser) -> dict[str, Any]:
    """The manager, logged in once at each width."""
    made = {}
    for name, viewport in WIDTHS.items():
        made[name] = await new_page(browser, viewport)
        await log_in(made[name], site)
    return made


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# --- axe ----------------------------------------------------------------------------------------


async def blocking_violations(page) -> list[str]:
    """axe-core's serious and critical violations of the page as it is now, one line each."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(axe_or_skip()))
    violations = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    found = [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in violations
        if v["impact"] in BLOCKING
    ]
    # axe leaves a reference to a missing id as "needs review" (the element might be added
    # later); on these pages nothing is, so a help text or error never read out is a failure.
    dangling = await page.evaluate(
        """() => [...document.querySelectorAll('[aria-describedby], [aria-labelledby]')]
            .flatMap(el => ['aria-describedby', 'aria-labelledby'].flatMap(attr =>
                (el.getAttribute(attr) || '').split(/\\s+/).filter(Boolean)
                    .filter(id => !document.getElementById(id))
                    .map(id => `#${el.id || el.tagName.toLowerCase()} ${attr}="${id}"`)))"""
    )
    return found + [f"serious: {ref} names no element" for ref in dangling]


async def check(page, shots: Path, name: str, width: str) -> list[str]:
    """axe on the page, and its screenshot kept; the violations, prefixed with where."""
    await page.screenshot(path=shots / f"{name}-{width}.png", full_page=True)
    return [f"{name} at {width} px: {line}" for line in await blocking_violations(page)]


async def visit(page, url: str) -> None:
    await page.goto(url)
    if await page.locator("#live").count():
        await live(page)


# Each page (its name in the screenshots, the path, and what must be on it so that the check
# looks at the page as a manager sees it on that day).
PAGES = [
    ("terminals", "/dashboard/", '.attention-item[data-transaction-id="LATE-1"]'),
    ("attention", "/dashboard/attention/", '.attention-item[data-case="terminal_offline"]'),
    (
        "resolve",
        f"/dashboard/attention/resolve/late_success/LATE-1/?store={SLUG}",
        "#id_note",
    ),
    ("payments", "/dashboard/payments/", 'tr[data-transaction-id="SALE-2"]'),
    (
        "payments-filtered",
        "/dashboard/payments/?status=SUCCESS&search=SALE",
        "#filter-totals",
    ),
    ("payment", f"/dashboard/payments/SALE-1/?store={SLUG}", '#timeline li[data-kind="result"]'),
    ("refund", f"/dashboard/refunds/new/SALE-3/?store={SLUG}", "#id_amount"),
    ("reports", "/dashboard/reports/", f'#totals-{SLUG} tr[data-currency="EUR"]'),
    ("sessions", "/dashboard/sessions/", 'tr[data-session-id="table-12"]'),
    ("devices", "/dashboard/devices/", 'tr[data-device-id="TERM-2"]'),
]


async def at_both_widths(each, *pages) -> None:
    """``each(page, width)`` on the two widths side by side; fails listing every violation."""
    found = await asyncio.gather(*(each(page, width) for width, page in pages))
    lines = [line for lines in found for line in lines]
    assert not lines, "\n".join(lines)


@pytest.mark.parametrize(("name", "path", "shown"), PAGES, ids=[p[0] for p in PAGES])
async def test_a_page_passes_axe_at_both_widths(site, pages, shots, name, path, shown):
    async def each(page, width):
        await visit(page, site.url + path)
        await page.locator(shown).first.wait_for(timeout=WAIT_MS)
        return await check(page, shots, name, width)

    await at_both_widths(each, *pages.items())


async def test_the_login_page_and_its_error_pass_axe_at_both_widths(site, browser, shots):
    async def each(page, width):
        await page.goto(site.url + "/dashboard/")
        found = await check(page, shots, "login", width)
        await page.fill("#id_username", MANAGER)
        await page.fill("#id_password", "not the password")
        await page.click("button[type=submit]")
        await page.locator(".errors").wait_for(timeout=WAIT_MS)
        found += await check(page, shots, "login-error", width)
        await page.context.close()
        return found

    await at_both_widths(
        each, *[(width, await new_page(browser, viewport)) for width, viewport in WIDTHS.items()]
    )


async def test_the_refund_confirmation_and_a_refused_form_pass_axe_at_both_widths(
    site, pages, shots
):
    async def each(page, width):
        await visit(page, f"{site.url}/dashboard/refunds/new/SALE-3/?store={SLUG}")
        await page.fill("#id_amount", "1000")
        await page.click("button[name=review]")
        await page.locator(".field-error").first.wait_for(timeout=WAIT_MS)
        found = await check(page, shots, "refund-error", width)
        await page.fill("#id_amount", "5")
        await page.click("button[name=review]")
        await page.locator("#confirm-question").wait_for(timeout=WAIT_MS)
        return found + await check(page, shots, "refund-confirm", width)

    await at_both_widths(each, *pages.items())


# --- Keyboard only ------------------------------------------------------------------------------


async def tab_to(page, selector: str, *, limit: int = 60) -> None:
    """Press Tab until ``selector`` has the focus (as a keyboard user would: in page order);
    every stop on the way must show its focus."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        here = await page.evaluate(
            """(selector) => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {
                    what: el.outerHTML.slice(0, 120),
                    shown: el === document.body
                        || (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0),
                    there: el.matches(selector),
                };
            }""",
            selector,
        )
        assert here["shown"], f"no visible focus on {here['what']}"
        if here["there"]:
            return
    raise AssertionError(f"{selector} not reached in {limit} presses of Tab")


async def test_logging_in_by_keyboard(site, browser):
    page = await new_page(browser, PHONE)
    await page.goto(site.url + "/dashboard/payments/")
    # The username field has the focus from the start.
    assert await page.evaluate("document.activeElement.id") == "id_username"
    await page.keyboard.type(MANAGER)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await tab_to(page, "button[type=submit]")
    await page.keyboard.press("Space")
    await page.wait_for_url("**/dashboard/payments/")
    assert await page.locator("h1").inner_text() == "Payments"
    await page.context.close()


async def test_filtering_payments_by_keyboard(site, pages):
    page = pages["1280"]
    await visit(page, site.url + "/dashboard/payments/")
    # The first Tab offers to skip the top bar's links; Enter there, and the next Tab is in the
    # page itself.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip-link"
    assert await page.locator(".skip-link").is_visible()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "export"
    await tab_to(page, "select[name=status]")
    for _ in range(20):
        if await page.evaluate("document.activeElement.value") == "DECLINED":
            break
        await page.keyboard.press("ArrowDown")
    assert await page.evaluate("document.activeElement.value") == "DECLINED"
    await tab_to(page, "form.filters button[type=submit]")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r".*[?&]status=DECLINED(&|$)"))
    statuses = await page.locator("#payments tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses == ["DECLINED"]
    assert await page.locator("#payments-count").inner_text() == "1"
    # And back to every payment with the Clear link.
    await tab_to(page, "form.filters a.button")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/payments/")
    assert await page.locator("#payments tbody tr").count() > 1


async def test_refunding_by_keyboard_to_the_terminals_result(site, pages):
    page = pages["390"]
    await visit(page, f"{site.url}/dashboard/payments/SALE-4/?store={SLUG}")
    await tab_to(page, "#refund-button")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/refunds/new/SALE-4/**")
    await tab_to(page, "#id_amount")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("2.50")
    await tab_to(page, "#id_reason")
    await page.keyboard.type("wrong size")
    await tab_to(page, "button[name=review]")
    await page.keyboard.press("Enter")
    question = page.locator("#confirm-question")
    await question.wait_for(timeout=WAIT_MS)
    assert (await question.inner_text()).startswith("Refund 2.50 EUR to the customer's card")
    await tab_to(page, "button[name=confirm]")
    await page.keyboard.press("Space")
    await page.wait_for_url(re.compile(r".*/dashboard/payments/RF-[^/]+/\?store=" + SLUG + "$"))
    await live(page)

    forwarded = await site.term.recv_action("refundRequest")
    refund = forwarded["refundRequest"]
    assert (refund["originalTransactionId"], refund["amount"]) == ("SALE-4", "2.50")
    await site.term.send(
        {
            "action": "refundResponse",
            "refundResponse": {
                "transactionId": refund["transactionId"],
                "status": "SUCCESS",
                "authorizationCode": "R1",
            },
        }
    )
    await page.locator('.big-status [data-status="SUCCESS"]').wait_for(timeout=WAIT_MS)


async def test_resolving_by_keyboard(site, pages):
    page = pages["390"]
    item = '.attention-item[data-transaction-id="LATE-2"]'
    await visit(page, site.url + "/dashboard/")
    await tab_to(page, f"{item} [data-resolve]")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/attention/resolve/late_success/LATE-2/**")
    await tab_to(page, "#id_note")
    await page.keyboard.type("Checked the receipt roll: paid once.")
    await tab_to(page, ".resolve-form button[type=submit]")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/attention/")
    assert "Resolved: LATE-2." in await page.locator(".messages").inner_text()
    assert await page.locator(item).count() == 0
    note = page.locator('#resolved li[data-transaction-id="LATE-2"] .note')
    assert await note.inner_text() == "Checked the receipt roll: paid once."


async def test_a_live_update_leaves_the_keyboard_where_it_was(site, pages):
    """A payment of the store refreshes the list under a keyboard user: the focus stays on the
    link it was on instead of going back to the top of the page."""
    page = pages["1280"]
    await visit(page, site.url + "/dashboard/payments/")
    link = 'tr[data-transaction-id="SALE-1"] a'
    await tab_to(page, link)
    refreshes = await page.evaluate("window.posgwDashboard.refreshes")
    await pay(site.desk, site.term, "TERM-1", "SALE-5", amount="3.00")
    await row(page, "transaction-id", "SALE-5").wait_for(timeout=WAIT_MS)
    assert await page.evaluate("window.posgwDashboard.refreshes") > refreshes
    assert await page.evaluate("(s) => document.activeElement.matches(s)", link)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/dashboard/payments/SALE-1/**")
