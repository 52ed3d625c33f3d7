"""Steering: from a client address to the regions of a service  [pure].

    Steering(regions, services, locator, latency, rng=None)
        .answer(name, client, source_prefix, now) -> ServiceAnswer     (the DNS core's call)
        .explain(name, client, source_prefix, now) -> Decision          (`gslb explain`)
        .update_region_states({region: RegionState})                    (probes, drain)
        .install_tables({TableSpec: GeoTable}), .table_specs()         (compiled tables, table.py)
        .fast_answer(name, version, value, source_prefix)               (the compiled path, integers)
        .generation                                                     (caches key on it)
        .data_generation           (latency data; answers of latency services carry the value they used)

One query:

  1. locate the client (GeoIP record: place + record network);
  2. rank the service's regions with its policy (geo, geo_map, latency, failover, weighted);
  3. keep the `count` best *eligible* ones (up and not drained); when the order is by
     distance (geo, and latency without measurements) and the nearest region is not eligible,
     its clients spill over the eligible regions in proportion to capacity, hashed on the
     client network (spill.py); with RTTs, the next-lowest RTT is used instead;
  4. none eligible: the service's all-down rule (fail_open = answer as if all were up);
  5. TTL: degraded_ttl when a chosen region is degraded or a drained region was skipped
     (or all are down), else ttl;
  6. ECS scope (RFC 7871): the widest prefix around the client with the same answer (below).

The answer depends on the client only through its *key network*: the GeoIP record network,
made longer where the policy needs it (latency data is per /24 or /48; a geo_map CIDR entry
may split a record). Decisions are cached by (service, key network); the cache is emptied
when region states change, and a latency service's entry is also dropped when the latency
table changed or its data went stale, so a query for a known network costs a GeoIP lookup and
a dict lookup. `decide` is the slow reference path the cache is tested against.
Every memo keyed by a network (decisions, widening steps, geo_map splits, geo choices) is a
two-generation `Memo` (memo.py) of at most `max_cache` entries (MAX_CACHE = 16,384: a decision
entry costs ~600 bytes, so ~10 MB; the locator's Location memo is bounded the same way): ECS
lets every query pick its client network, and memory must not follow the attacker's choice.

Invalidation for the DNS core's response cache is split in two: `generation` moves on health,
drain and reload (every answer may change); `data_generation` moves on every latency-table change
(an edge pushes RTTs every few seconds) and only answers of `latency` services depend on it: they
carry `ServiceAnswer.data_generation`, and the responder reuses them only while it is current.
Static, geo, geo_map, failover answers stay cached across latency pushes; a latency service's
answer changes with the very next query after an ingest (no staleness window).

ECS scope: start at the key network's prefix and widen while the sibling network is one
record of exactly that size whose answer is the same (at most MAX_WIDEN steps; computed once
per cache entry). Scope 0 when the answer does not depend on the client: failover, weighted,
a one-region service, an all-down answer that is not fail_open. Unlocated clients get their
own SOURCE prefix back (we cannot tell how far the "unknown" block reaches).

Compiled tables (table.py): `install_tables` gives geo and geo_map services (more than one region)
a table compiled from the GeoIP database, and latency services the geo table of their regions, used
while the latency table holds no RTT at all (their geo fallback: key network at least /24 or /48,
scope not below /23 or /47, as `_widen` gives it; the answers carry `data_generation`); `answer` then
serves them from it: one bisect gives the
record's chain (its ordered regions and the orders of the siblings ECS widening would merge with),
the choice for each order under the current region states is memoised per order, the merges per
chain, and one ServiceAnswer per (chain, record prefix), interned by content, until the states
change (`generation`). The answers are exactly `decide`'s, except the Decision's `location` and
`lines` (explain uses the reference path). A capacity spill (an order of the chain whose nearest
region is not eligible while another is) is answered from the table too, but per key network: the
chain's orders become a plan (a `_SpillOrder` for each spilling order: its eligible regions, and the
TTL rule of `_choose`), the client's own order hashes the text of its key network (the record;
latency: at least the /24 or /48 holding the client) and each sibling the widening checks hashes its
own network (the sibling's clients' key network), as `_choose` and `_widen` do. Those answers are
memoised per key network (SPILL_ANSWERS = 16,384 per service, cleared when full, emptied when the
states change) and interned by content like the others, so the DNS core's templates per answer object
stay few. Cases the table leaves to the path below: an unlocated client of a geo_map with CIDR
entries, a record a CIDR entry splits, the IPv4 subtree seen from IPv6 (::/96 and the builder's
aliases), and a latency service once any RTT is known. `fast_answer(name, version, value, source)`
is the same for a client given as integers (the responder's compiled miss path).

The miss path (a network not in the decision cache) is designed, not hoped for: network math
on integers (no ipaddress parsing or formatting unless a spill hash or an explanation needs the
text); a geo service's choice memoised per (service, lat, lon); each widening step's outcome
memoised per (service, sibling network) for policies that do not read latency data; siblings
located with the locator's optional `locate_exact(address, prefix)` (MaxMindLocator), which builds
no Location for a record of another size. The memos are emptied with the decision cache when
region states change; `decide` and `explain` use none of them (the reference path).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gslb.geoip import GeoLocator, Location, network_from_int, unmap
from gslb.latency_table import V4_PREFIX, V6_PREFIX, LatencyTable
from gslb.steering import failover, geo, geo_map, latency, spill, weighted
from gslb.steering.base import Decision, IPAddress, Region, RegionState, ServiceAnswer
from gslb.steering.config import ServiceConfig
from gslb.steering.memo import Memo
from gslb.steering.table import SLOW, UNLOCATED, GeoTable, TableSpec, table_spec

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_WIDEN = 8
_bisect_right = bisect.bisect_right
MAX_CACHE = 16_384
COMPILED_ANSWERS = 65_536     # answers kept per compiled service (chain id, prefix); cleared when full
SPILL_ANSWERS = 16_384        # spill answers kept per compiled service by key network; cleared when full
_UP = RegionState()


class SteeringError(Exception):
    """Steering was asked about something it does not know."""


class _Compiled:
    """A service answered from a compiled table, with its memos for the current region states."""

    __slots__ = ("answers", "choices", "data_generation", "generation", "has_cidr", "inline4", "interned", "latency",
                 "plans", "spills", "steps", "svc", "table", "v4")

    def __init__(self, svc: ServiceConfig, table: GeoTable) -> None:
        self.svc = svc
        self.table = table
        self.has_cidr = bool(table.spec.cidr)
        self.latency = svc.policy == "latency"     # the geo fallback: only while no RTT is known at all
        records = table.records4
        # what fast_answer's inline IPv4 lookup reads (starts, /16 index, prefixes, chain ids)
        self.v4: tuple[Sequence[int], Sequence[int], Sequence[int], Sequence[int]] = (
            records.starts, records.idx16 if records.idx16 is not None else (), records.prefix, table.chain_ids4)
        self.inline4 = not self.latency and records.idx16 is not None
        self.generation = -1
        self.data_generation = -1                   # latency: the latency table's generation of the memos
        self.choices: dict[int, _Outcome | _SpillOrder] = {}     # order id -> its choice, or how it spills
        self.steps: dict[int, tuple[_Outcome, int]] = {}  # chain id -> (choice, merges)
        # chain id -> each order's choice or spill: the chain's answer depends on the key network
        self.plans: dict[int, tuple[_Outcome | _SpillOrder, ...]] = {}
        self.answers: dict[int, ServiceAnswer] = {}     # chain id << 8 | prefix -> the answer
        self.spills: dict[int, ServiceAnswer] = {}      # a plan's answers by key network (bounded: SPILL_ANSWERS)
        self.interned: dict[tuple[object, ...], ServiceAnswer] = {}    # the distinct answers

    def reset(self, generation: int, data_generation: int = -1) -> None:
        self.generation = generation
        self.data_generation = data_generation
        self.choices = {}
        self.steps = {}
        self.plans = {}
        self.answers = {}
        self.spills = {}
        self.interned = {}


_Outcome = tuple[tuple[str, ...], int, bool]        # (chosen regions, ttl, all_down): what widening compares


class _SpillOrder:
    """A compiled order whose nearest region is not eligible (and another is), under the region states
    it was made for: its clients spill over the eligible regions by a hash of their key network.
    `pick` is `Steering._choose` with a spill key, less the explanation."""

    __slots__ = ("degraded", "degraded_ttl", "drained_before", "position", "spreader", "ttl")

    def __init__(self, svc: ServiceConfig, order: Sequence[str], states: Mapping[str, RegionState],
                 capacity: Mapping[str, float]) -> None:
        eligible = [r for r in order if states.get(r, _UP).up and not states.get(r, _UP).drained]
        self.spreader = spill.Spreader(eligible, capacity, svc.count)
        self.ttl, self.degraded_ttl = svc.ttl, svc.degraded_ttl
        self.position = {r: i for i, r in enumerate(order)}
        self.degraded = frozenset(r for r in order if states.get(r, _UP).degraded)
        drained = [states.get(r, _UP).drained for r in order]
        self.drained_before = [any(drained[:i]) for i in range(len(order))]     # a drained region skipped

    def pick(self, key_text: str) -> _Outcome:
        chosen = self.spreader.first(key_text)
        last = max(self.position[r] for r in chosen)
        degraded = self.drained_before[last] or any(r in self.degraded for r in chosen)
        return chosen, self.degraded_ttl if degraded else self.ttl, False


@dataclass(frozen=True, slots=True)
class _Choice:
    """The client-dependent part of a decision (what the cache and the scope compare)."""

    regions: tuple[str, ...]
    ttl: int
    all_down: bool
    lines: tuple[str, ...]
    valid_until: float          # the latency data it used goes stale then (inf otherwise)


@functools.lru_cache(maxsize=65536)
def _network(version: int, value: int, prefix: int) -> IPNetwork:
    """The /prefix network holding the address `value` (memoised: ipaddress is slow to build)."""
    return network_from_int(version, value, prefix)


_NO_MERGE: tuple[object, ...] = ("cannot merge",)     # a sibling _widen must stop at


def _state_word(state: RegionState) -> str:
    if not state.up:
        return "DOWN"
    if state.drained:
        return "drained"
    return "degraded" if state.degraded else "up"


class Steering:
    """Implements gslb.steering.base.ServiceSteering."""

    def __init__(self, regions: Mapping[str, Region], services: Mapping[str, ServiceConfig],
                 locator: GeoLocator, latency: LatencyTable, *, rng: random.Random | None = None,
                 max_cache: int = MAX_CACHE, tables: Mapping[TableSpec, GeoTable] | None = None) -> None:
        for svc in services.values():
            for name in svc.regions:
                if name not in regions:
                    raise SteeringError(f"service {svc.name}: unknown region {name!r}")
        self._regions = dict(regions)
        self._services = dict(services)
        self._locator = locator
        # locate only if the record is exactly /prefix (MaxMindLocator then builds no Location for
        # siblings that cannot be merged)
        self._locate_exact = locator.locate_exact
        self._latency = latency
        self._rng = rng if rng is not None else random.Random()
        self._states: dict[str, RegionState] = {name: _UP for name in regions}
        self._own_generation = 0
        self._capacity = {name: r.capacity for name, r in regions.items()}
        # key -> (answer, valid until, latency generation it was computed at; 0 if not latency)
        # Every memo keyed by client or record network is a bounded two-generation Memo (memo.py):
        # ECS lets the client choose the network, so these keys are the attacker's to pick.
        self._cache: Memo[tuple[object, ...], tuple[ServiceAnswer, float, int]] = Memo(max_cache)
        self._cache_generation = -1
        self._max_cache = max_cache
        self._unsplit: Memo[tuple[str, IPNetwork], bool] = Memo(max_cache)   # geo_map: record not split by a CIDR
        # Memos valid while the region states are unchanged (emptied with the decision cache);
        # none of them depends on latency data (latency services do not use them):
        self._choices: Memo[tuple[object, ...], tuple[_Choice, str]] = Memo(max_cache)   # geo: per (service, place)
        self._siblings: Memo[tuple[str, int, int, int], tuple[object, ...]] = Memo(max_cache)   # _widen steps
        self._addresses: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.compiled_answers = 0       # answered from a compiled table (no GeoIP lookup)
        self._compiled: dict[str, _Compiled] = {}
        if tables:
            self.install_tables(tables)

    # -- the contract -----------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Health, drain and reload changes: every answer may move (caches drop everything)."""
        return self._own_generation

    @property
    def data_generation(self) -> int:
        """Latency data changes: only answers carrying `data_generation` (latency services) may move."""
        return self._latency.generation

    def is_service(self, name: str) -> bool:
        return name in self._services

    @property
    def services(self) -> Mapping[str, ServiceConfig]:
        return self._services

    def update_region_states(self, states: Mapping[str, RegionState]) -> None:
        new = {name: states.get(name, _UP) for name in self._regions}
        if new != self._states:
            self._states = new
            self._own_generation += 1

    def region_states(self) -> dict[str, RegionState]:
        return dict(self._states)

    def answer(self, name: str, client: IPAddress | None, source_prefix: int | None,
               now: float) -> ServiceAnswer:
        svc = self._services.get(name)
        if svc is None:
            raise SteeringError(f"not a service: {name!r}")
        if self._own_generation != self._cache_generation:     # health, drain: everything may move
            self._cache.clear()
            self._choices.clear()
            self._siblings.clear()
            self._cache_generation = self._own_generation
        policy = svc.policy
        if policy == "weighted":
            return self._weighted(svc)
        if client is not None and client.version == 6:
            client = unmap(client)
        if client is not None:
            compiled = self._compiled.get(name)
            if compiled is not None:
                fast = self._compiled_answer(compiled, client.version, int(client), source_prefix)
                if fast is not None:
                    return fast
        if client is None or policy == "failover" or len(svc.regions) == 1:   # _client_independent
            key: tuple[object, ...] = (name,)
            loc = None
        else:
            loc = self._locator.locate(client)
            kp = loc.prefix_len if policy == "geo" and loc is not None else self._key_prefix(svc, client, loc)
            masked = None if kp is None else int(client) >> (client.max_prefixlen - kp)
            if loc is None:
                key = (name, client.version, masked, kp, source_prefix)
            else:
                key = (name, client.version, masked, kp)
        # latency data changes only invalidate latency services' entries (checked per entry)
        data_generation = self._latency.generation if policy == "latency" else 0
        entry = self._cache.get(key)
        if entry is not None and now < entry[1] and entry[2] == data_generation:
            self.cache_hits += 1
            if entry[1] != math.inf and entry[0].cache_for > entry[1] - now:
                return replace(entry[0], cache_for=entry[1] - now)     # latency data ages
            return entry[0]
        self.cache_misses += 1
        answer, valid_until = self._compute(svc, client, loc, source_prefix, now, memo=True)
        self._cache.put(key, (answer, valid_until, data_generation))
        return answer

    # -- the compiled tables (table.py) ---------------------------------------------------
    def install_tables(self, tables: Mapping[TableSpec, GeoTable]) -> int:
        """Answer the misses of every service whose table is in `tables` from it (a swap: queries in
        flight finish on the old mapping). Returns how many services use a table. The answers do not
        change (the tables give the reference path's answers), so no generation moves."""
        compiled = {}
        for name, svc in self._services.items():
            spec = table_spec(svc, self._regions)
            table = tables.get(spec) if spec is not None else None
            if table is not None:
                compiled[name] = _Compiled(svc, table)
        self._compiled = compiled
        return len(compiled)

    def table_specs(self) -> list[TableSpec]:
        """The distinct tables this configuration's services can use."""
        specs = (table_spec(svc, self._regions) for svc in self._services.values())
        return list(dict.fromkeys(spec for spec in specs if spec is not None))

    @property
    def compiled_services(self) -> tuple[str, ...]:
        return tuple(self._compiled)

    def fast_answer(self, name: str, version: int, value: int, source_prefix: int | None) -> ServiceAnswer | None:
        """`answer` for a client given as integers (already unmapped and masked to its SOURCE prefix)
        when the service has a compiled table and the table can answer; None: call `answer`."""
        compiled = self._compiled.get(name)
        if compiled is None:
            return None
        if version == 4 and compiled.inline4 and compiled.generation == self._own_generation:
            # GeoTable.find for IPv4, inline (the miss path's one lookup)
            starts, idx16, prefixes, chains = compiled.v4
            h = value >> 16
            i = _bisect_right(starts, value, idx16[h], idx16[h + 1]) - 1
            if i >= 0:
                prefix = prefixes[i]
                if not (value - starts[i]) >> (32 - prefix):
                    chain = chains[i]
                    found = compiled.answers.get((chain << 8) | prefix)
                    if found is not None:
                        self.compiled_answers += 1
                        return found
                    plan = compiled.plans.get(chain)
                    if plan is not None:        # a spill: the answer is per key network
                        self.compiled_answers += 1
                        return self._spill_answer(compiled, plan, 4, value, prefix)
        elif version == 6 and value >> 32 == 0xFFFF:    # ::ffff:a.b.c.d is a.b.c.d (as `unmap`)
            version, value = 4, value & 0xFFFFFFFF
        return self._compiled_answer(compiled, version, value, source_prefix)

    def _compiled_answer(self, compiled: _Compiled, version: int, value: int,
                         source_prefix: int | None) -> ServiceAnswer | None:
        data_generation = -1
        if compiled.latency:
            if len(self._latency):          # RTTs are known somewhere: the reference path decides
                return None
            data_generation = self._latency.generation
        if compiled.generation != self._own_generation or compiled.data_generation != data_generation:
            compiled.reset(self._own_generation, data_generation)
        chain, prefix = compiled.table.find(version, value)
        if chain == UNLOCATED:
            if compiled.has_cidr:
                return None
            prefix = source_prefix or 0
        key = (chain << 8) | prefix
        if compiled.latency:
            key = (key << 1) | (version == 6)       # the latency floor (/24, /48) depends on the family
        found = compiled.answers.get(key)
        if found is None:
            if chain == SLOW:
                return None
            plan = compiled.plans.get(chain)
            if plan is None:
                found = self._compiled_outcome(compiled, chain, prefix, version)
                if found is None:
                    plan = compiled.plans[chain]
                else:
                    if len(compiled.answers) >= COMPILED_ANSWERS:
                        compiled.answers.clear()
                    compiled.answers[key] = found
            if plan is not None:
                found = self._spill_answer(compiled, plan, version, value, prefix)
        self.compiled_answers += 1
        return found

    def _order_choice(self, compiled: _Compiled, order_id: int) -> _Outcome | _SpillOrder:
        """(chosen regions, ttl, all_down) for a compiled order under the current states, or, when
        the nearest region is not eligible and another is, how its clients spill (by a hash of
        their key network: the choice is per network)."""
        found = compiled.choices.get(order_id)
        if found is not None:
            return found
        order, spillable = compiled.table.orders[order_id]
        result: _Outcome | _SpillOrder
        if spillable and not self._eligible(order[0]) and any(self._eligible(r) for r in order):
            result = _SpillOrder(compiled.svc, order, self._states, self._capacity)
        else:
            chosen, ttl, all_down, _ = self._choose(compiled.svc, list(order), None, [])
            result = (chosen, ttl, all_down)
        compiled.choices[order_id] = result
        return result

    def _compiled_outcome(self, compiled: _Compiled, chain: int, prefix: int, version: int) -> ServiceAnswer | None:
        """The answer for a record of `chain` and `prefix` (UNLOCATED: `prefix` is the SOURCE prefix),
        as `_compute` gives it; None when an order of the chain spills: the answer then depends on
        the key network, and the chain's plan is in `compiled.plans` (`_spill_answer` answers).

        latency (no RTT known: the geo order): the key network is at least the /24 (/48) the table
        measures; a record wider than that merges with nothing (scope /24), a narrower one merges
        like geo but not below /23 (/47): the last sibling checked must itself be a key network."""
        svc = compiled.svc
        floor = (V4_PREFIX if version == 4 else V6_PREFIX) if compiled.latency else 0
        if chain == UNLOCATED:
            order = list(svc.default_order) + [r for r in svc.regions if r not in svc.default_order] \
                if svc.policy != "geo_map" else list(svc.geo_map.default if svc.geo_map is not None else ())
            chosen, ttl, all_down, _ = self._choose(svc, order, None, [])
            scope = max(prefix, floor)
            where = "not located"
        else:
            steps = compiled.steps.get(chain)
            if steps is None:
                orders = compiled.table.chains[chain]
                plan = tuple(self._order_choice(compiled, o) for o in orders)
                own = plan[0]
                if isinstance(own, _SpillOrder):
                    compiled.plans[chain] = plan
                    return None
                count = 0
                for theirs in plan[1:]:
                    if isinstance(theirs, _SpillOrder):     # a sibling spills: it may or may not merge
                        compiled.plans[chain] = plan
                        return None
                    if theirs != own:
                        break
                    count += 1
                steps = compiled.steps[chain] = (own, count)
            (chosen, ttl, all_down), count = steps
            scope = floor if prefix < floor else max(prefix - count, floor - 1)
            where = "compiled table"
        return self._interned(compiled, chosen, ttl, all_down, scope, where)

    def _spill_answer(self, compiled: _Compiled, plan: tuple[_Outcome | _SpillOrder, ...], version: int,
                      value: int, prefix: int) -> ServiceAnswer:
        """The answer for a record (of `prefix`) whose chain spills, for the client address `value`:
        `_compute` with a spill key. The key network is the record (latency: at least the /24 or
        /48 holding the client); a spilling order hashes the key network's text, and each sibling
        the widening checks hashes its own network (the sibling is the key network of its clients).
        Memoised per key network in `compiled.spills` (at most SPILL_ANSWERS, cleared when full);
        the answer objects are interned by content like the others."""
        floor = (V4_PREFIX if version == 4 else V6_PREFIX) if compiled.latency else 0
        key_prefix = prefix if prefix >= floor else floor
        bits = 32 if version == 4 else 128
        masked = value >> (bits - key_prefix) << (bits - key_prefix)
        memo_key = (((masked << 8) | key_prefix) << 1) | (version == 6)
        found = compiled.spills.get(memo_key)
        if found is not None:
            return found
        first = plan[0]
        own = first.pick(spill.network_text(version, masked, key_prefix)) if isinstance(first, _SpillOrder) \
            else first
        scope = key_prefix
        if prefix >= floor:         # widen: each sibling checked is a record of exactly that size
            v = masked
            for theirs in plan[1:]:
                if scope < floor:   # latency: the sibling would not be a key network itself
                    break
                sibling = v ^ (1 << (bits - scope))
                if isinstance(theirs, _SpillOrder):
                    theirs = theirs.pick(spill.network_text(version, sibling, scope))
                if theirs != own:
                    break
                scope -= 1
                v &= sibling
        chosen, ttl, all_down = own
        found = self._interned(compiled, chosen, ttl, all_down, scope, "compiled table")
        if len(compiled.spills) >= SPILL_ANSWERS:
            compiled.spills.clear()
        compiled.spills[memo_key] = found
        return found

    def _interned(self, compiled: _Compiled, chosen: tuple[str, ...], ttl: int, all_down: bool, scope: int,
                  where: str) -> ServiceAnswer:
        """One ServiceAnswer object per distinct answer (the DNS core packs a reply once per answer
        object): the all-down rule's scope applied."""
        svc = compiled.svc
        if all_down and svc.all_down.action != "fail_open":
            scope = 0
        same = (chosen, ttl, all_down, scope, where)
        found = compiled.interned.get(same)
        if found is None:
            decision = Decision(svc.name, svc.policy, chosen, ttl, scope, all_down, where)
            found = compiled.interned[same] = self._package(
                svc, decision, compiled.data_generation if compiled.latency else None, float(ttl))
        return found

    def explain(self, name: str, client: IPAddress | None, source_prefix: int | None,
                now: float) -> Decision:
        """The decision `answer` would make, computed afresh, with how the client was located."""
        svc = self._services.get(name)
        if svc is None:
            raise SteeringError(f"not a service: {name!r}")
        if svc.policy == "weighted":
            return self._weighted(svc).decision
        if client is not None:
            client = unmap(client)
        loc = self._locator.locate(client) if client is not None else None
        answer, _ = self._compute(svc, client, loc, source_prefix, now, memo=False)
        if client is None:
            how = "no client address"
        else:
            how = f"ecs {client}/{source_prefix}" if source_prefix is not None else f"resolver {client}"
        return replace(answer.decision, location=f"{how} -> {answer.decision.location}")

    def decide(self, name: str, client: IPAddress | None, source_prefix: int | None,
               now: float) -> ServiceAnswer:
        """The reference path: no cache (tests compare `answer` with it)."""
        svc = self._services[name]
        if svc.policy == "weighted":
            return self._weighted(svc)
        if client is not None:
            client = unmap(client)
        loc = self._locator.locate(client) if client is not None and not self._client_independent(svc) \
            else None
        return self._compute(svc, client, loc, source_prefix, now, memo=False)[0]

    def __repr__(self) -> str:
        down = sum(1 for s in self._states.values() if not s.up)
        drained = sum(1 for s in self._states.values() if s.up and s.drained)
        return (f"<Steering {len(self._services)} services, {len(self._regions)} regions "
                f"[{down} down, {drained} drained], generation {self.generation}, {len(self._cache)} cached, "
                f"{len(self._compiled)} compiled>")

    # -- internals ----------------------------------------------------------------------
    @staticmethod
    def _client_independent(svc: ServiceConfig) -> bool:
        return svc.policy in ("failover", "weighted") or len(svc.regions) == 1

    def _key_prefix(self, svc: ServiceConfig, address: IPAddress, loc: Location | None) -> int | None:
        """The prefix over which the answer is constant (None: no constraint from the policy)."""
        prefix = loc.prefix_len if loc is not None else None
        if svc.policy == "latency":
            floor = V4_PREFIX if address.version == 4 else V6_PREFIX
            prefix = floor if prefix is None else max(prefix, floor)
        elif svc.policy == "geo_map" and svc.geo_map is not None and svc.geo_map.cidr:
            if loc is not None:
                memo_key = (svc.name, loc.network)
                unsplit = self._unsplit.get(memo_key)
                if unsplit is None:
                    unsplit = geo_map.key_prefix(svc.geo_map, loc.network.network_address,
                                                 loc.prefix_len) == loc.prefix_len \
                        and geo_map.key_prefix(svc.geo_map, loc.network.broadcast_address,
                                               loc.prefix_len) == loc.prefix_len
                    self._unsplit.put(memo_key, unsplit)
                if unsplit:         # no CIDR entry splits the record: its prefix it is
                    return prefix
            prefix = geo_map.key_prefix(svc.geo_map, address, 0 if prefix is None else prefix)
        return prefix

    def _eligible(self, name: str) -> bool:
        state = self._states.get(name, _UP)
        return state.up and not state.drained

    def _choose(self, svc: ServiceConfig, order: list[str], spill_key: tuple[int, int, int] | None,
                lines: list[str]) -> tuple[tuple[str, ...], int, bool, bool]:
        """(chosen regions, ttl, all_down, spilled) from a ranked order.

        `spill_key` is the client's key network as (version, value, prefix); it is formatted
        (the hash input) only when the nearest region is not eligible.
        """
        eligible = [r for r in order if self._eligible(r)]
        if not eligible:
            return tuple(order[: svc.count]), svc.degraded_ttl, True, False
        spilled = False
        if spill_key is not None and eligible[0] != order[0]:
            key_text = str(_network(*spill_key))
            eligible = spill.spread(key_text, eligible, self._capacity)
            lines.append(f"{order[0]} is not eligible: its clients spill over {', '.join(eligible)} "
                         f"by capacity (hash of {key_text})")
            spilled = True
        chosen = tuple(eligible[: svc.count])
        degraded = any(self._states.get(r, _UP).degraded for r in chosen)
        last = max(order.index(r) for r in chosen)
        skipped_drain = any(self._states.get(r, _UP).drained for r in order[:last])
        ttl = svc.degraded_ttl if degraded or skipped_drain else svc.ttl
        return chosen, ttl, False, spilled

    def _choice(self, svc: ServiceConfig, address: IPAddress | None, loc: Location | None,
                key_net: tuple[int, int, int] | None, now: float, memo: bool) -> tuple[_Choice, str]:
        """The policy's choice for a client, and the reason (for explain).

        A geo service's choice depends only on the place's coordinates (and the region states),
        unless the nearest region's clients spill (then on the key network too): it is memoised
        per (service, lat, lon) until the region states change (`memo`: the fast path).
        """
        if memo and svc.policy == "geo" and loc is not None and loc.lat is not None and loc.lon is not None \
                and len(svc.regions) > 1:
            memo_key = (svc.name, loc.lat, loc.lon)
            hit = self._choices.get(memo_key)
            if hit is not None:
                return hit
            choice, reason, spilled = self._choice_uncached(svc, address, loc, key_net, now)
            if not spilled:
                self._choices.put(memo_key, (choice, reason))
            return choice, reason
        choice, reason, _ = self._choice_uncached(svc, address, loc, key_net, now)
        return choice, reason

    def _choice_uncached(self, svc: ServiceConfig, address: IPAddress | None, loc: Location | None,
                         key_net: tuple[int, int, int] | None, now: float) -> tuple[_Choice, str, bool]:
        lines: list[str] = []
        valid_until = math.inf
        spill_key = key_net
        if svc.policy == "failover" or len(svc.regions) == 1:
            order, reason, spill_key = failover.rank(svc.regions), "fixed order", None
        elif svc.policy == "geo_map":
            assert svc.geo_map is not None
            ranked, reason = geo_map.rank(svc.geo_map, address, loc)
            order, spill_key = list(ranked), None
        else:   # geo, latency
            if loc is not None and loc.has_coordinates:
                assert loc.lat is not None
                assert loc.lon is not None
                by_km = geo.rank([self._regions[r] for r in svc.regions], loc.lat, loc.lon)
                km = dict(by_km)
                order, reason = [r for r, _ in by_km], "nearest first"
            else:
                km = {}
                order, reason = list(svc.default_order), "no location: default order"
                order += [r for r in svc.regions if r not in order]
                spill_key = None
            rtts: dict[str, float] = {}
            if svc.policy == "latency" and address is not None:
                rtts, valid_until = self._latency.lookup_detail(address, now, svc.latency_max_age)
                rtts = {r: v for r, v in rtts.items() if r in svc.regions}
                if rtts:
                    order = latency.rank(rtts, order)
                    reason = "lowest measured RTT first"
                    spill_key = None    # measured: the next-lowest RTT is the better second choice
                else:
                    reason += " (no fresh RTT)"
            for r in order:
                parts = [r]
                if r in rtts:
                    parts.append(f"rtt {rtts[r]:.1f} ms")
                if r in km:
                    parts.append(f"{km[r]:.0f} km")
                parts.append(_state_word(self._states.get(r, _UP)))
                lines.append("  ".join(parts))
        if svc.policy in ("failover", "geo_map") or len(svc.regions) == 1:
            lines.extend(f"{r}  {_state_word(self._states.get(r, _UP))}" for r in order)
        chosen, ttl, all_down, spilled = self._choose(svc, order, spill_key, lines)
        return _Choice(chosen, ttl, all_down, tuple(lines), valid_until), reason, spilled

    def _compute(self, svc: ServiceConfig, address: IPAddress | None, loc: Location | None,
                 source_prefix: int | None, now: float, *, memo: bool) -> tuple[ServiceAnswer, float]:
        """The answer and when it goes stale. `memo`: use the choice and widening memos (the
        cached path); without it every choice is computed afresh (`decide`, `explain`)."""
        independent = self._client_independent(svc)
        key_prefix = None if independent or address is None else self._key_prefix(svc, address, loc)
        key_net = None if key_prefix is None or address is None \
            else (address.version, int(address), key_prefix)
        choice, reason = self._choice(svc, address, loc, key_net, now, memo)
        rule = svc.all_down
        if independent or (choice.all_down and rule.action != "fail_open"):
            scope = 0
        elif loc is None or address is None or key_net is None:
            scope = max(source_prefix or 0, key_prefix or 0) if address is not None else 0
        else:
            scope = self._widen(svc, key_net, choice, now, memo)
        where = loc.describe() if loc is not None else "not located"
        decision = Decision(svc.name, svc.policy, choice.regions, choice.ttl, scope, choice.all_down,
                            f"{where}: {reason}", choice.lines)
        valid_until = choice.valid_until
        data_generation = self._latency.generation if svc.policy == "latency" else None
        cache_for = float(choice.ttl)
        if not math.isinf(valid_until):
            cache_for = max(0.0, min(cache_for, valid_until - now))
        return self._package(svc, decision, data_generation, cache_for), valid_until

    def _package(self, svc: ServiceConfig, decision: Decision, data_generation: int | None,
                 cache_for: float) -> ServiceAnswer:
        """The ServiceAnswer for a decision: the regions' addresses, or the all-down rule's answer."""
        rule = svc.all_down
        ttl, scope = decision.ttl, decision.scope_prefix
        if decision.all_down and rule.action == "address":
            decision = replace(decision, regions=())
            return ServiceAnswer(rule.v4, rule.v6, ttl, scope, decision, cache_for=cache_for,
                                 data_generation=data_generation)
        if decision.all_down and rule.action == "cname":
            decision = replace(decision, regions=())
            return ServiceAnswer((), (), ttl, scope, decision, cname=rule.cname, cache_for=cache_for,
                                 data_generation=data_generation)
        if decision.all_down and rule.action == "nodata":
            decision = replace(decision, regions=(), ttl=rule.negative_ttl)
            return ServiceAnswer((), (), rule.negative_ttl, scope, decision, negative_ttl=rule.negative_ttl,
                                 cache_for=cache_for, data_generation=data_generation)
        v4, v6 = self._region_addresses(decision.regions)
        return ServiceAnswer(v4, v6, ttl, scope, decision, cache_for=cache_for, data_generation=data_generation)

    def _region_addresses(self, regions: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        found = self._addresses.get(regions)
        if found is None:
            found = (tuple(a for r in regions for a in self._regions[r].v4),
                     tuple(a for r in regions for a in self._regions[r].v6))
            if len(self._addresses) >= 4096:
                self._addresses.clear()
            self._addresses[regions] = found
        return found

    def _widen(self, svc: ServiceConfig, key_net: tuple[int, int, int], choice: _Choice, now: float,
               use_memo: bool) -> int:
        """The ECS scope: widen the key network while the sibling gives the same answer.

        Integer network math throughout; at most MAX_WIDEN steps. For services whose choice
        does not use latency data, each step's outcome (the sibling's answer, or "cannot
        merge") is memoised per (service, sibling network): record networks that share an
        ancestor share those steps, and the next miss in the same block costs dict lookups.
        """
        version, value, prefix = key_net
        bits = 32 if version == 4 else 128
        value = value >> (bits - prefix) << (bits - prefix)
        target = (choice.regions, choice.ttl, choice.all_down)
        memo = self._siblings if use_memo and svc.policy != "latency" else None
        for _ in range(MAX_WIDEN):
            if prefix == 0:
                break
            sibling = value ^ (1 << (bits - prefix))
            outcome: tuple[object, ...] | None = None
            if memo is not None:
                outcome = memo.get((svc.name, version, sibling, prefix))
            if outcome is None:
                outcome = self._sibling_outcome(svc, version, sibling, prefix, now, use_memo)
                if memo is not None:
                    memo.put((svc.name, version, sibling, prefix), outcome)
            if outcome != target:
                break
            prefix -= 1
            value &= sibling        # the parent network: the differing bit cleared
        return prefix

    def _sibling_outcome(self, svc: ServiceConfig, version: int, sibling: int, prefix: int,
                         now: float, memo: bool) -> tuple[object, ...]:
        """(regions, ttl, all_down) of the sibling network if it is one record of exactly
        /prefix whose key network is itself, else _NO_MERGE."""
        address: IPAddress = ipaddress.IPv4Address(sibling) if version == 4 else ipaddress.IPv6Address(sibling)
        loc = self._locate_exact(address, prefix)
        if loc is None or loc.prefix_len != prefix:
            return _NO_MERGE
        if self._key_prefix(svc, address, loc) != prefix:
            return _NO_MERGE
        other, _ = self._choice(svc, address, loc, (version, sibling, prefix), now, memo)
        return (other.regions, other.ttl, other.all_down)

    def _weighted(self, svc: ServiceConfig) -> ServiceAnswer:
        eligible = [r for r in svc.regions if self._eligible(r)]
        all_down = not eligible
        pool = list(svc.regions) if all_down else eligible
        order = weighted.order(pool, svc.weights, self._rng)
        if not order:       # every eligible region has weight 0: fall back to configured order
            order = pool
        chosen = tuple(order[: svc.count])
        lines = tuple(f"{r}  weight {svc.weights.get(r, 0):g}  {_state_word(self._states.get(r, _UP))}"
                      for r in svc.regions)
        degraded = any(self._states.get(r, _UP).degraded for r in chosen)
        ttl = svc.degraded_ttl if degraded or all_down else svc.ttl
        rule = svc.all_down
        decision = Decision(svc.name, svc.policy, chosen, ttl, 0, all_down, "weighted random (per query)", lines)
        if all_down and rule.action == "address":
            return ServiceAnswer(rule.v4, rule.v6, ttl, 0, replace(decision, regions=()))
        if all_down and rule.action == "cname":
            return ServiceAnswer((), (), ttl, 0, replace(decision, regions=()), cname=rule.cname)
        if all_down and rule.action == "nodata":
            return ServiceAnswer((), (), rule.negative_ttl, 0,
                                 replace(decision, regions=(), ttl=rule.negative_ttl),
                                 negative_ttl=rule.negative_ttl)
        v4 = tuple(a for r in chosen for a in self._regions[r].v4)
        v6 = tuple(a for r in chosen for a in self._regions[r].v6)
        return ServiceAnswer(v4, v6, ttl, 0, decision)

