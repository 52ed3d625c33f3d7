"""Helpers for the DNS core tests: a fake ServiceSteering, a zone config, query builders."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype

from gslb.common.configload import Section
from gslb.dns.responder import Responder
from gslb.dns.zone import Zone, load_zones
from gslb.steering.base import Decision, IPAddress, ServiceAnswer

ZONES_YAML = """
zones:
  example.test:
    ttl: 3600
    soa: {{mname: ns1.example.test, rname: hostmaster.example.test, serial: 2026112401,
          refresh: 3600, retry: 600, expire: 1209600, minimum: 60}}
    ns: [ns1.example.test, ns2.example.test]
    records:
      "@":   {{MX: ["10 mail.example.test."], TXT: ["v=spf1 -all"], CAA: ['0 issue "letsencrypt.org"']}}
      ns1:   {{A: [127.0.0.1], AAAA: ["::1"]}}
      ns2:   {{A: [127.0.0.2]}}
      mail:  {{A: [127.0.0.25]}}
      app:   {{CNAME: www}}
      app2:  {{CNAME: app}}
      static-alias: {{CNAME: mail}}
      outside: {{CNAME: www.elsewhere.invalid.}}
      loop1: {{CNAME: loop2}}
      loop2: {{CNAME: loop1}}
      dangling: {{CNAME: nothing-here}}
      sub:   {{NS: [ns.sub.example.test., ns.other.invalid.]}}
      ns.sub: {{A: [127.0.0.53]}}
      "*.wild": {{A: [127.0.0.9]}}
      _acme.www: {{TXT: ["token"]}}
      a.b.ent: {{A: [127.0.0.10]}}
      srv: {{SRV: ["10 5 443 mail"]}}
      ptr: {{PTR: [mail]}}
      txtlong: {{TXT: ["{}"]}}
      big: {{A: [{}]}}
      ttl-override: {{ttl: 60, A: [127.0.0.7]}}
  other.test:
    ttl: 300
    soa: {{mname: ns1.example.test, rname: hostmaster.example.test, minimum: 900}}
    ns: [ns1.example.test]
    records:
      alias: {{CNAME: www.example.test.}}
""".format("x" * 600, ", ".join(f"127.1.{i // 250}.{i % 250 + 1}" for i in range(100)))


def load_test_zones(text: str = ZONES_YAML) -> tuple[Zone, ...]:
    root = Section.from_yaml_text(text, file="test.yaml")
    return load_zones(root.section("zones"))


@dataclass
class FakeSteering:
    """Answers services from a table; records every call; `generation` is set by the test."""

    services: dict[str, ServiceAnswer] = field(default_factory=dict)
    generation: int = 1
    data_generation: int | None = None
    calls: list[tuple[str, IPAddress | None, int | None, float]] = field(default_factory=list)
    fail: bool = False

    def is_service(self, name: str) -> bool:
        return name in self.services

    def answer(self, name: str, client: IPAddress | None, source_prefix: int | None,
               now: float) -> ServiceAnswer:
        self.calls.append((name, client, source_prefix, now))
        if self.fail:
            raise RuntimeError("steering exploded")
        return self.services[name]

    def fast_answer(self, name: str, version: int, value: int, source_prefix: int | None) -> ServiceAnswer | None:
        return None         # no compiled table: every miss takes `answer`


def service_answer(v4: tuple[str, ...] = ("192.0.2.1",), v6: tuple[str, ...] = ("2001:db8::1",), *,
                   ttl: int = 30, scope: int = 24, regions: tuple[str, ...] = ("eu",),
                   all_down: bool = False, cname: str | None = None, negative_ttl: int | None = None,
                   cache_for: float = 10.0, service: str = "www") -> ServiceAnswer:
    decision = Decision(service=service, policy="geo", regions=regions, ttl=ttl, scope_prefix=scope,
                        all_down=all_down)
    return ServiceAnswer(v4=v4, v6=v6, ttl=ttl, scope_prefix=scope, decision=decision, cname=cname,
                         negative_ttl=negative_ttl, cache_for=cache_for)


def default_steering() -> FakeSteering:
    return FakeSteering(services={
        "www.example.test": service_answer(),
        "v4only.example.test": service_answer(v6=(), regions=("us",), service="v4only"),
        "down.example.test": service_answer(v4=(), v6=(), negative_ttl=5, all_down=True, regions=(),
                                            service="down"),
        "moved.example.test": service_answer(cname="fallback.elsewhere.invalid.", all_down=True,
                                             regions=(), service="moved"),
        "weighted.example.test": service_answer(cache_for=0.0, regions=("eu", "us"), service="weighted"),
    })


def make_responder(steering: FakeSteering | None = None, **kwargs: object) -> tuple[Responder, FakeSteering]:
    steering = steering if steering is not None else default_steering()
    return Responder(load_test_zones(), steering, **kwargs), steering  # type: ignore[arg-type]


CLIENT = ipaddress.IPv4Address("198.51.100.7")


def query(name: str, rdtype: str = "A", *, ecs: str | None = None, edns: int | None = 0,
          payload: int = 1232, qid: int = 4242, rd: bool = True) -> bytes:
    options = []
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    msg = dns.message.make_query(name, rdtype, use_edns=edns if edns is not None else False,
                                 payload=payload, options=options or None)
    msg.id = qid
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg.to_wire()


def ask(responder: Responder, data: bytes, client: IPAddress = CLIENT, now: float = 1000.0,
        tcp: bool = False) -> dns.message.Message:
    reply = responder.respond(data, client, now, tcp=tcp)
    assert reply is not None
    return dns.message.from_wire(reply)


def records(section: list) -> list[str]:
    """'name ttl TYPE rdata' lines of a dnspython message section, sorted."""
    return sorted(f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
                  for rrset in section for rd in rrset)
