"""Take the README's status page screenshots from the `make run` demo (optional; the browser test
can also write them: STATUS_SCREENSHOTS=deploy/screenshots).

    PYTHONPATH=. .venv/bin/python deploy/screenshots/take.py [--out deploy/screenshots]

Starts the demo on free ports (deploy.launcher.running_demo), sends www/api.example.test queries
with EDNS Client Subnet from 3,000 random public /24s (seeded: the same networks every time) so that
the sampled client networks cover the map, some HTTP requests through the ap-northeast edge, waits for
four share intervals (40 s), drains eu-central (GSLB) and ap-northeast-group-b (the ap-northeast
edge) through the admin APIs, then loads both pages in headless Chromium and saves
gslb-status.png and regional-lb-status.png.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.edns
import dns.message
import dns.query
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from deploy.launcher import running_demo

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1200")


def random_public_net(rng: random.Random) -> str:
    while True:
        net = ipaddress.IPv4Network((rng.getrandbits(24) << 8, 24))
        if net.is_global and not net.is_multicast:
            return str(net)


def shoot(driver: webdriver.Chrome, url: str, ready_css: str, path: Path) -> None:
    driver.set_window_size(1400, 1200)
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready_css))
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 160, 2600))
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ready_css))
    driver.save_screenshot(str(path))
    print(path, path.stat().st_size, "bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    rng = random.Random(9)
    with running_demo(Path(tempfile.mkdtemp(prefix="status-shots-"))) as demo:
        ports = demo["ports"]
        gslb_admin = f"http://127.0.0.1:{ports['gslb_admin']}/"
        edge = demo["regions"]["ap-northeast"]["edge"]
        lb_admin = f"http://{edge.split(':')[0]}:{ports['lb_admin']}/"
        for i in range(3000):
            address, prefix = random_public_net(rng).split("/")
            name = "api.example.test" if i % 4 == 0 else "www.example.test"
            q = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(address, int(prefix))])
            dns.query.tcp(q, "127.0.0.1", port=ports["dns"], timeout=2)      # (RRL limits UDP only)
            if i % 750 == 749:
                time.sleep(10.5)        # spread the answers over four share intervals
        for i in range(60):
            path = "/" if i % 3 else f"/missing/{i}"        # some 404s too
            try:
                with urllib.request.urlopen(f"http://{edge}{path}", timeout=5) as r:
                    r.read()
            except urllib.error.HTTPError:
                pass
        # an operator's actions, so that the pages show them: eu-central drained, one LB group draining
        token = {"Authorization": f"Bearer {demo['admin_token']}"}
        for url in (f"{gslb_admin}api/regions/eu-central/drain",
                    f"{lb_admin}api/pools/internal/backends/ap-northeast-group-b/drain"):
            urllib.request.urlopen(urllib.request.Request(url, method="POST", headers=token), timeout=5).close()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='status-chromium-')}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        try:
            shoot(driver, gslb_admin, "#clients circle", args.out / "gslb-status.png")
            shoot(driver, lb_admin, "tr[data-backend]", args.out / "regional-lb-status.png")
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
