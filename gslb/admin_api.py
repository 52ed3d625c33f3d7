"""The GSLB's admin API (aiohttp, loopback by default)  [edge].

    GET  /healthz                          liveness: 200 "ok"
    GET  /metrics                          Prometheus text
    GET  /api/status                       version, config file, GeoIP attribution, generation,
                                           DNS listeners (UDP reply source) and TCP connections/limits;
                                           with `workers` > 1 the listeners the workers bound (each
                                           says so in its "ready"): dns.udp rows {"address",
                                           "reply_source", "workers": how many ready workers serve it},
                                           dns.tcp.open summed over the workers (asked at the request)
    GET  /api/regions                      every region: state, last probe, RTT, drain
    GET  /api/regions                      ... `peers`: configured, reachable, alone (answers follow
                                           our own probes); each region's admin state (ready / drain /
                                           maintenance), own probe state and the vote (`vote`:
                                           voters, up/down votes, policy, alone)
    POST /api/regions/{name}/drain         (token) no new answers; says when it is safe to stop
    POST /api/regions/{name}/undrain       (token) back to ready
    POST /api/regions/{name}/maintenance   (token) down whatever the probes say
                                           all three: saved in admin.state_file and pushed to every
                                           peer at once (reply: "peers": {name: "ok" or why not})
    GET  /api/peers                        this server's name, the peers: each one's last verdicts,
                                           their age, agreement with ours; regions where our view and
                                           the vote differ; `alone` when no peer is heard
    GET  /api/peers/verdicts               (peer token) our own verdicts and admin entries: what
                                           peers pull every peers.interval (gslb/peers/)
    POST /api/peers/admin                  (peer token) a peer's admin entries {"server", "admin"}:
                                           the later ones win
    GET  /api/peers/latency                (peer token) the latency table with ages, pulled by a
                                           starting peer (streamed in chunks of LATENCY_CHUNK networks)
    POST /api/latency                      (token) ingest {"measurements": [{network, region, rtt_ms}]}
    GET  /api/latency                      table size and generation
    GET  /api/workers                      with `workers` > 1: each worker's pid, ready, restarts, config
                                           generation, queries answered, RSS (gslb/supervisor.py); else []
    GET  /api/explain?name=N&client=IP     the decision `gslb explain` prints
    POST /api/reload                       (token) reload the config file; 400 with the error if bad
    GET  /                                 the status page (gslb/status/; files served from the package)
    GET  /static/<name>                    its files (gslb/common/statuspage.py)
    GET  /api/status/overview              regions, services, share of answers per 10 s, why each region
                                           is not getting its nearby clients (gslb/status.py): decisions for
                                           sampled clients nearest to it, else for its own coordinates
    GET  /api/status/clients               the sampled client networks answered in the last 10 minutes,
                                           located (at most the sample: 2,000)

Reading needs no token; every POST does (`require_token`). The /api/peers/* endpoints take
the peers' shared token instead (peers.token, default admin.token; `require_peer_token`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import json
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gslb import __version__
from gslb.app import GslbServer
from gslb.common.admin import ADMIN_TOKEN, json_error, metrics_handler, require_token
from gslb.common.configload import ConfigError
from gslb.common.statuspage import add_status_page
from gslb.geoip import ATTRIBUTION, Location, exactly
from gslb.metrics import GslbCollector
from gslb.peers.admin_state import AdminState, entries_from_json
from gslb.seams import Answers, WorkersView
from gslb.status import AnswerSampler, NearDecision, Place, client_rows, network_of, why_not
from gslb.steering import Steering, geo

SERVER: web.AppKey[GslbServer] = web.AppKey("gslb_server", GslbServer)
WORKERS: web.AppKey[WorkersView] = web.AppKey("gslb_workers", WorkersView)
MAX_INGEST_BYTES = 4 * 1024 * 1024
MAX_PEER_ADMIN_BYTES = 64 * 1024       # a peer's pushed admin entries
LATENCY_CHUNK = 500                    # networks of the latency table written between yields to the loop
RECENT = 600.0              # seconds of sampled clients the page shows
NEAR_PER_REGION = 3         # sampled near clients explained per region (bounds the work of a poll)
HERE_NET, HERE = "192.0.2.0/24", ipaddress.ip_address("192.0.2.1")     # RFC 5737: never measured
STATUS_FILES = {
    "index.html": ("gslb", "status/index.html"),
    "status.js": ("gslb", "status/status.js"),
    "world.json": ("gslb", "status/world.json"),
    "gslb.css": ("gslb", "status/gslb.css"),
}


def _server(request: web.Request) -> GslbServer:
    return request.app[SERVER]


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def status(request: web.Request) -> web.Response:
    server = _server(request)
    view = request.app.get(WORKERS)
    if view is None:
        udp, tcp_open = server.udp_listener_rows(), len(server.tcp)
    else:                   # the supervisor binds no DNS socket: its workers do
        udp, tcp_open = view.udp_listeners(), await view.tcp_open()
    return web.json_response({
        "version": __version__,
        "config": server.config.file,
        "geoip_database": str(server.config.geoip_database),
        "geoip_attribution": ATTRIBUTION,
        "generation": server.steering.generation,
        "zones": [str(z.origin) for z in server.config.zones],
        "services": sorted(server.config.services),
        "reloads": server.reloads,
        "dns": {
            "udp": udp,
            "tcp": {"open": tcp_open, "max_connections": server.tcp.max_connections,
                    "max_per_client": server.tcp.max_per_client, "max_unsent": server.tcp.max_unsent,
                    "idle_timeout": server.tcp.idle_timeout},
        },
    })


async def regions(request: web.Request) -> web.Response:
    server = _server(request)
    now = server.clock()
    node = server.peer_node
    return web.json_response({"regions": [server.region_info(n) for n in server.regions],
                              "peers": {"configured": len(server.config.peers.servers),
                                        "reachable": len(node.reachable(now)), "alone": node.alone(now)}})


ACTIONS = {"drain": AdminState.DRAIN, "undrain": AdminState.READY, "maintenance": AdminState.MAINTENANCE}


@require_token
async def region_action(request: web.Request) -> web.Response:
    """POST /api/regions/{name}/drain, /undrain or /maintenance: here, in the state file, at every peer."""
    server = _server(request)
    name = request.match_info["name"]
    if name not in server.regions:
        return json_error(404, f"no region named {name!r}")
    entry = server.set_admin(name, ACTIONS[request.match_info["action"]])
    info = server.region_info(name)
    if server.peer_sync is not None:
        body = {"server": server.config.peers.name, "admin": {name: entry.to_json()}}
        info["peers"] = await server.peer_sync.push_admin(body)
    return web.json_response(info)


def require_peer_token(handler: Any) -> Any:
    """The peers' shared token (peers.token, default admin.token): 403 when none, 401 when wrong."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        token = _server(request).config.peers.token
        if not token:
            return json_error(403, "peer calls are disabled: no peers.token or admin.token configured")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return json_error(401, "missing or wrong peer token")
        response: web.StreamResponse = await handler(request)
        return response

    return wrapped


