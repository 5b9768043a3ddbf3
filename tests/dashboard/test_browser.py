"""The dashboard in a real browser against a real daphne: login, live updates, store scope.

Headless Chromium (Debian's package) driven by Playwright; devices are real WebSocket clients
(tests/e2e/ws.py), stores and staff are made with ``manage.py create_device`` and
``create_staff``. Each test makes its own store, so tests never see each other's devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from posgateway.client.terminal_api import Operation, TerminalApiClient
from tests.dashboard.browser import (
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    chromium_or_skip,
    screenshot_dir,
    watch_csp,
)
from tests.e2e.harness import PYTHON, Deployment, Server, deployment_for_this_run
from tests.e2e.ws import Client
from tests.services import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PASSWORD = "dashboard-test-pw"
WAIT_MS = 10_000


# --- The site: one deployment and daphne for the module -----------------------------------------


# Made with the real commands (create_device, create_staff), all in one Django process: each
# separate ``manage.py`` costs a second or two of start-up.
MAKE_STORES = """
import io, json, sys
from django.core.management import call_command

def last_line(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]

made = {}
for slug, user, terminals in json.loads(sys.stdin.read()):
    desktop = last_line("create_device", "--group", slug, "--type", "desktop",
                        "--device-id", "POS-1", "--label", "Front counter")
    keys = {device_id: last_line("create_device", "--group", slug, "--type", "terminal",
                                 "--device-id", device_id, "--label", label)
            for device_id, label in terminals}
    last_line("create_staff", user, "--group", slug, "--password", PASSWORD)
    made[slug] = {"username": user, "desktop": desktop, "terminals": keys}
from django.contrib.auth import get_user_model
get_user_model().objects.create_superuser("root", password=PASSWORD)
print(json.dumps(made))
"""

STORES = {
    "shop-login": ("lena", [("TERM-1", "Till 1")]),
    "shop-online": ("omar", [("TERM-7", "Till 7")]),
    "shop-pay": ("paula", [("TERM-1", "Till 1")]),
    "shop-mine": ("mina", [("TERM-MINE", "Mine")]),
    "shop-theirs": ("theo", [("TERM-THEIRS", "Theirs")]),
    "shop-recover": ("rita", [("TERM-1", "Till 1")]),
    "shop-stale": ("sami", [("TERM-1", "Till 1")]),
    "shop-refund": ("rosa", [("TERM-1", "Till 1")]),
    "shop-late": ("leo", [("TERM-1", "Till 1")]),
    "shop-report": ("rhea", [("TERM-1", "Till 1"), ("TERM-2", "Till 2")]),
    "downtown": (
        "maria",
        [("TERM-1", "Counter 1"), ("TERM-2", "Counter 2"), ("TERM-3", "Terrace")],
    ),
}


@dataclass
class Store:
    slug: str
    username: str
    desktop_key: str
    terminal_keys: dict[str, str]


@dataclass
class Site:
    deployment: Deployment
    server: Server
    stores: dict[str, Store]

    @property
    def url(self) -> str:
        return self.server.url


def make_stores(deployment: Deployment) -> dict[str, Store]:
    spec = [(slug, user, terminals) for slug, (user, terminals) in STORES.items()]
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
    made = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        slug: Store(slug, m["username"], m["desktop"], m["terminals"]) for slug, m in made.items()
    }


@pytest.fixture(scope="module")
def site():
    chromium_or_skip()
    with deployment_for_this_run() as deployment:
        yield Site(deployment, deployment.server(), make_stores(deployment))


@pytest.fixture
async def browser():
    """Chromium, its pages under the site's Content-Security-Policy: a test fails on any
    violation (an inline script or style, a third-party origin) seen on any of its pages."""
    from playwright.async_api import async_playwright

    executable = chromium_or_skip()
    violations: list[str] = []
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        await watch_csp(launched, violations)
        try:
            yield launched
        finally:
            await launched.close()
    assert violations == [], "Content-Security-Policy violations"


@pytest.fixture
def shots(tmp_path) -> Path:
    return screenshot_dir(tmp_path)


async def logged_in(browser, site: Site, username: str, viewport=DESKTOP, path="/dashboard/"):
    """A fresh browser context (its own cookies) logged in as ``username`` on ``path``."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(site.url + path)
    await page.fill("#id_username", username)
    await page.fill("#id_password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{path}")
    await live(page)
    return page


