"""GSLB steering: which regions answer for a service, and why  [pure].

    base.py      the contract (Region, RegionState, Decision, ServiceAnswer, ServiceSteering)
    config.py    the `services` config section -> ServiceConfig
    core.py      Steering: locate, rank, filter, spill, all-down, TTL, ECS scope, decision cache
    geo.py geo_map.py latency.py failover.py weighted.py   one policy each
    spill.py     capacity spill (weighted rendezvous on the client network)
    distance.py  great-circle distance
    memo.py      Memo: the bounded two-generation memo behind every per-network cache
    table.py     the decision table compiled from the GeoIP database (geo, geo_map misses)
"""

from gslb.steering.core import Steering, SteeringError

__all__ = ["Steering", "SteeringError"]
