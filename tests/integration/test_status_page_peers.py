"""The GSLB status page in headless Chromium shows what the servers' vote made of our own probes."""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver

from gslb.peers.config import Peer
from tests.gslb_helpers import running_gslb, wait_for
from tests.integration.test_status_pages_browser import browser, step, text_of, wait_css

__all__ = ["browser"]        # the module-scoped fixture, shared


async def test_status_page_says_our_probes_were_outvoted(tmp_path: Path, browser: webdriver.Chrome) -> None:
    async with running_gslb(tmp_path) as g:
        server = g.server
        g.lbs["eu-central"].status = 503                # our own path to eu-central fails ...
        await wait_for(lambda: not server.regions["eu-central"].health.up, within=5)
        verdict = {"up": True, "since": 0, "rtt_ms": 1.0, "probes": 9, "fresh": True}
        for peer in ("b", "c"):                          # ... while two peers see it up
            server.on_peer_report(Peer(peer, ""), {"server": peer, "regions": {"eu-central": verdict}},
                                  server.clock())
        server.revote()
        assert server.regions["eu-central"].answer_up
        await step(browser.get, g.admin + "/")
        await step(wait_css, browser, '#regions tr[data-region="eu-central"][data-state="up"]')
        text = await step(text_of, browser, '#regions tr[data-region="eu-central"] td:nth-child(3)')
        assert "our probes say down, the servers' vote says up (2 up / 1 down, quorum)" in text