async def live(page) -> None:
    """Wait until the page's socket is joined (it refreshes what it shows at that moment)."""
    await page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)


@contextlib.asynccontextmanager
async def devices(*clients_args: tuple[str, str]) -> AsyncIterator[list[Client]]:
    """Connected device sockets (url, key), closed normally at the end."""
    clients = []
    try:
        for url, key in clients_args:
            client = await Client.connect(url, key)
            hello = await client.recv()
            assert hello["action"] == "connected", hello
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)


def fetch_head(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"]


def row(page, attribute: str, value: str, status: str | None = None):
    selector = f'tr[data-{attribute}="{value}"]'
    if status:
        selector += f'[data-status="{status}"]'
    return page.locator(selector)


async def pay(desk: Client, term: Client, terminal_id: str, tid: str, **request) -> None:
    await desk.send(
        {
            "action": "payment",
            "terminalId": terminal_id,
            "paymentRequest": {
                "transactionId": tid,
                "amount": request.pop("amount", "12.50"),
                "currency": request.pop("currency", "EUR"),
                **request,
            },
        }
    )
    await desk.recv_action("paymentAccepted", transactionId=tid)
    forwarded = await term.recv_action("paymentRequest")
    assert forwarded["paymentRequest"]["transactionId"] == tid


async def answer(term: Client, tid: str, status: str = "SUCCESS") -> None:
    await term.send(
        {
            "action": "paymentResponse",
            "paymentResponse": {
                "transactionId": tid,
                "status": status,
                "authorizationCode": "A1B2C3" if status == "SUCCESS" else None,
                "errorMessage": None if status == "SUCCESS" else "Card declined by issuer",
            },
        }
    )


# --- Tests -------------------------------------------------------------------------------------


async def test_login_returns_to_the_page_asked_for(site, browser, shots):
    store = site.stores["shop-login"]
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await page.goto(site.url + "/dashboard/payments/")
    assert "/accounts/login/?next=/dashboard/payments/" in page.url
    await page.fill("#id_username", store.username)
    await page.fill("#id_password", PASSWORD)
    await page.screenshot(path=shots / "login.png")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/dashboard/payments/")
    assert await page.locator("h1").inner_text() == "Payments"
    # The stylesheet came from whitenoise under daphne.
    colour = await page.evaluate(
        "getComputedStyle(document.querySelector('.topbar')).backgroundColor"
    )
    assert colour == "rgb(23, 32, 51)"
    status, content_type = await asyncio.to_thread(
        fetch_head, site.url + "/static/dashboard/dashboard.js"
    )
    assert status == 200
    assert "javascript" in content_type


async def test_a_terminal_turns_online_and_offline_without_a_reload(site, browser):
    store = site.stores["shop-online"]
    page = await logged_in(browser, site, store.username)
    await row(page, "device-id", "TERM-7", "offline").wait_for(timeout=WAIT_MS)
    await page.evaluate("window.__samePage = true")

    async with devices((site.server.ws_url, store.terminal_keys["TERM-7"])):
        online = row(page, "device-id", "TERM-7", "online")
        await online.wait_for(timeout=WAIT_MS)
        assert await online.locator(".status").inner_text() == "online"
    await row(page, "device-id", "TERM-7", "offline").wait_for(timeout=WAIT_MS)
    assert await page.evaluate("window.__samePage") is True


async def test_a_payment_appears_and_turns_success_live(site, browser, shots):
    store = site.stores["shop-pay"]
    page = await logged_in(browser, site, store.username, path="/dashboard/payments/")
    await page.evaluate("window.__samePage = true")
    ws = site.server.ws_url
    async with devices((ws, store.desktop_key), (ws, store.terminal_keys["TERM-1"])) as (
        desk,
        term,
    ):
        await pay(desk, term, "TERM-1", "WEB-1", metadata={"orderId": "ORDER-42"})
        await row(page, "transaction-id", "WEB-1", "IN_PROGRESS").wait_for(timeout=WAIT_MS)
        await answer(term, "WEB-1")
        done = row(page, "transaction-id", "WEB-1", "SUCCESS")
        await done.wait_for(timeout=WAIT_MS)
        assert "12.50 EUR" in await done.inner_text()
        assert "ORDER-42" in await done.inner_text()
        assert await page.evaluate("window.__samePage") is True

        # Its detail page follows it to the desktop's acknowledgement, live.
        await done.locator("a").click()
        await page.wait_for_url("**/dashboard/payments/WEB-1/**")
        await live(page)
        kinds = page.locator("#timeline li")
        await page.locator('#timeline li[data-kind="result"]').wait_for(timeout=WAIT_MS)
        complete = await desk.recv_action("paymentComplete", transactionId="WEB-1")
        await desk.send({"action": "ack", "seq": complete["seq"]})
        await page.locator('#timeline li[data-kind="delivered"]').wait_for(timeout=WAIT_MS)
        assert [await li.get_attribute("data-kind") for li in await kinds.all()] == [
            "requested",
            "forwarded",
            "result",
            "delivered",
        ]


async def test_a_member_of_another_store_sees_none_of_it(site, browser):
    mine, theirs = site.stores["shop-mine"], site.stores["shop-theirs"]
    other = await logged_in(browser, site, theirs.username)
    other_payments = await (await browser.new_context()).new_page()
    await other_payments.context.add_cookies(await other.context.cookies())
    await other_payments.goto(site.url + "/dashboard/payments/")
    await live(other_payments)
    owner = await logged_in(browser, site, mine.username, path="/dashboard/payments/")

    ws = site.server.ws_url
    async with devices((ws, mine.desktop_key), (ws, mine.terminal_keys["TERM-MINE"])) as (
        desk,
        term,
    ):
        await pay(desk, term, "TERM-MINE", "SECRET-1")
        await answer(term, "SECRET-1")
        await row(owner, "transaction-id", "SECRET-1", "SUCCESS").wait_for(timeout=WAIT_MS)

    # Nothing of it reached the other store's sockets, and nothing of it is on their pages.
    for page in (other, other_payments):
        assert await page.evaluate("window.posgwDashboard.events") == 0
    await other.reload()
    await other_payments.reload()
    assert await row(other, "device-id", "TERM-THEIRS").count() == 1
    assert await row(other, "device-id", "TERM-MINE").count() == 0
    assert "TERM-MINE" not in await other.content()
    assert await row(other_payments, "transaction-id", "SECRET-1").count() == 0
    response = await other.goto(site.url + "/dashboard/payments/SECRET-1/")
    assert response.status == 404
    response = await other.goto(site.url + f"/dashboard/payments/SECRET-1/?store={mine.slug}")
    assert response.status == 404


async def test_a_manager_refunds_part_of_a_sale_and_sees_the_result_land_live(site, browser):
    store = site.stores["shop-refund"]
    ws = site.server.ws_url
    async with devices((ws, store.desktop_key), (ws, store.terminal_keys["TERM-1"])) as (
        desk,
        term,
    ):
        await pay(desk, term, "TERM-1", "SALE-1", amount="20.00")
        await answer(term, "SALE-1")
        complete = await desk.recv_action("paymentComplete", transactionId="SALE-1")
        await desk.send({"action": "ack", "seq": complete["seq"]})

        sale_url = f"{site.url}/dashboard/payments/SALE-1/?store={store.slug}"
        watcher = await logged_in(browser, site, store.username)  # the sale, in another tab
        await watcher.goto(sale_url)
        await live(watcher)
        await watcher.evaluate("window.__samePage = true")
        page = await watcher.context.new_page()
        await page.goto(sale_url)
        assert await page.locator("[data-refundable]").inner_text() == "20.00 EUR"

        await page.click("#refund-button")
        assert await page.input_value("#id_amount") == "20.00"  # the remainder by default
        await page.fill("#id_amount", "7.5")
        await page.fill("#id_reason", "one glass broken")
        await page.click("button[name=review]")
        question = await page.locator("#confirm-question").inner_text()
        assert question == "Refund 7.50 EUR to the customer's card on TERM-1 (Till 1)?"
        await page.click("button[name=confirm]")

        await page.wait_for_url(re.compile(r".*/dashboard/payments/RF-[^/]+/\?store=shop-refund$"))
        await live(page)
        await page.evaluate("window.__samePage = true")
        assert await page.locator(".big-status .status").inner_text() == "IN_PROGRESS"
        forwarded = await term.recv_action("refundRequest")
        refund = forwarded["refundRequest"]
        assert (refund["originalTransactionId"], refund["amount"]) == ("SALE-1", "7.50")
        assert refund["reason"] == "one glass broken"
        # The sale's page lists the refund in flight, without a reload.
        in_flight = row(watcher, "transaction-id", refund["transactionId"], "IN_PROGRESS")
        await in_flight.wait_for(timeout=WAIT_MS)

        await term.send(
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
        assert await page.evaluate("window.__samePage") is True
        done = row(watcher, "transaction-id", refund["transactionId"], "SUCCESS")
        await done.wait_for(timeout=WAIT_MS)
        assert await watcher.locator("[data-refunded]").inner_text() == "7.50 EUR"
        assert await watcher.locator("[data-refundable]").inner_text() == "12.50 EUR"
        assert await watcher.evaluate("window.__samePage") is True


# A terminal's pings move its last activity without publishing anything (the hot path stays
# cheap): connections_touch, as the gateway's sweeper calls it, run in the deployment.
TOUCH = """
import datetime as dt
from terminals.models import Connection
from terminals.services import connections_touch
from posgateway.dashboard.templatetags.dashboard import iso
slug, seconds = ARGS
conn = Connection.objects.get(device__group__slug=slug, device__device_id="TERM-1",
                              closed_at__isnull=True)
at = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).replace(microsecond=0)
assert not connections_touch(connection_pks=[conn.pk], at=at)
print(iso(at))
"""


def touch(site: Site, slug: str, seconds: int) -> str:
    """Set TERM-1's last activity to ``seconds`` ago, quietly; returns it as the page shows it."""
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", TOUCH.replace("ARGS", repr((slug, seconds)))],
        cwd=ROOT,
        env=site.deployment.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1]


async def test_changes_without_an_event_appear_while_live(site, browser):
    """Last activity moves with a terminal's pings, which publish nothing: the live page fetches
    its region again on a timer (shortened here) and when the tab becomes visible."""
    store = site.stores["shop-stale"]
    page = await logged_in(browser, site, store.username)
    async with devices((site.server.ws_url, store.terminal_keys["TERM-1"])):
        await row(page, "device-id", "TERM-1", "online").wait_for(timeout=WAIT_MS)
        await page.evaluate("window.__samePage = true")
        events = await page.evaluate("window.posgwDashboard.events")

        # On the timer.
        await page.evaluate("window.posgwDashboard.refreshEveryMs = 1000")
        at = await asyncio.to_thread(touch, site, store.slug, 30)
        activity = row(page, "device-id", "TERM-1").locator(f'time[datetime="{at}"]')
        await activity.wait_for(timeout=WAIT_MS)
        assert re.fullmatch(r"\d+ s ago", await activity.inner_text())

        # On coming back into view (the timer set far away again).
        await page.evaluate("window.posgwDashboard.refreshEveryMs = 3600 * 1000")
        at = await asyncio.to_thread(touch, site, store.slug, 20)
        await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        activity = row(page, "device-id", "TERM-1").locator(f'time[datetime="{at}"]')
        await activity.wait_for(timeout=WAIT_MS)
        assert re.fullmatch(r"\d+ s ago", await activity.inner_text())

        assert await page.evaluate("window.posgwDashboard.events") == events
        assert await page.evaluate("window.__samePage") is True


async def test_the_page_shows_when_it_is_not_live_and_recovers_by_itself(site, browser):
    store = site.stores["shop-recover"]
    server = await asyncio.to_thread(site.deployment.server)
    try:
        page = await logged_in(browser, site, store.username)
        await page.goto(server.url + "/dashboard/")  # the same session, on its own server
        await live(page)
        await asyncio.to_thread(server.kill)
        indicator = page.locator('#live[data-state="offline"]')
        await indicator.wait_for(timeout=WAIT_MS)
        assert "not live" in await indicator.inner_text()
        # Back on the same port: the page reconnects and refreshes by itself.
        site.deployment.servers.remove(server)
        server = Server(site.deployment, port=server.port)
        await asyncio.to_thread(server.start, 60)
        site.deployment.servers.append(server)
        await page.wait_for_selector('#live[data-state="live"]', timeout=30_000)
        assert await page.evaluate("window.posgwDashboard.connects") >= 2
    finally:
        await asyncio.to_thread(server.stop)


async def test_screenshots_of_every_page(site, browser, shots):
    """A busy store as the README shows it, at desktop and phone widths."""
    store = site.stores["downtown"]
    ws = site.server.ws_url
    keys = store.terminal_keys
    async with devices((ws, store.desktop_key), (ws, keys["TERM-1"]), (ws, keys["TERM-2"])) as (
        desk,
        term1,
        term2,
    ):
        api = TerminalApiClient(site.url, store.desktop_key, sale_id="POS-1")
        await asyncio.to_thread(
            api.begin_session,
            poi_id="TERM-1",
            session_id="table-12",
            operations=[Operation("Payment", 8000), Operation("DisplayRequest", 5000)],
        )
        await term1.recv_action("sessionBegin")
        outcomes = [
            ("1041", "SUCCESS", "23.90", term1, "TERM-1"),
            ("1042", "DECLINED", "8.50", term1, "TERM-1"),
            ("1043", "SUCCESS", "112.00", term2, "TERM-2"),
            ("1044", "SUCCESS", "4.20", term1, "TERM-1"),
            ("1045", "CANCELLED", "15.00", term2, "TERM-2"),
        ]
        for order, status, amount, term, tid in outcomes:
            await pay(desk, term, tid, f"TX-{order}", amount=amount, metadata={"orderId": order})
            await answer(term, f"TX-{order}", status)
            complete = await desk.recv_action("paymentComplete", transactionId=f"TX-{order}")
            await desk.send({"action": "ack", "seq": complete["seq"]})
        await desk.send(
            {
                "action": "display",
                "terminalId": "TERM-1",
                "displayRequest": {"lines": ["Thank you!", "See you soon"], "durationMs": 3000},
            }
        )
        await desk.recv_action("displayAccepted")
        shown = await term1.recv_action("displayRequest")
        await term1.send(
            {
                "action": "displayResponse",
                "displayResponse": {"requestId": shown["requestId"], "status": "SUCCESS"},
            }
        )
        await pay(desk, term2, "TERM-2", "TX-1046", amount="61.75", metadata={"orderId": "1046"})

        page = await logged_in(browser, site, store.username)
        await row(page, "device-id", "TERM-2", "online").wait_for(timeout=WAIT_MS)
        await page.screenshot(path=shots / "terminals.png", full_page=True)
        await page.goto(site.url + "/dashboard/payments/")
        await live(page)
        await page.screenshot(path=shots / "payments.png", full_page=True)
        await page.goto(site.url + f"/dashboard/payments/TX-1041/?store={store.slug}")
        await live(page)
        await page.screenshot(path=shots / "payment-detail.png", full_page=True)
        await page.goto(site.url + "/dashboard/sessions/")
        await live(page)
        await row(page, "session-id", "table-12").wait_for(timeout=WAIT_MS)
        await page.screenshot(path=shots / "sessions.png", full_page=True)

        await page.goto(site.url + "/dashboard/devices/")
        await live(page)
        await page.select_option("#id_device_type", "terminal")
        await page.fill("#id_device_id", "TERM-4")
        await page.fill("#id_label", "Drive-through")
        await page.click(".register button[type=submit]")
        key = (await page.locator("#api-key").inner_text()).strip()
        assert len(key) >= 43
        assert page.url.endswith("/dashboard/devices/")  # a reload lists, it does not re-post
        await row(page, "device-id", "TERM-4").wait_for(timeout=WAIT_MS)
        await page.screenshot(path=shots / "devices.png", full_page=True)
        # The new key works, and is never shown again.
        async with devices((ws, key)) as (new_terminal,):
            await row(page, "device-id", "TERM-4", "online").wait_for(timeout=WAIT_MS)
            assert new_terminal is not None
        await page.reload()
        assert key not in await page.content()

        phone = await logged_in(browser, site, store.username, viewport=PHONE)
        await phone.screenshot(path=shots / "terminals-phone.png", full_page=True)
        await phone.goto(site.url + "/dashboard/payments/")
        await live(phone)
        await phone.screenshot(path=shots / "payments-phone.png", full_page=True)
        # At phone width nothing runs off the side of the page.
        width = await phone.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width

        await term2.send(json.dumps({"action": "ping"}))


# --- The store manager's day ----------------------------------------------------------------------


async def no_sideways_scroll(page, viewport) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], width


