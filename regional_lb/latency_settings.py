"""The `latency_push` config section: settings for regional_lb/latency_push.py  [pure].

Read by the config loader (regional_lb/config.py), which must import no I/O module; the pusher
itself (aiohttp, timers) lives in regional_lb/latency_push.py, whose docstring shows the keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from gslb.common.configload import Section


def ingest_url(base: str) -> str:
    """"http://gslb:8053" -> "http://gslb:8053/api/latency"; a URL with a path is kept as given."""
    _scheme, sep, rest = base.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {base!r}")
    _host, slash, path = rest.partition("/")
    if not slash or not path:
        return base.rstrip("/") + "/api/latency"
    return base


@dataclass(frozen=True, slots=True)
class LatencyPushSettings:
    urls: tuple[str, ...]
    token: str | None
    interval: float = 10.0
    window: float = 60.0
    max_networks: int = 10_000
    timeout: float = 2.0


def load_latency_push(sect: Section) -> LatencyPushSettings | None:
    """The `latency_push` section of an edge config; None when it is absent or empty."""
    if not sect.data:
        return None
    urls = sect.take_list("urls")
    if not urls:
        raise sect.error("urls", "must list at least one GSLB admin URL")
    for i, url in enumerate(urls):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise sect.error("urls", f"[{i}] expected an http(s) URL, got {url!r}")
    token = sect.take_token()
    settings = LatencyPushSettings(
        urls=tuple(ingest_url(u) for u in urls), token=token,
        interval=sect.take_duration("interval", 10.0, minimum=0.05),
        window=sect.take_duration("window", 60.0, minimum=1.0),
        max_networks=sect.take_number("max_networks", 10_000, minimum=1, integer=True),
        timeout=sect.take_duration("timeout", 2.0, minimum=0.01))
    sect.done()
    return settings
