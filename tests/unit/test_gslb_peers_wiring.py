"""The server wired to the vote and the admin entries, without sockets: peers' reports and probe
results go in, the steering's region states and the state file come out (time injected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gslb.app import GslbServer
from gslb.common.health import Health, Status
from gslb.common.probe import ProbeResult
from gslb.config import load_config
from gslb.peers.admin_state import AdminEntry, AdminState
from gslb.peers.config import Peer
from tests.gslb_helpers import gslb_config

EU = "eu-central"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_server(tmp_path: Path, clock: Clock, **peers: Any) -> GslbServer:
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    for region in data["regions"].values():
        region["probe"] = {"type": "tcp", "target": "127.0.0.1:9", "interval": "1s", "fall": 1, "rise": 1}
    data["peers"] = {"name": "a", "interval": "1s", "servers": {"b": "http://127.0.0.1:1", "c": "http://127.0.0.1:2"},
                     **peers}
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    return GslbServer(load_config(path), clock=clock, wall=lambda: 1.7e9 + clock.now)


def report(server: str, eu_up: bool, admin: dict[str, Any] | None = None) -> dict[str, Any]:
    verdict = {"up": eu_up, "since": 0, "rtt_ms": 1.0, "probes": 5, "fresh": True}
    return {"server": server, "interval": 1, "regions": {EU: verdict}, "admin": admin or {}}


def probe(server: GslbServer, region: str, ok: bool) -> None:
    """A probe result as the checker delivers it (fall = rise = 1: each result decides)."""
    health = Health(Status.UP if ok else Status.DOWN, 0, True)
    result = ProbeResult(ok, 0.001 if ok else None, "ok" if ok else "refused")
    before = server.regions[region].health
    server._on_probe(region, health, result)
    if before.status is not health.status:
        server._on_health_change(region, health, result)


def eu_state(server: GslbServer) -> Any:
    return server.steering._states[EU]


def test_own_lost_path_is_outvoted_until_the_peers_reports_go_stale(tmp_path: Path) -> None:
    clock = Clock()
    server = make_server(tmp_path, clock)
    for region in server.regions:
        probe(server, region, True)
    server.on_peer_report(Peer("b", ""), report("b", True), clock.now)
    server.on_peer_report(Peer("c", ""), report("c", True), clock.now)
    server.revote()
    probe(server, EU, False)                      # our path to eu-central is cut
    assert eu_state(server).up
    info = server.region_info(EU)
    assert info["state"] == "up"
    assert info["own_state"] == "down"
    assert info["vote"]["voters"] == ["self", "b", "c"]
    assert server.peer_node.disagreeing() == [EU]
    # the peers fall silent: after three peer intervals our own view decides
    clock.now += 3.5
    probe(server, EU, False)
    server.revote()
    assert not eu_state(server).up
    assert server.region_info(EU)["vote"]["alone"] is True
    # a majority of fresh peers saying down takes it down even when we see it up
    probe(server, EU, True)
    server.on_peer_report(Peer("b", ""), report("b", False), clock.now)
    server.on_peer_report(Peer("c", ""), report("c", False), clock.now)
    server.revote()
    assert not eu_state(server).up
    assert server.region_info(EU)["own_state"] == "up"


def test_drain_maintenance_and_peer_entries_reach_steering_and_the_state_file(tmp_path: Path) -> None:
    clock = Clock()
    server = make_server(tmp_path, clock)
    state_file = tmp_path / "admin_state.json"
    info = server.maintenance(EU)
    assert info["admin"] == "maintenance"
    assert info["state"] == "down"
    assert not eu_state(server).up
    assert json.loads(state_file.read_text())["regions"][EU]["state"] == "maintenance"
    server.drain(EU)
    assert eu_state(server).up
    assert eu_state(server).drained
    assert server.region_info(EU)["safe_to_stop_in"] == 30
    clock.now += 10
    assert server.region_info(EU)["safe_to_stop_in"] == 20
    # a peer's later undrain, carried in its report
    later = {EU: {"state": "ready", "at": 1.7e9 + clock.now + 1, "origin": "b"}}
    server.on_peer_report(Peer("b", ""), report("b", True, later), clock.now)
    assert not eu_state(server).drained
    assert json.loads(state_file.read_text())["regions"][EU] == later[EU]
    # a peer's older entry changes nothing
    assert server.merge_admin({EU: AdminEntry(AdminState.DRAIN, 1.0, "c")}) == []
    assert server.admin_saves == {"ok": 3, "failed": 0}
    # a restart reads the file: the same entry, the same state
    again = make_server(tmp_path, clock)
    assert again.admin_states.get(EU) == server.admin_states.get(EU)
    assert not eu_state(again).drained


def test_a_drain_survives_a_restart_with_its_time(tmp_path: Path) -> None:
    clock = Clock()
    server = make_server(tmp_path, clock)
    server.drain(EU)
    drained_at = server.region_info(EU)["drained_at"]
    clock.now += 12
    again = make_server(tmp_path, clock)
    info = again.region_info(EU)
    assert info["drained"] is True
    assert info["drained_at"] == drained_at
    assert info["safe_to_stop_in"] == 18


def test_an_unwritable_state_file_is_counted_and_the_drain_still_holds(tmp_path: Path) -> None:
    clock = Clock()
    server = make_server(tmp_path, clock)
    (tmp_path / "admin_state.json").mkdir()         # a directory where the file should be: rename fails
    server.drain(EU)
    assert eu_state(server).drained
    assert server.admin_saves == {"ok": 0, "failed": 1}
