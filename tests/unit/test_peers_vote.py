"""The vote (gslb/peers/vote.py): every policy over counted votes, freshness, parsing peers' reports."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gslb.peers.vote import (
    FRESH_INTERVALS,
    SELF,
    PeerReport,
    Policy,
    ReportError,
    Verdict,
    decide,
    parse_report,
    vote,
)

UP = Verdict(True, 100.0, 1.0, 10)
DOWN = Verdict(False, 100.0, None, 10)
ASSUMED_UP = Verdict(True, 0.0, None, 0, fresh=False)


def report(server: str, at: float, **verdicts: Verdict) -> PeerReport:
    return PeerReport(server, at, verdicts)


# -- the policy table, every (policy, ups, downs) up to five voters ------------------------------
@pytest.mark.parametrize(("policy", "ups", "downs"),
                         [(p, u, d) for p in Policy for u, d in itertools.product(range(6), range(6)) if u + d])
def test_policy_table(policy: Policy, ups: int, downs: int) -> None:
    expected = {Policy.QUORUM: downs <= ups,          # down only on a strict majority of downs
                Policy.ANY_UP: ups >= 1,
                Policy.ALL_UP: downs == 0}[policy]
    assert decide(policy, ups, downs) is expected


def test_one_server_that_loses_its_path_is_outvoted() -> None:
    ballots = vote({"eu": DOWN}, {"b": report("b", 10.0, eu=UP), "c": report("c", 10.0, eu=UP)}, now=10.5,
                   interval=0.2)
    ballot = ballots["eu"]
    assert ballot.up
    assert not ballot.own_up
    assert ballot.disagrees
    assert (ballot.up_votes, ballot.down_votes, ballot.voters) == (2, 1, (SELF, "b", "c"))
    assert not ballot.alone


def test_a_majority_down_takes_the_region_down_everywhere() -> None:
    ballots = vote({"eu": UP}, {"b": report("b", 10.0, eu=DOWN), "c": report("c", 10.0, eu=DOWN)}, 10.0, 1.0)
    assert not ballots["eu"].up
    assert ballots["eu"].disagrees


def test_two_servers_split_one_one_stay_up_under_quorum() -> None:
    assert vote({"eu": DOWN}, {"b": report("b", 0.0, eu=UP)}, 0.0, 1.0)["eu"].up
    assert not vote({"eu": DOWN}, {"b": report("b", 0.0, eu=UP)}, 0.0, 1.0, {"eu": Policy.ALL_UP})["eu"].up
    assert vote({"eu": DOWN}, {"b": report("b", 0.0, eu=DOWN)}, 0.0, 1.0, default=Policy.ANY_UP)["eu"].up is False


def test_per_region_policy_overrides_the_default() -> None:
    own = {"eu": DOWN, "us": DOWN}
    peers = {"b": report("b", 0.0, eu=UP, us=UP)}
    ballots = vote(own, peers, 0.0, 1.0, {"us": Policy.ALL_UP}, default=Policy.ANY_UP)
    assert ballots["eu"].up
    assert ballots["eu"].policy is Policy.ANY_UP
    assert not ballots["us"].up
    assert ballots["us"].policy is Policy.ALL_UP


def test_a_report_older_than_three_intervals_does_not_vote() -> None:
    interval = 2.0
    peers = {"b": report("b", 0.0, eu=UP), "c": report("c", 0.0, eu=UP)}
    fresh = vote({"eu": DOWN}, peers, FRESH_INTERVALS * interval, interval)["eu"]
    assert fresh.up
    assert not fresh.alone
    stale = vote({"eu": DOWN}, peers, FRESH_INTERVALS * interval + 0.001, interval)["eu"]
    assert not stale.up
    assert stale.alone
    assert stale.voters == (SELF,)


def test_alone_the_own_view_decides_whatever_the_policy() -> None:
    for policy in Policy:
        assert vote({"eu": DOWN}, {}, 0.0, 1.0, default=policy)["eu"].up is False
        assert vote({"eu": UP}, {}, 0.0, 1.0, default=policy)["eu"].up is True


def test_verdicts_not_fresh_do_not_vote() -> None:
    # our own assumed state (not probed yet) does not vote when a peer has probed
    ballot = vote({"eu": ASSUMED_UP}, {"b": report("b", 0.0, eu=DOWN)}, 0.0, 1.0)["eu"]
    assert not ballot.up
    assert ballot.voters == ("b",)
    # nobody has probed: the assumed state stands
    ballot = vote({"eu": ASSUMED_UP}, {"b": report("b", 0.0, eu=Verdict(False, 0, None, 0, False))}, 0.0, 1.0)["eu"]
    assert ballot.up
    assert ballot.voters == ()
    assert ballot.alone


def test_a_peer_without_a_verdict_for_the_region_does_not_vote_on_it() -> None:
    ballot = vote({"eu": DOWN}, {"b": report("b", 0.0, us=UP)}, 0.0, 1.0)["eu"]
    assert not ballot.up
    assert ballot.alone


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 20)), max_size=6), st.booleans(),
       st.sampled_from(list(Policy)))
def test_vote_is_the_policy_over_the_fresh_verdicts(peers: list[tuple[bool, bool, float]], own_up: bool,
                                                   policy: Policy) -> None:
    """Against the obvious form: count fresh votes, apply the table."""
    interval, now = 2.0, 20.0
    reports = {f"p{i}": report(f"p{i}", at, eu=Verdict(up, 0.0, None, 1, fresh))
               for i, (up, fresh, at) in enumerate(peers)}
    ballot = vote({"eu": Verdict(own_up, 0.0, None, 1)}, reports, now, interval, default=policy)["eu"]
    counted = [own_up] + [up for up, fresh, at in peers if fresh and now - at <= FRESH_INTERVALS * interval]
    assert ballot.up is decide(policy, sum(counted), len(counted) - sum(counted))
    assert ballot.alone is (len(counted) == 1)


# -- parsing peers' reports ---------------------------------------------------------------------
GOOD: dict[str, Any] = {"server": "b", "interval": 0.5, "regions": {
    "eu": {"up": True, "since": 1.0, "rtt_ms": 2.5, "probes": 3, "fresh": True},
    "mars": {"anything": "ignored: not a region of ours"}}}


def test_parse_report_keeps_only_known_regions_and_round_trips() -> None:
    got = parse_report(json.loads(json.dumps(GOOD)), 7.0, ["eu", "us"])
    assert got.server == "b"
    assert got.received_at == 7.0
    assert got.interval == 0.5
    assert dict(got.verdicts) == {"eu": Verdict(True, 1.0, 2.5, 3, True)}
    assert Verdict.from_json(got.verdicts["eu"].to_json(), "x") == got.verdicts["eu"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(server=""), "'server'"),
    (lambda d: d.update(server=5), "'server'"),
    (lambda d: d.update(interval=0), "'interval'"),
    (lambda d: d.update(interval=float("nan")), "'interval'"),
    (lambda d: d.update(regions=[]), "'regions'"),
    (lambda d: d["regions"].update(eu=[]), "regions.eu: expected an object"),
    (lambda d: d["regions"]["eu"].update(up="yes"), "regions.eu: 'up'"),
    (lambda d: d["regions"]["eu"].update(since=None), "regions.eu.since"),
    (lambda d: d["regions"]["eu"].update(rtt_ms=-1), "regions.eu.rtt_ms"),
    (lambda d: d["regions"]["eu"].update(probes=True), "regions.eu.probes"),
])
def test_parse_report_names_what_is_wrong(mutate: Any, message: str) -> None:
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    with pytest.raises(ReportError, match=message.replace("[", r"\[")):
        parse_report(data, 0.0, ["eu"])


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=4), max_leaves=20))
def test_parse_report_any_json_is_a_report_or_a_report_error(data: Any) -> None:
    with contextlib.suppress(ReportError):
        parse_report(data, 0.0, ["eu", ""])
