"""The status pages in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`,
driven by selenium) loads each page from a running server on loopback, finds the regions and
backends with their state, drains one FROM THE PAGE (token typed into the page, button clicked)
and checks the effect outside the browser: the DNS answer (dnspython) or /api/pools.

One browser for the module. Selenium calls block, and the servers run in the test's event loop,
so every browser step runs in a thread (`asyncio.to_thread`). Waits are WebDriverWait on DOM
conditions, never sleeps. Each test saves a screenshot in its tmp_path; with
STATUS_SCREENSHOTS=DIR set, also into DIR (how deploy/screenshots/ was made:
`STATUS_SCREENSHOTS=deploy/screenshots .venv/bin/python -m pytest tests/integration/test_status_pages_browser.py`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.gslb_helpers import ASHBURN_NET, FRANKFURT_NET, SEOUL_NET, TOKEN, running_gslb
from tests.integration.test_gslb_server import addresses, ecs_query, udp
from tests.rlb_helpers import admin_url, backend_servers, lb_config, lb_url, running_lb

PARIS_NET = "100.64.0.0/24"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1200")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="status-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def step(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def wait_css(driver: webdriver.Chrome, css: str, timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css)
                                                if d.find_elements(By.CSS_SELECTOR, css) else False)


def wait_true(driver: webdriver.Chrome, predicate: Callable[[webdriver.Chrome], Any], timeout: float = 10) -> Any:
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(predicate)


def click(driver: webdriver.Chrome, css: str, timeout: float = 10) -> None:
    """Click the element `css` names (found again if a refresh replaced it in between)."""
    WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def text_of(driver: webdriver.Chrome, css: str, timeout: float = 10) -> str:
    return str(WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).text))


def column_sum(driver: webdriver.Chrome, column: int) -> int:
    return int(driver.execute_script(
        f"return [...document.querySelectorAll('section[data-pool=\"app\"] tbody tr td:nth-child({column})')]"
        ".reduce((t, td) => t + Number(td.textContent), 0)"))


def enter_token(driver: webdriver.Chrome, token: str) -> None:
    field = wait_css(driver, "#token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-save").click()
    wait_css(driver, "#token-state")


def screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, max(900, min(int(height) + 160, 2600)))   # (the window includes its frame)
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    extra = os.environ.get("STATUS_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    driver.set_window_size(1400, 1200)
    return path


async def test_gslb_status_page_shows_regions_clients_and_drains_from_the_page(tmp_path, browser):
    async with running_gslb(tmp_path) as g:
        g.server.answer_sample.every = 1            # sample every miss: three networks are enough
        server = g.server
        server.shares.snapshot(server.dns_stats.by_region, server.clock(), server.wall())
        for round_ in range(4):         # four intervals of answers, Seoul's share growing
            for net, n in ((SEOUL_NET, 1 + 2 * round_), (FRANKFURT_NET, 3), (ASHBURN_NET, 2), (PARIS_NET, 1)):
                for _ in range(n):          # (over TCP: response rate limiting is for UDP only)
                    await dns.asyncquery.tcp(ecs_query("www.example.test", net), "127.0.0.1", port=g.dns_port,
                                             timeout=2)
            server.shares.snapshot(server.dns_stats.by_region, server.clock(), server.wall())
        assert addresses(await udp(ecs_query("www.example.test", FRANKFURT_NET), g.dns_port)) == ["127.0.2.1"]

        driver = browser
        await step(driver.get, g.admin + "/")
        for region in ("us-east", "eu-central", "ap-northeast"):
            await step(wait_css, driver, f'#regions tr[data-region="{region}"][data-state="up"]')
        # the map: land drawn, a marker per region, the sampled client networks as dots
        await step(wait_true, driver, lambda d: len(d.find_element(By.ID, "land").get_attribute("d")) > 10_000)
        assert len(await step(driver.find_elements, By.CSS_SELECTOR, "#regions-layer .region-marker")) == 3
        await step(wait_true, driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#clients circle")) == 4)
        # Paris is sent to eu-central: its dot has eu-central's colour (one script: no stale elements)
        fills = await step(driver.execute_script, f"""
            const dot = document.querySelector('#clients circle[data-network="{PARIS_NET}"]');
            const region = document.querySelector('#regions-layer g[data-region="eu-central"] .region-dot');
            return [dot.getAttribute('fill'), region.getAttribute('fill')];""")
        assert fills[0] == fills[1]
        assert len(await step(driver.find_elements, By.CSS_SELECTOR, "#shares rect")) == 4 * 3
        state = await step(text_of, driver, '#regions tr[data-region="eu-central"] .badge.state')
        assert state == "up"

        # drain eu-central from the page: no token yet -> the page asks for it, nothing changes
        await step(click, driver, 'button[data-action="drain"][data-region="eu-central"]')
        await step(wait_true, driver, lambda d: "token" in d.find_element(By.ID, "msg").text)
        assert not server.regions["eu-central"].drained_since
        await step(enter_token, driver, TOKEN)
        await step(click, driver, 'button[data-action="drain"][data-region="eu-central"]')
        await step(wait_css, driver, '#regions tr[data-region="eu-central"][data-state="drained"]')
        assert server.regions["eu-central"].drained_since is not None
        assert addresses(await udp(ecs_query("www.example.test", FRANKFURT_NET), g.dns_port)) != ["127.0.2.1"]
        why = await step(text_of, driver, '#regions tr[data-region="eu-central"] li[data-kind="drained"]')
        assert "drained by an operator" in why

        # the explain form
        await step(lambda: driver.find_element(By.ID, "explain-client").send_keys("3.208.0.9"))
        await step(lambda: driver.find_element(By.CSS_SELECTOR, "#explain button").click())
        await step(wait_true, driver, lambda d: "us-east" in d.find_element(By.ID, "explain-out").text)
        await step(screenshot, driver, tmp_path, "gslb-status.png")

        # undrain from the page: the answer comes back
        await step(click, driver, 'button[data-action="undrain"][data-region="eu-central"]')
        await step(wait_css, driver, '#regions tr[data-region="eu-central"][data-state="up"]')
        assert addresses(await udp(ecs_query("www.example.test", FRANKFURT_NET), g.dns_port)) == ["127.0.2.1"]

        # states the probes set: the page follows them on its own (live refresh)
        g.lbs["us-east"].status = 503
        g.lbs["ap-northeast"].healthy_fraction = 0.75
        await step(wait_css, driver, '#regions tr[data-region="us-east"][data-state="down"]')
        await step(wait_css, driver, '#regions tr[data-region="ap-northeast"][data-state="degraded"]')
        why = await step(text_of, driver, '#regions tr[data-region="us-east"] li[data-kind="down"]')
        assert "last probe failed" in why


async def test_regional_lb_stats_page_shows_backends_and_drains_from_the_page(tmp_path, browser):
    routes = [{"name": "web", "pool": "app", "policy": "sticky_cookie",
               "options": {"cookie": "LB", "secrets": ["s3cret-s3cret-s3cret"]}}]
    async with backend_servers(["a", "b", "c"]) as bs, running_lb(lb_config(bs, routes=routes)) as lb, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        for path in ("/x", "/y", "/status/503", "/z"):
            async with s.get(lb_url(lb, path)) as r:
                await r.read()
        await step(browser.get, admin_url(lb, "/"))
        for backend in ("a", "b", "c"):
            await step(wait_css, browser, f'tr[data-pool="app"][data-backend="{backend}"][data-state="up"]')
        await step(wait_true, browser, lambda d: (column_sum(d, 8), column_sum(d, 9)) == (4, 1))  # requests, 5xx
        routes_text = await step(text_of, browser, 'section[data-pool="app"]')
        assert "web (*/, sticky_cookie)" in routes_text

        await step(enter_token, browser, "test-token")
        await step(click, browser, 'button[data-action="drain"][data-pool="app"][data-backend="b"]')
        await step(wait_css, browser, 'tr[data-pool="app"][data-backend="b"][data-state="drain"]')
        async with s.get(admin_url(lb, "/api/pools")) as r:
            rows = {row["id"]: row for row in (await r.json())["app"]["backends"]}
        assert rows["b"]["admin"] == "drain"
        assert rows["a"]["admin"] == rows["c"]["admin"] == "ready"
        await step(click, browser, 'button[data-action="maintenance"][data-pool="app"][data-backend="c"]')
        await step(wait_css, browser, 'tr[data-pool="app"][data-backend="c"][data-state="maintenance"]')
        for _ in range(6):          # new requests go to a only
            async with s.get(lb_url(lb, "/n")) as r:
                assert r.headers["X-Backend"] == "a"
        async with s.get(admin_url(lb, "/api/status/pools")) as r:
            served = {b["id"]: b["requests"] for b in (await r.json())["pools"]["app"]["backends"]}
        assert served["a"] >= 6
        await step(wait_true, browser, lambda d: d.find_element(       # the page refreshes by itself
            By.CSS_SELECTOR, 'tr[data-pool="app"][data-backend="a"] td:nth-child(8)').text == str(served["a"]))
        await step(screenshot, browser, tmp_path, "regional-lb-status.png")
        await step(click, browser, 'button[data-action="ready"][data-pool="app"][data-backend="b"]')
        await step(wait_css, browser, 'tr[data-pool="app"][data-backend="b"][data-state="up"]')
        async with s.get(admin_url(lb, "/api/pools")) as r:
            rows = {row["id"]: row for row in (await r.json())["app"]["backends"]}
        assert rows["b"]["admin"] == "ready"


async def test_without_an_admin_token_the_buttons_are_off(browser):
    async with backend_servers(["a"]) as bs, running_lb(lb_config(bs, admin={"listen": "127.0.0.1:0"})) as lb:
        await step(browser.get, admin_url(lb, "/"))
        await step(wait_css, browser, 'tr[data-backend="a"][data-state="up"]')
        buttons = await step(browser.execute_script, """return [...document.querySelectorAll(
            'tr[data-backend="a"] button')].map((b) => [b.dataset.action, b.disabled]);""")
        assert buttons == [["drain", True], ["maintenance", True], ["ready", True]]
