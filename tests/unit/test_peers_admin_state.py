"""Admin entries (gslb/peers/admin_state.py): last writer wins, the state file, the peers config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gslb.common.configload import ConfigError
from gslb.config import load_config
from gslb.peers import admin_state
from gslb.peers.admin_state import AdminEntry, AdminState, AdminStates, StateFileError, entries_from_json
from gslb.peers.config import Peer
from gslb.peers.node import PeerNode
from gslb.peers.vote import Policy, ReportError, Verdict
from tests.gslb_helpers import gslb_config

DRAIN, READY, MAINT = AdminState.DRAIN, AdminState.READY, AdminState.MAINTENANCE


def test_local_change_always_replaces_what_is_held_even_if_a_peer_clock_ran_ahead() -> None:
    states = AdminStates({"eu": AdminEntry(DRAIN, 1000.0, "b")})       # b's clock is ahead of ours
    entry = states.set("eu", READY, wall=900.0, origin="a")
    assert entry.at > 1000.0
    assert states.state("eu") is READY


def test_merge_is_last_writer_wins_with_origin_as_tie_break() -> None:
    states = AdminStates()
    assert states.merge("eu", AdminEntry(DRAIN, 10.0, "a"))
    assert not states.merge("eu", AdminEntry(READY, 9.0, "b"))         # older: ignored
    assert states.state("eu") is DRAIN
    assert states.merge("eu", AdminEntry(READY, 10.0, "b"))            # same time, later origin
    assert not states.merge("eu", AdminEntry(READY, 11.0, "c"))        # newer, same state: no change
    assert states.get("eu") == AdminEntry(READY, 11.0, "c")
    # the order entries arrive in does not matter
    entries = [AdminEntry(s, t, o) for s, t, o in [(DRAIN, 5, "a"), (MAINT, 7, "b"), (READY, 6, "c")]]
    for order in (entries, entries[::-1], entries[1:] + entries[:1]):
        held = AdminStates()
        for e in order:
            held.merge("eu", e)
        assert held.get("eu") == entries[1]


def test_merge_all_ignores_unknown_regions() -> None:
    states = AdminStates()
    assert states.merge_all({"eu": AdminEntry(DRAIN, 1, "a"), "mars": AdminEntry(DRAIN, 1, "a")}, ["eu"]) == ["eu"]
    assert list(states) == ["eu"]
    assert repr(states) == "<AdminStates [eu=drain]>"


def test_state_file_round_trip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "admin_state.json"
    assert list(admin_state.load(path, ["eu"])) == []
    states = AdminStates()
    states.set("eu", DRAIN, 50.0, "a")
    states.set("us", MAINT, 60.0, "b")
    admin_state.save(path, states)
    assert json.loads(path.read_text())["version"] == 1
    loaded = admin_state.load(path, ["eu", "us"])
    assert loaded.get("eu") == AdminEntry(DRAIN, 50.0, "a")
    assert loaded.state("us") is MAINT
    assert list(admin_state.load(path, ["eu"])) == ["eu"]        # a region no longer configured: dropped
    assert [p.name for p in tmp_path.iterdir()] == ["admin_state.json"]      # no temporary left behind


def test_save_is_atomic_a_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "admin_state.json"
    states = AdminStates()
    states.set("eu", DRAIN, 1.0, "a")
    admin_state.save(path, states)
    before = path.read_text()
    states.set("eu", READY, 2.0, "a")

    def full_disk(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        admin_state.save(path, states)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["admin_state.json"]      # the temporary removed


@pytest.mark.parametrize(("text", "where"), [
    ("{not json", "<top>: not valid JSON"),
    ('{"version": 2, "regions": {}}', "version: expected"),
    ('{"version": 1}', "regions: expected"),
    ('{"version": 1, "regions": {"eu": {"state": "off", "at": 1, "origin": "a"}}}', "regions.eu.state: must be"),
    ('{"version": 1, "regions": {"eu": {"state": "drain", "at": -1, "origin": "a"}}}', "regions.eu.at: expected"),
    ('{"version": 1, "regions": {"eu": {"state": "drain", "at": 1, "origin": ""}}}', "regions.eu.origin"),
    ('{"version": 1, "regions": {"eu": {"state": "drain", "at": 1, "origin": "a", "x": 1}}}', "regions.eu.x"),
    ('{"version": 1, "regions": {"eu": 5}}', "regions.eu: expected an object"),
])
def test_a_corrupt_state_file_is_an_error_naming_file_key_and_reason(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "admin_state.json"
    path.write_text(text)
    with pytest.raises(StateFileError) as info:
        admin_state.load(path, ["eu"])
    assert str(info.value).startswith(f"{path}: {where}")
    assert isinstance(info.value, ConfigError)


def test_an_unreadable_or_huge_state_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(StateFileError, match="cannot read"):
        admin_state.load(tmp_path / "dir", ["eu"])
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (admin_state.MAX_FILE_BYTES + 1))
    with pytest.raises(StateFileError, match="larger than"):
        admin_state.load(big, ["eu"])


def test_entries_from_json_checks_only_known_regions() -> None:
    assert entries_from_json({"eu": {"state": "drain", "at": 1, "origin": "a"}, "mars": "junk"}, ["eu"]) == {
        "eu": AdminEntry(DRAIN, 1.0, "a")}
    with pytest.raises(ValueError, match="admin: expected an object"):
        entries_from_json([], ["eu"])


# -- the node: reports in, ballots and admin entries out -----------------------------------------
def _settings(tmp_path: Path, peers: dict[str, Any] | None) -> Any:
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    if peers is not None:
        data["peers"] = peers
    path = tmp_path / "gslb.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_node_takes_reports_merges_admin_entries_and_votes(tmp_path: Path) -> None:
    config = _settings(tmp_path, {"name": "a", "interval": "1s", "servers": {
        "a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2", "c": "http://127.0.0.1:3"}})
    assert config.peers.servers == (Peer("b", "http://127.0.0.1:2"), Peer("c", "http://127.0.0.1:3"))
    node = PeerNode(config.peers, AdminStates())
    regions = ["us-east", "eu-central"]
    up = {"up": True, "since": 0, "rtt_ms": 1, "probes": 1, "fresh": True}
    drain = {"eu-central": {"state": "drain", "at": 5, "origin": "b"}}
    changed = node.take_report("b", {"server": "b", "regions": {"us-east": up}, "admin": drain}, 10.0, regions)
    assert changed == ["eu-central"]
    assert node.admin.state("eu-central") is DRAIN
    node.take_report("c", {"server": "not-c", "regions": {"us-east": up}}, 10.0, regions)
    assert node.mismatched == {"c": "not-c"}
    own = {"us-east": Verdict(False, 0, None, 1), "eu-central": Verdict(True, 0, None, 1)}
    assert node.revote(own, 10.5)
    assert node.voted_up("us-east") is True
    assert node.disagreeing() == ["us-east"]
    assert not node.revote(own, 10.6)                   # nothing changed
    assert node.reachable(12.0) == ["b", "c"]
    assert not node.alone(12.0)
    assert node.alone(13.1)                             # 3 intervals later: nobody fresh
    assert node.revote(own, 13.1)
    assert node.voted_up("us-east") is False
    view = node.peers_view(11.0, own)
    assert view[0]["name"] == "b"
    assert view[0]["agrees"] == {"us-east": False}
    assert view[0]["age"] == 1.0
    assert view[1]["says_it_is"] == "not-c"
    with pytest.raises(ReportError):
        node.take_report("b", {"server": "b"}, 11.0, regions)
    with pytest.raises(ReportError, match="this server itself"):       # our own URL under another name
        node.take_report("b", {"server": "a", "regions": {"us-east": up}}, 11.0, regions)
    assert node.reports["b"].received_at == 10.0
    assert node.report(own)["admin"]["eu-central"]["state"] == "drain"
    node.configure(_settings(tmp_path, {"name": "a", "servers": {"b": "http://127.0.0.1:2"}}).peers)
    assert list(node.reports) == ["b"]


@pytest.mark.parametrize(("peers", "message"), [
    ({"servers": {"b": "ftp://x"}}, "peers.servers.b: expected the peer's admin URL"),
    ({"servers": {"b": "http://x:1", "c": "http://x:1/"}}, "peers.servers.c: same URL as 'b'"),
    ({"servers": ["http://x:1"]}, "peers.servers: expected a mapping"),
    ({"servers": {"b": "http://x:1"}, "policy": "most"}, "peers.policy: must be one of"),
    ({"policies": {"mars": "any_up"}}, "peers.policies.mars: no region named 'mars'"),
    ({"policies": {"us-east": "some"}}, "peers.policies.us-east: must be one of"),
    ({"interval": "1ms"}, "peers.interval: must be >="),
    ({"max_response_bytes": 10}, "peers.max_response_bytes: must be >="),
    ({"servres": {}}, "peers.servres: unknown key (did you mean 'servers'?)"),
])
def test_peers_config_errors_name_the_key(tmp_path: Path, peers: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(tmp_path, peers)
    assert message in str(info.value)


def test_peers_config_defaults_and_token(tmp_path: Path) -> None:
    config = _settings(tmp_path, None)
    assert config.peers.servers == ()
    assert config.peers.name == "127.0.0.1:8053"
    assert config.admin.state_file == tmp_path / "admin_state.json"
    config = _settings(tmp_path, {"servers": {"b": "http://127.0.0.1:2/"}, "token": "peer-secret",
                                  "interval": "200ms", "policy": "any_up", "policies": {"us-east": "all_up"}})
    p = config.peers
    assert (p.token, p.interval, p.timeout, p.policy) == ("peer-secret", 0.2, 0.2, Policy.ANY_UP)
    assert p.policy_map() == {"us-east": Policy.ALL_UP}
    assert p.servers[0].url == "http://127.0.0.1:2"
    assert "peer-secret" not in repr(p)
    data = gslb_config(tmp_path, dns_port=5353, admin_port=8053, lbs=None)
    del data["admin"]["token"]
    data["peers"] = {"servers": {"b": "http://127.0.0.1:2"}}
    (tmp_path / "gslb.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"peers\.token: peers need a shared token"):
        load_config(tmp_path / "gslb.yaml")


def test_merge_all_ignores_entries_stamped_far_ahead_of_our_clock() -> None:
    states = AdminStates()
    far = AdminEntry(DRAIN, 1e12, "z")
    assert states.merge_all({"eu": far}, ["eu"], not_after=1000.0 + admin_state.MAX_AHEAD) == []
    assert states.merge_all({"eu": AdminEntry(DRAIN, 1500.0, "z")}, ["eu"], not_after=1000.0 + 3600) == ["eu"]


def test_a_node_without_peers_is_not_alone(tmp_path: Path) -> None:
    node = PeerNode(_settings(tmp_path, None).peers, AdminStates())
    assert not node.alone(0.0)
    assert node.reachable(0.0) == []
    assert node.peers_view(0.0, {}) == []


@given(st.lists(st.tuples(st.sampled_from(list(AdminState)), st.integers(0, 5), st.sampled_from("abc")),
                min_size=1, max_size=8), st.randoms())
def test_every_order_of_merging_ends_with_the_latest_entry(items: list[tuple[AdminState, int, str]],
                                                         rng: Any) -> None:
    """Servers that saw the same entries in any order hold the same one: the latest (at, origin)."""
    entries = [AdminEntry(state, float(at), origin) for state, at, origin in items]
    shuffled = list(entries)
    rng.shuffle(shuffled)
    held = [AdminStates(), AdminStates()]
    for states, order in zip(held, (entries, shuffled), strict=True):
        for entry in order:
            states.merge("eu", entry)
    latest = max(entries, key=lambda e: (e.at, e.origin))
    assert held[0].get("eu").at == held[1].get("eu").at == latest.at
    assert held[0].get("eu").origin == held[1].get("eu").origin == latest.origin
