"""The `peers:` section of the GSLB config: the other servers of the NS set  [pure].

    peers:
      name: gslb-a                 # this server's name (default: its admin.listen address); it
                                   #   stamps drains set here and names it in peers' /api/peers
      servers:                     # name -> admin API base URL (http:// or https://); listing this
        gslb-a: http://10.0.0.1:8053  #   server's own name is allowed and skipped, so every server
        gslb-b: http://10.0.0.2:8053  #   can carry the same list
        gslb-c: http://10.0.0.3:8053
      token: ...                   # shared by the peers (or token_file); default: admin.token.
                                   #   Guards the /api/peers/* endpoints (verdicts, admin, latency)
      interval: 2s                 # how often peers' verdicts are pulled
      timeout: 1s                  # per request to a peer (default: the interval, at most 1s)
      policy: quorum               # quorum | any_up | all_up: gslb/peers/vote.py
      policies: {us-east: all_up}  # per-region policy, overriding `policy`
      max_response_bytes: 1048576  # a verdicts reply larger than this is refused (64 KiB..64 MiB)

Without `servers` the server votes alone (its own probes decide, as before) and still keeps
drains in the admin state file (`admin.state_file`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gslb.common.configload import Section
from gslb.peers.vote import POLICIES, Policy

DEFAULT_MAX_RESPONSE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    url: str                     # the admin API's base URL, without a trailing slash


@dataclass(frozen=True, slots=True)
class PeerSettings:
    name: str
    servers: tuple[Peer, ...] = ()
    token: str | None = field(default=None, repr=False)
    interval: float = 2.0
    timeout: float = 1.0
    policy: Policy = Policy.QUORUM
    policies: tuple[tuple[str, Policy], ...] = ()
    max_response_bytes: int = DEFAULT_MAX_RESPONSE

    def policy_map(self) -> dict[str, Policy]:
        return dict(self.policies)


def load_peers(sect: Section, *, default_name: str, default_token: str | None,
               regions: Collection[str]) -> PeerSettings:
    name = sect.take("name", str, default_name)
    if not name or len(name) > 255 or not name.isprintable():
        raise sect.error("name", "must be 1..255 printable characters")
    servers: list[Peer] = []
    listed = sect.section("servers")
    for peer_name in list(listed.data):
        url = listed.take(peer_name, str)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise listed.error(peer_name, f"expected the peer's admin URL (http://host:port), got {url!r}")
        same = [p.name for p in servers if p.url == url.rstrip("/")]
        if same:
            raise listed.error(peer_name, f"same URL as {same[0]!r}: one server would vote twice")
        if peer_name != name:
            servers.append(Peer(peer_name, url.rstrip("/")))
    listed.done()
    token = sect.take_token()
    if token is None:
        token = default_token
    if servers and token is None:
        raise sect.error("token", "peers need a shared token (peers.token, or admin.token)")
    interval = sect.take_duration("interval", 2.0, minimum=0.05)
    timeout = sect.take_duration("timeout", min(1.0, interval), minimum=0.01)
    policy = Policy(sect.take_choice("policy", POLICIES, Policy.QUORUM.value))
    per_region: list[tuple[str, Policy]] = []
    overrides = sect.section("policies")
    for region in list(overrides.data):
        if region not in regions:
            overrides.record(overrides.error(region, f"no region named {region!r}"))
            overrides.take(region, str)
            continue
        per_region.append((region, Policy(overrides.take_choice(region, POLICIES, policy.value))))
    overrides.done()
    max_bytes = sect.take_number("max_response_bytes", DEFAULT_MAX_RESPONSE, minimum=64 * 1024,
                                 maximum=64 * 1024 * 1024, integer=True)
    sect.done()
    return PeerSettings(name, tuple(servers), token, interval, timeout, policy, tuple(per_region), max_bytes)