async def test_a_late_success_needs_attention_live_and_a_manager_resolves_it_by_keyboard(
    site, browser, shots
):
    store = site.stores["shop-late"]
    ws = site.server.ws_url
    phone = await logged_in(browser, site, store.username, viewport=PHONE)
    desktop = await logged_in(browser, site, store.username, path="/dashboard/attention/")
    assert await phone.locator("#attention-none").is_visible()
    async with devices((ws, store.desktop_key), (ws, store.terminal_keys["TERM-1"])) as (
        desk,
        term,
    ):
        await pay(desk, term, "TERM-1", "LATE-1", amount="18.40")
        # The till cancels, the terminal says so, and then charges the card after all.
        await desk.send({"action": "cancelPayment", "transactionId": "LATE-1"})
        await term.recv_action("cancelPayment")
        await answer(term, "LATE-1", "CANCELLED")
        await desk.recv_action("paymentComplete", transactionId="LATE-1")
        await answer(term, "LATE-1", "SUCCESS")

        # Both pages show it without a reload: on the phone's home page and on its own page.
        item = '.attention-item[data-transaction-id="LATE-1"]'
        for page in (phone, desktop):
            await page.locator(item).wait_for(timeout=WAIT_MS)
        what = await phone.locator(f"{item} .attention-what").inner_text()
        assert "charged the card 18.40 EUR after the till was told the payment was cancelled" in (
            what
        )
        await no_sideways_scroll(phone, PHONE)
        await phone.screenshot(path=shots / "attention-phone.png", full_page=True)
        await desktop.screenshot(path=shots / "attention.png", full_page=True)

        # Keyboard only, on the phone: to the item's Resolve link, a note, Enter on the button.
        link = phone.locator(f"{item} [data-resolve]")
        await link.focus()
        await phone.keyboard.press("Enter")
        await phone.wait_for_url("**/dashboard/attention/resolve/late_success/LATE-1/**")
        await phone.keyboard.press("Tab")
        while not await phone.evaluate("document.activeElement.id === 'id_note'"):
            await phone.keyboard.press("Tab")
        await phone.keyboard.type("Asked the cashier: the customer paid once.")
        await phone.keyboard.press("Tab")
        await phone.keyboard.press("Enter")
        await phone.wait_for_url("**/dashboard/attention/")
        assert "Resolved: LATE-1." in await phone.locator(".messages").inner_text()
        # It leaves the other open page live, and the note is kept on the payment's timeline.
        await desktop.locator(item).wait_for(state="detached", timeout=WAIT_MS)
        note = desktop.locator('#resolved li[data-transaction-id="LATE-1"] .note')
        await note.wait_for(timeout=WAIT_MS)
        assert await note.inner_text() == "Asked the cashier: the customer paid once."
        await desktop.goto(f"{site.url}/dashboard/payments/LATE-1/?store={store.slug}")
        resolved = desktop.locator('#timeline li[data-kind="resolved"]')
        assert "by leo" in await resolved.inner_text()