@require_peer_token
async def peer_verdicts(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response(server.peer_node.report(server.own_verdicts(server.clock())))


@require_peer_token
async def peer_admin(request: web.Request) -> web.Response:
    server = _server(request)
    if request.content_length is None or request.content_length > MAX_PEER_ADMIN_BYTES:
        return json_error(413, f"admin entries need a Content-Length of at most {MAX_PEER_ADMIN_BYTES} bytes")
    try:
        payload: Any = await request.json()
        if not isinstance(payload, dict):
            raise ValueError("expected an object {\"server\", \"admin\"}")
        entries = entries_from_json(payload.get("admin"), server.regions)
    except RecursionError:
        return json_error(400, "body is nested too deeply")
    except ValueError as exc:
        return json_error(400, str(exc))
    return web.json_response({"changed": server.merge_admin(entries)})


@require_peer_token
async def peer_latency(request: web.Request) -> web.StreamResponse:
    """The latency table as {"networks": [[network, [[region, rtt_ms, age_s], ...]], ...]}, written
    LATENCY_CHUNK networks at a time with the event loop free between (DNS keeps being answered
    while a 100,000-network table goes out)."""
    server = _server(request)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(b'{"networks": [')
    rows = server.latency.export_rows(server.clock())
    first = True
    while chunk := list(itertools.islice(rows, LATENCY_CHUNK)):
        body = json.dumps(chunk, separators=(",", ":"))[1:-1]
        await resp.write((body if first else "," + body).encode())
        first = False
        await asyncio.sleep(0)
    await resp.write(b"]}")
    await resp.write_eof()
    return resp


async def peers(request: web.Request) -> web.Response:
    server = _server(request)
    now = server.clock()
    node = server.peer_node
    settings = server.config.peers
    sync = server.peer_sync
    rows = node.peers_view(now, server.own_verdicts(now))
    for row in rows:
        status = sync.status.get(row["name"]) if sync is not None else None
        if status is not None:
            row["pulls_ok"], row["pulls_failed"] = status.pulls_ok, status.pulls_failed
            row["last_error"] = status.last_error
    return web.json_response({
        "name": settings.name, "interval": settings.interval, "policy": settings.policy.value,
        "policies": {r: p.value for r, p in settings.policies},
        "alone": node.alone(now), "reachable": node.reachable(now), "disagreeing": node.disagreeing(),
        "peers": rows,
    })


@require_token
async def ingest_latency(request: web.Request) -> web.Response:
    server = _server(request)
    if request.content_length is not None and request.content_length > MAX_INGEST_BYTES:
        return json_error(413, f"batch larger than {MAX_INGEST_BYTES} bytes")
    try:
        payload: Any = await request.json()
    except (ValueError, RecursionError):
        return json_error(400, "body is not JSON (or is nested too deeply)")
    try:
        accepted = server.ingest_latency(payload)
    except ValueError as exc:
        return json_error(400, str(exc))
    return web.json_response({"accepted": accepted, "networks": len(server.latency)})


async def latency_info(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response({"networks": len(server.latency), "generation": server.latency.generation})


async def explain(request: web.Request) -> web.Response:
    server = _server(request)
    name = request.query.get("name", "").rstrip(".").lower()
    if not server.steering.is_service(name):
        return json_error(404, f"{name!r} is not a service")
    try:
        client = ipaddress.ip_address(request.query.get("client", ""))
    except ValueError:
        return json_error(400, "client must be an IP address")
    decision = server.steering.explain(name, client, None, server.clock())
    return web.json_response({
        "service": decision.service, "policy": decision.policy, "regions": list(decision.regions),
        "ttl": decision.ttl, "scope_prefix": decision.scope_prefix, "all_down": decision.all_down,
        "location": decision.location, "lines": list(decision.lines),
    })


def _locate(server: GslbServer, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Place | None:
    loc = server.locator.locate(address)
    if loc is None or loc.lat is None or loc.lon is None:
        return None
    return Place(loc.lat, loc.lon, loc.describe())


async def _answers(request: web.Request) -> Answers:
    """The answers the status page shows: this process's, or with workers theirs (asked now)."""
    view = request.app.get(WORKERS)
    if view is not None:
        return await view.answers()
    server = _server(request)
    return Answers(server.answer_sample, dict(server.dns_stats.by_region), dict(server.dns_stats.all_down))


def _near_decisions(server: GslbServer, sample: AnswerSampler, now: float) -> list[NearDecision]:
    """Recently sampled clients whose nearest region is R, explained for each service holding R:
    at most NEAR_PER_REGION networks per region (the latest first)."""
    models = server.config.region_models()
    per_region: dict[str, int] = {}
    done: set[str] = set()
    out: list[NearDecision] = []
    for address, _regions, _at in reversed(sample.recent(now, RECENT)):
        net = network_of(address)
        if net in done:
            continue
        done.add(net)
        place = _locate(server, address)
        if place is None:
            continue
        nearest = geo.rank(list(models.values()), place.lat, place.lon)[0][0]
        if per_region.get(nearest, 0) >= NEAR_PER_REGION:
            continue
        per_region[nearest] = per_region.get(nearest, 0) + 1
        for svc in server.config.services.values():
            if nearest not in svc.regions:
                continue
            d = server.steering.explain(svc.name, address, None, now)
            out.append(NearDecision(nearest, net, svc.name, d.regions, d.all_down, d.location, d.lines))
        if len(per_region) == len(models) and all(n >= NEAR_PER_REGION for n in per_region.values()):
            break
    return out


class _AtOnePlace:
    """A locator that puts every address at one place (explaining a decision for a region's own location)."""

    def __init__(self, location: Location) -> None:
        self.location = location

    def locate(self, _address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Location:
        return self.location

    def locate_exact(self, _address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                     prefix_len: int | None) -> Location | None:
        return exactly(self.location, prefix_len)

    def close(self) -> None:
        """Nothing to let go of."""


def _own_location_decisions(server: GslbServer, regions: list[str], now: float) -> list[NearDecision]:
    """For regions with no sampled client near them: the decisions for a client at the region's own
    coordinates (a documentation address, so no measured RTT), from a throwaway Steering that sees
    the current region states. One per (region, service holding it)."""
    out: list[NearDecision] = []
    models = server.config.region_models()
    for name in regions:
        model = models[name]
        where = Location(model.lat, model.lon, "", "", f"{name}'s location", ipaddress.ip_network(HERE_NET))
        steering = Steering(models, server.config.services, _AtOnePlace(where), server.latency)
        steering.update_region_states(server.region_states())
        for svc in server.config.services.values():
            if name in svc.regions and svc.policy != "weighted":
                d = steering.explain(svc.name, HERE, None, now)
                out.append(NearDecision(name, f"{name}'s own location", svc.name, d.regions, d.all_down,
                                        d.location, d.lines))
    return out


async def status_overview(request: web.Request) -> web.Response:
    server = _server(request)
    now = server.clock()
    infos = [server.region_info(n) for n in server.regions]
    services = {name: {"policy": svc.policy, "regions": list(svc.regions), "ttl": svc.ttl}
                for name, svc in sorted(server.config.services.items())}
    answers = await _answers(request)
    sample = answers.sample
    near = _near_decisions(server, sample, now)
    near += _own_location_decisions(server, [n for n in server.regions if n not in {d.region for d in near}], now)
    return web.json_response({
        "version": __version__,
        "generation": server.steering.generation,
        "regions": infos,
        "services": services,
        "answers": answers.by_region,
        "all_down": answers.all_down,
        "shares": {"interval": server.shares.interval, "points": server.shares.points()},
        "why_not": why_not(infos, {n: svc.regions for n, svc in server.config.services.items()}, near),
        "sample": {"every": sample.every, "kept": len(sample.samples), "max": sample.samples.maxlen,
                   "seen": sample.seen},
        "token_required": bool(server.config.admin.token),
    })


async def status_clients(request: web.Request) -> web.Response:
    server = _server(request)
    now = server.clock()
    sample = (await _answers(request)).sample
    rows = client_rows(sample.recent(now, RECENT), lambda a: _locate(server, a), now)
    return web.json_response({"window": RECENT, "every": sample.every, "clients": rows})


@require_token
async def reload(request: web.Request) -> web.Response:
    try:
        await _server(request).reload()
    except ConfigError as exc:
        return json_error(400, f"reload refused, old config still serving: {exc}")
    return web.json_response({"reloaded": True, "generation": _server(request).steering.generation})


async def workers(request: web.Request) -> web.Response:
    view = request.app.get(WORKERS)
    if view is None:
        return web.json_response({"workers": []})
    return web.json_response({"workers": await view.workers_report()})


def make_admin_app(server: GslbServer, workers_view: WorkersView | None = None) -> web.Application:
    """`workers_view`: a supervisor's (gslb/supervisor.py): /metrics sums the workers' counters in,
    GET /api/workers lists them."""
    app = web.Application(client_max_size=MAX_INGEST_BYTES)
    app[SERVER] = server
    app[ADMIN_TOKEN] = server.config.admin.token
    if workers_view is None:
        registry = CollectorRegistry()
        registry.register(GslbCollector(server))
        app.router.add_get("/metrics", metrics_handler(registry))
    else:
        app[WORKERS] = workers_view
        app.router.add_get("/metrics", metrics_handler(workers_view.registry, before=workers_view.refresh_metrics))
    app.router.add_get("/api/workers", workers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/regions", regions)
    app.router.add_post("/api/regions/{name}/{action:drain|undrain|maintenance}", region_action)
    app.router.add_get("/api/peers", peers)
    app.router.add_get("/api/peers/verdicts", peer_verdicts)
    app.router.add_post("/api/peers/admin", peer_admin)
    app.router.add_get("/api/peers/latency", peer_latency)
    app.router.add_post("/api/latency", ingest_latency)
    app.router.add_get("/api/latency", latency_info)
    app.router.add_get("/api/explain", explain)
    app.router.add_post("/api/reload", reload)
    app.router.add_get("/api/status/overview", status_overview)
    app.router.add_get("/api/status/clients", status_clients)
    add_status_page(app, STATUS_FILES)
    return app


async def start_admin(server: GslbServer, *, workers: WorkersView | None = None) -> web.AppRunner:
    runner = web.AppRunner(make_admin_app(server, workers), access_log=None)
    await runner.setup()
    listen = server.config.admin.listen
    await web.TCPSite(runner, listen.host, listen.port).start()
    return runner
