"""The state feed from the supervisor to its workers: messages, framing, applying  [pure].

The supervisor (regional_lb/supervisor.py) runs the health checks, discovery, the admin API
and config reloads once; every worker (regional_lb/worker.py) keeps a copy of the pools and
applies what the supervisor tells it. A message is a JSON object with a "t" (type):

    config      {"t": "config", "generation": 3, "text": "<the YAML>", "file": "/etc/rlb/edge.yaml"}
                a config generation: the worker builds (or reloads to) it; the supervisor
                validated it first, so a worker parses the very text the supervisor accepted
    health      {"t": "health", "pool": "api", "id": "b1", "status": "up", "streak": 0,
                 "probed": true, "ok": true}            a checker result (`ok`: that probe passed)
    admin       {"t": "admin", "pool": "api", "id": "b1", "state": "drain", "deadline": 12345.6}
                `deadline`: absolute CLOCK_MONOTONIC seconds, which every process on the
                host shares (null: none)
    discovered  {"t": "discovered", "pool": "api", "key": {...DnsBackends...},
                 "backends": [["10.0.0.1:80", "10.0.0.1", 80, 1], ...]}
    metrics     {"t": "metrics", "id": 7}               worker -> supervisor answer: "metrics_reply"
    pools       {"t": "pools", "id": 8}                 answer: "pools_reply" (in flight, sessions, ejections)
    stop        {"t": "stop"}                           drain and exit (as SIGTERM)

and from a worker to the supervisor

    ready          {"t": "ready", "worker": 0, "pid": 1234, "listen": [["127.0.0.1", 8080]]}
    reloaded       {"t": "reloaded", "generation": 3, "ok": true, "message": "reloaded"}
    metrics_reply  {"t": "metrics_reply", "id": 7, "families": [...]}  (gslb/common/metrics_merge.py
                   `families_to_wire`)
    pools_reply    {"t": "pools_reply", "id": 8, "pools": {pool: {backend: {"inflight": 2,
                   "sessions": {route: 5}, "ejected": false}}}}  (regional_lb/worker.py `pools_view`)

`snapshot(rt, now)` is what a newly started (or restarted) worker gets after its config: the
health, admin state and discovered backends of every pool, as the messages above, so it
serves exactly as its siblings do from its first request.

Framing (a 4-byte length, then UTF-8 JSON; a crafted length refused before buffering) and the
channel are shared with the GSLB's workers: gslb/common/framing.py, gslb/common/channel.py.

Errors: FeedError (a ValueError) for a malformed message; `apply`
ignores a message for a pool or backend the worker does not know (a reload may have removed
it in between) and returns False.
"""

from __future__ import annotations

from typing import Any

from gslb.common.health import Health, Status
from regional_lb.balancing.base import Backend
from regional_lb.config import DnsBackends
from regional_lb.runtime import Runtime

ADMIN_STATES = ("ready", "drain", "maintenance")


class FeedError(ValueError):
    """a malformed state feed message"""


# -- messages ------------------------------------------------------------------------------------------

def health_message(pool: str, backend_id: str, health: Health, ok: bool | None) -> dict[str, Any]:
    return {"t": "health", "pool": pool, "id": backend_id, "status": health.status.value,
            "streak": health.streak, "probed": health.probed, "ok": ok}


def admin_message(pool: str, backend_id: str, state: str, deadline: float | None) -> dict[str, Any]:
    return {"t": "admin", "pool": pool, "id": backend_id, "state": state, "deadline": deadline}


def discovered_message(pool: str, key: DnsBackends, backends: tuple[Backend, ...]) -> dict[str, Any]:
    return {"t": "discovered", "pool": pool,
            "key": [key.name, key.port, key.type, key.weight, key.interval],
            "backends": [[b.id, b.host, b.port, b.weight] for b in backends]}


def discovered_of(message: dict[str, Any]) -> tuple[str, DnsBackends, tuple[Backend, ...]]:
    """(pool, key, backends) of a "discovered" message (FeedError if malformed)."""
    try:
        name, port, kind, weight, interval = message["key"]
        key = DnsBackends(str(name), None if port is None else int(port), str(kind), int(weight), float(interval))
        backends = tuple(Backend(str(i), str(h), int(p), int(w)) for i, h, p, w in message["backends"])
        return str(message["pool"]), key, backends
    except (KeyError, TypeError, ValueError) as exc:
        raise FeedError(f"bad discovered message: {exc!r}") from None


def snapshot(rt: Runtime, now: float) -> list[dict[str, Any]]:
    """What a new worker needs to serve as its siblings do (see the module docstring)."""
    out: list[dict[str, Any]] = []
    for name, pr in rt.pools.items():
        for key, backends in pr.discovered.items():
            out.append(discovered_message(name, key, backends))
        for row in pr.pool.status(now):
            bid = str(row["id"])
            health = pr.pool.health(bid)
            if health is not None:
                out.append(health_message(name, bid, health, None))
            admin = str(row["admin"])
            if admin == "drained":              # a drain whose deadline passed: replays as one
                out.append(admin_message(name, bid, "drain", now))
            elif admin != "ready":
                deadline = row.get("drain_deadline")
                out.append(admin_message(name, bid, admin, None if deadline is None else float(deadline)))
    return out


def apply(rt: Runtime, message: dict[str, Any], now: float) -> bool:
    """Apply a health or admin message to `rt`'s pools; False if its pool or backend is unknown.
    ("discovered" changes membership: the worker applies it through its LoadBalancer.)"""
    kind = message.get("t")
    pr = rt.pools.get(str(message.get("pool")))
    if pr is None:
        return False
    bid = str(message.get("id"))
    if pr.pool.backend(bid) is None:
        return False
    try:
        if kind == "health":
            health = Health(Status(message["status"]), int(message["streak"]), bool(message["probed"]))
            ok = message.get("ok")
            pr.pool.set_health(bid, health, now, probe_ok=None if ok is None else bool(ok))
            return True
        if kind == "admin":
            state = message["state"]
            if state not in ADMIN_STATES:
                raise FeedError(f"unknown admin state {state!r}")
            deadline = message.get("deadline")
            pr.pool.set_admin(bid, state, now, None if deadline is None else float(deadline))
            return True
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FeedError):
            raise
        raise FeedError(f"bad {kind} message: {exc!r}") from None
    raise FeedError(f"apply() takes health and admin messages, not {kind!r}")