async def test_the_end_of_day_report_on_a_desktop_and_a_phone_matches_the_export(
    site, browser, shots
):
    store = site.stores["shop-report"]
    ws = site.server.ws_url
    keys = store.terminal_keys
    async with devices((ws, store.desktop_key), (ws, keys["TERM-1"]), (ws, keys["TERM-2"])) as (
        desk,
        term1,
        term2,
    ):
        for tid, term, terminal_id, status, amount in (
            ("R-1", term1, "TERM-1", "SUCCESS", "12.00"),
            ("R-2", term2, "TERM-2", "SUCCESS", "30.50"),
            ("R-3", term2, "TERM-2", "DECLINED", "9.99"),
        ):
            await pay(desk, term, terminal_id, tid, amount=amount)
            await answer(term, tid, status)
            await desk.recv_action("paymentComplete", transactionId=tid)

    for viewport, name in ((DESKTOP, "reports.png"), (PHONE, "reports-phone.png")):
        page = await logged_in(browser, site, store.username, viewport=viewport)
        await page.goto(site.url + "/dashboard/reports/")
        totals = page.locator(f'#totals-{store.slug} tr[data-currency="EUR"]')
        assert await totals.locator('[data-field="succeededAmount"]').inner_text() == "42.50"
        assert await totals.locator('[data-field="declinedCount"]').inner_text() == "1"
        term2_row = page.locator(f'#terminals-{store.slug} tr[data-terminal="TERM-2"]')
        assert await term2_row.locator('[data-field="succeededAmount"]').inner_text() == "30.50"
        await no_sideways_scroll(page, viewport)
        await page.screenshot(path=shots / name, full_page=True)

    # The CSV it offers is the REST daily export of the day, byte for byte.
    day = await page.locator("#id_date").input_value()
    async with page.expect_download() as download_info:
        await page.click("#report-csv")
    download = await download_info.value
    mine = await asyncio.to_thread(Path(await download.path()).read_bytes)
    rest = await page.evaluate(
        """async (url) => (await (await fetch(url, {credentials: "same-origin"})).text())""",
        f"{site.url}/api/reports/daily/export/?date_from={day}&date_to={day}",
    )
    assert mine.decode() == rest
    assert f"{day},{store.slug},EUR,3,2,42.50," in rest

    # Printed: no navigation, no form, the figures.
    await page.emulate_media(media="print")
    assert not await page.locator(".topbar").is_visible()
    assert not await page.locator("form.filters").is_visible()
    assert await totals.is_visible()


