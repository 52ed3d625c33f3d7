"""State store URLs: which Redis deployment a `state.url` names  [pure].

    parse_redis_url("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/lb/0")
      -> RedisTarget(kind="sentinel", nodes=(("10.0.0.1", 26379), ("10.0.0.2", 26379)), service="lb", db=0, ...)

Forms: see regional_lb/state/redis_client.py.  Anything else raises RedisUrlError (a ValueError)
naming the URL and the reason; the config loader reports it with the key path.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class RedisUrlError(ValueError):
    """The Redis URL is not one this store understands."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a state URL points at: a plain server (URL as redis-py takes it), a Sentinel service,
    or a cluster."""

    kind: str                                   # "url" | "sentinel" | "cluster"
    url: str = ""                               # kind "url": passed to redis.asyncio.from_url
    nodes: tuple[tuple[str, int], ...] = ()     # sentinels or cluster seed nodes
    service: str = ""                           # sentinel service (master) name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """Classify a state URL (see the module docstring for the accepted forms)  [pure]."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget("url", url=url)
    if scheme not in ("redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"):
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: scheme must be redis, rediss, unix, "
                            "redis+sentinel or redis+cluster")
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, pw = auth.partition(":")
        username, password = (unquote(user) or None), (unquote(pw) or None)
    default_port = 26379 if "sentinel" in scheme else 6379
    nodes = tuple(_host_port(item, default_port, url) for item in netloc.split(",") if item)
    if not nodes:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: no host")
    segments = [s for s in parts.path.split("/") if s]
    tls = scheme.startswith("rediss")
    if "cluster" in scheme:
        if segments:
            raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: a cluster URL has no path (db is 0)")
        return RedisTarget("cluster", nodes=nodes, username=username, password=password, tls=tls)
    if not segments or len(segments) > 2:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: expected /SERVICE or /SERVICE/DB after hosts")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: db must be a number")
        db = int(segments[1])
    return RedisTarget("sentinel", nodes=nodes, service=unquote(segments[0]), db=db,
                       username=username, password=password, tls=tls)


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: empty host in {item!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise RedisUrlError(f"{RedisUrlError.__doc__} {url!r}: bad port in {item!r}")
    return host, int(port_text) if port_text else default_port
