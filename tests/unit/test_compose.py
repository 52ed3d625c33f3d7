"""docker-compose.yml (Docker does not run here): files exist, configs pass check-config, and the
addresses and ports in compose agree with what the configs say."""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ("us-east", "eu-central", "ap-northeast")
GROUPS = {"a": (1, 2), "b": (3, 4)}       # internal group -> its app servers (app-<region>-<i>)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _ip(service: dict[str, Any]) -> str:
    return str(service["networks"]["lbnet"]["ipv4_address"])


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path for every bind mount."""
    out = {}
    for vol in service.get("volumes", []):
        host, container = vol.split(":")[:2]
        out[container] = ROOT / host
    return out


def _config_of(service: dict[str, Any]) -> Path:
    cmd = service["command"]
    return _mounts(service)[cmd[cmd.index("-c") + 1]]


def _lb_config(services: dict[str, Any], name: str) -> Any:
    from regional_lb.config import load_config

    return load_config(_config_of(services[name]))


def _gslb_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gslb.steering.config", "gslb.geoip"))


def test_one_image_built_from_the_top_level_dockerfile(compose: dict[str, Any]) -> None:
    assert (ROOT / "Dockerfile").is_file()
    images = {s.get("image") for n, s in compose["services"].items() if n != "redis"}
    assert images == {"gslb-regional-lb:dev"}
    assert all(s.get("build") == "." for n, s in compose["services"].items() if n != "redis")
    expected = {"redis", "gslb"} | {f"edge-{r}" for r in REGIONS} | {
        f"internal-{r}-{g}" for r in REGIONS for g in GROUPS} | {f"app-{r}-{i}" for r in REGIONS for i in (1, 2, 3, 4)}
    assert set(compose["services"]) == expected


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    mounts = [p for s in compose["services"].values() for p in _mounts(s).values()]
    assert len(mounts) == 1 + len(REGIONS) * (1 + len(GROUPS))
    for path in mounts:
        assert path.is_file(), path


def test_addresses_are_unique_and_in_the_network(compose: dict[str, Any]) -> None:
    subnet = ipaddress.ip_network(compose["networks"]["lbnet"]["ipam"]["config"][0]["subnet"])
    ips = [_ip(s) for s in compose["services"].values()]
    assert len(ips) == len(set(ips))
    assert all(ipaddress.ip_address(ip) in subnet for ip in ips)


def test_lb_configs_pass_check_config(compose: dict[str, Any]) -> None:
    from regional_lb.cli import main

    for name, service in compose["services"].items():
        if name.startswith(("edge-", "internal-")):
            assert main(["check-config", str(_config_of(service))]) == 0, name


@pytest.mark.skipif(not _gslb_available(), reason="gslb.steering.config / gslb.geoip not written yet")
def test_gslb_config_passes_check_config(compose: dict[str, Any]) -> None:
    from gslb.cli import main

    assert main(["check-config", str(_config_of(compose["services"]["gslb"]))]) == 0
    assert main(["check-config", str(ROOT / "deploy" / "production" / "gslb.yaml")]) == 0
    assert main(["check-config", str(ROOT / "deploy" / "local" / "gslb.yaml")]) == 0


@pytest.mark.skipif(not _gslb_available(), reason="gslb.steering.config / gslb.geoip not written yet")
def test_gslb_regions_point_at_the_edge_containers(compose: dict[str, Any]) -> None:
    from gslb.config import load_config

    services = compose["services"]
    config = load_config(_config_of(services["gslb"]))
    assert set(config.regions) == set(REGIONS)
    for region, rc in config.regions.items():
        edge = services[f"edge-{region}"]
        lb = _lb_config(services, f"edge-{region}")
        assert rc.region.v4 == (_ip(edge),)
        assert rc.probe is not None
        assert (rc.probe.spec.host, rc.probe.spec.port) == (_ip(edge), lb.listeners[0].port)
        assert rc.probe.spec.path == lb.health_endpoint.path
    # DNS and admin: what the config listens on is what compose publishes
    published = services["gslb"]["ports"]
    dns_port = config.dns.listen[0].port
    assert f"1053:{dns_port}/udp" in published
    assert f"1053:{dns_port}/tcp" in published
    assert f"127.0.0.1:{config.admin.listen.port}:{config.admin.listen.port}" in published
    assert dns_port >= int(services["gslb"]["sysctls"]["net.ipv4.ip_unprivileged_port_start"])


def test_gslb_config_addresses_match_compose_without_loading(compose: dict[str, Any]) -> None:
    """The same agreement read from the YAML itself (runs even before the GSLB loader exists)."""
    services = compose["services"]
    raw = yaml.safe_load(_config_of(services["gslb"]).read_text())
    for region in REGIONS:
        edge_ip = _ip(services[f"edge-{region}"])
        assert raw["regions"][region]["addresses"] == [edge_ip]
        assert raw["regions"][region]["probe"]["url"] == f"http://{edge_ip}:8080/lb/healthz"
    assert raw["dns"]["listen"] == ["0.0.0.0:53"]
    assert raw["admin"]["listen"] == "0.0.0.0:8053"


@pytest.mark.parametrize("region", REGIONS)
def test_each_tier_points_at_the_next(compose: dict[str, Any], region: str) -> None:
    services = compose["services"]
    edge = _lb_config(services, f"edge-{region}")
    internals = {g: _lb_config(services, f"internal-{region}-{g}") for g in GROUPS}
    assert edge.region == region
    assert edge.role == "edge"
    assert {(c.region, c.role) for c in internals.values()} == {(region, "internal")}
    # the edge's listener is what compose publishes; its backends are the region's internal groups
    assert f"127.0.0.1:{8080 + REGIONS.index(region) + 1}:{edge.listeners[0].port}" in services[f"edge-{region}"][
        "ports"]
    assert set(services[f"edge-{region}"]["depends_on"]) == {"redis"} | {f"internal-{region}-{g}" for g in GROUPS}
    (edge_pool,) = edge.pools.values()
    assert [(b.host, b.port, b.id) for b in edge_pool.backends] == [
        (_ip(services[f"internal-{region}-{g}"]), internals[g].listeners[0].port, f"{region}-group-{g}")
        for g in GROUPS]
    # each internal LB's backends are its group's app containers, on the port their command listens on
    redis_urls = set()
    for g, numbers in GROUPS.items():
        (app_pool,) = internals[g].pools.values()
        expected = []
        for i in numbers:
            cmd = services[f"app-{region}-{i}"]["command"]
            listen_port = int(cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1])
            expected.append((_ip(services[f"app-{region}-{i}"]), listen_port, f"{region}-app-{i}"))
            assert cmd[cmd.index("--region") + 1] == region
            assert cmd[cmd.index("--name") + 1] == f"{region}-app-{i}"
            redis_urls.add(cmd[cmd.index("--redis") + 1])
        assert [(b.host, b.port, b.id) for b in app_pool.backends] == expected
        assert set(services[f"internal-{region}-{g}"]["depends_on"]) == {f"app-{region}-{i}" for i in numbers}
        # X-Forwarded-For from the edge is trusted by every internal LB
        assert any(ipaddress.ip_address(_ip(services[f"edge-{region}"])) in net
                   for net in internals[g].trusted_proxies)
    # one Redis database per region: every app of the region and the edge's shared state
    (redis_url,) = redis_urls
    assert redis_url.startswith("redis://redis:6379/")
    assert edge.state.backend == "redis"
    assert edge.state.url == redis_url


def test_compose_configs_match_the_local_ones_but_for_addresses() -> None:
    """deploy/compose/ is deploy/local/ with container addresses: the same files, the same backends' ids."""
    local, comp = ROOT / "deploy" / "local", ROOT / "deploy" / "compose"
    assert sorted(p.name for p in local.glob("*.yaml")) == sorted(p.name for p in comp.glob("*.yaml"))
    for path in local.glob("*-*.yaml"):
        a, b = yaml.safe_load(path.read_text()), yaml.safe_load((comp / path.name).read_text())
        assert (a["region"], a["role"]) == (b["region"], b["role"]), path.name
        assert a.get("via") == b.get("via"), path.name
        ids = [[be["id"] for be in pool["backends"]] for pool in a["pools"].values()]
        assert ids == [[be["id"] for be in pool["backends"]] for pool in b["pools"].values()], path.name
        assert a["routes"] == b["routes"], path.name