async def test_phone_width_fixes_on_the_home_payments_and_sessions_pages(site, browser):
    store = site.stores["shop-report"]
    page = await logged_in(browser, site, store.username, viewport=PHONE)
    # The chart is a readable list of hours on a phone, the wide bars are hidden.
    assert not await page.locator(".chart-wide svg").is_visible()
    assert await page.locator(".chart-narrow").is_visible()
    await page.goto(site.url + "/dashboard/payments/")
    await live(page)
    # The search's placeholder fits its box.
    fits = await page.evaluate(
        """() => {
            const input = document.querySelector('input[name=search]');
            const style = getComputedStyle(input);
            const ctx = document.createElement('canvas').getContext('2d');
            ctx.font = `${style.fontSize} ${style.fontFamily}`;
            const room = input.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight);
            return ctx.measureText(input.placeholder).width <= room;
        }"""
    )
    assert fits
    # A card shows no label without a value (a payment without an orderId has no ORDER line).
    cells = page.locator("#payments td[data-label=Order]")
    assert await cells.count() >= 1
    for index in range(await cells.count()):
        cell = cells.nth(index)
        assert (await cell.inner_text()).strip() or not await cell.is_visible()
    await no_sideways_scroll(page, PHONE)


async def test_the_login_the_admin_and_the_api_docs_work_under_the_content_security_policy(
    site, browser
):
    """Every kind of page the site serves runs its scripts and styles from /static/ only: the
    browser fixture fails the test on any violation the CSP reports."""
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()

    login = await page.goto(site.url + "/accounts/login/")
    policy = login.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy

    # The API docs: Swagger UI's own scripts (drf-spectacular-sidecar) render the operations.
    await page.goto(site.url + "/api/docs/")
    await page.locator(".swagger-ui .opblock").first.wait_for(timeout=WAIT_MS)
    assert "POS Gateway API" in await page.locator(".swagger-ui .info .title").inner_text()
    await page.locator(".swagger-ui .opblock-summary").first.click()
    await page.get_by_role("button", name="Try it out").first.wait_for(timeout=WAIT_MS)

    # The admin: its login, a change list with its actions and filters, a change form.
    await page.goto(site.url + "/admin/login/?next=/admin/")
    await page.fill("#id_username", "root")
    await page.fill("#id_password", PASSWORD)
    await page.click("input[type=submit]")
    await page.wait_for_url("**/admin/")
    await page.goto(site.url + "/admin/terminals/device/")
    await page.locator("#changelist").wait_for(timeout=WAIT_MS)
    await page.locator("#action-toggle").check()  # actions.js runs
    assert await page.locator(".action-counter").inner_text() != ""
    await page.goto(site.url + "/admin/terminals/device/add/")
    await page.locator("form#device_form").wait_for(timeout=WAIT_MS)
