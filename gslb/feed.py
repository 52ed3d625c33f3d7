"""The GSLB's state feed from the supervisor to its workers: messages and applying them  [pure].

With `workers` above 1 the supervisor (gslb/supervisor.py) runs the probes, the peers' vote,
the admin API (drains, the latency table's pushes, reloads) once; every worker
(gslb/worker.py) answers DNS from its own Steering and applies what the supervisor tells it.
Framing is gslb/common/framing.py's; a message is a JSON object with a "t" (type):

    config     {"t": "config", "generation": 3, "text": "<the YAML>", "file": "/etc/gslb/gslb.yaml",
                "listen": [["127.0.0.1", 5353], ...], "states": {...as in "regions"...}}
               a config generation: the worker builds (or reloads to) it; the supervisor validated
               it first, so a worker parses the very text the supervisor accepted; `listen`: the
               DNS ports as the supervisor resolved them (a port 0 in the file); `states`: the
               region states of that generation, applied with it (no moment with a new region
               assumed up before its state arrives)
    regions    {"t": "regions", "states": {"eu-west": [up, drained, degraded], ...}}
               every region's state as answered (the vote, maintenance, drains): the whole map,
               sent at every change (a few bytes per region), so applying it is idempotent
    latency    {"t": "latency", "rows": [[network, [[region, rtt_ms, age_s], ...]], ...]}
               measurements the supervisor took in (an edge's push, a peer's table), in
               LatencyTable.export_rows form; a starting worker gets the whole table this way
    tables     {"t": "tables", "path": "/tmp/gslb-supervisor-x/tables-1.bin",
                "source": ["/usr/share/gslb/city.mmdb", 12345678, 1733000000000000000]}
               the steering tables the supervisor compiled, once for all workers, into a file
               (gslb/tables.py SharedTables; gslb/steering/table.py write_tables): the worker
               maps it read-only and installs its tables (MappedTables.use_file) if `source`
               (path, size, mtime of the GeoIP database compiled) is the database it opened
    metrics    {"t": "metrics", "id": 7}          answered by "metrics_reply" {"id", "families"}
                                                  (gslb/common/metrics_merge.py families_to_wire)
    answers    {"t": "answers", "id": 8}          answered by "answers_reply" {"id", "samples":
                                                  [[client, [regions], at], ...], "seen", "by_region",
                                                  "all_down"}: what the status page shows (merge_answers)
    stop       {"t": "stop"}                      drain and exit (as SIGTERM)

and from a worker:

    ready      {"t": "ready", "worker": 0, "pid": 1234, "udp": [{"address": ["127.0.0.1", 5353],
                "reply_source": "bound"}, ...]}   (ready_message) it serves; `udp`: the UDP listeners
                                                  it bound, as /api/status shows them (udp_listeners_of;
                                                  TCP listens on the same addresses); the supervisor's
                                                  /api/status counts them over the ready workers
                                                  (count_listeners)
    reloaded   {"t": "reloaded", "id", "generation", "ok", "message"}
    metrics_reply, answers_reply                  as above

Errors: FeedError (a ValueError) for a malformed message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from gslb.latency_table import LatencyTable
from gslb.status import AnswerSampler
from gslb.steering.base import RegionState

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LATENCY_ROWS = 5000         # networks per "latency" message of a snapshot


class FeedError(ValueError):
    """a malformed state feed message"""


def config_message(generation: int, text: str, file: str, listen: list[tuple[str, int]],
                   states: Mapping[str, RegionState]) -> dict[str, Any]:
    return {"t": "config", "generation": generation, "text": text, "file": file,
            "listen": [[host, port] for host, port in listen], "states": regions_message(states)["states"]}


def regions_message(states: Mapping[str, RegionState]) -> dict[str, Any]:
    return {"t": "regions", "states": {name: [s.up, s.drained, s.degraded] for name, s in states.items()}}


def regions_of(message: dict[str, Any]) -> dict[str, RegionState]:
    """The region states of a "regions" message (FeedError if malformed)."""
    states = message.get("states")
    if not isinstance(states, dict):
        raise FeedError("regions: expected {\"states\": {region: [up, drained, degraded]}}")
    out = {}
    for name, value in states.items():
        if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
            raise FeedError(f"regions: {name!r}: expected [up, drained, degraded] booleans, got {value!r:.80}")
        out[str(name)] = RegionState(up=value[0], drained=value[1], degraded=value[2])
    return out


def tables_message(path: str, source: tuple[str, int, int]) -> dict[str, Any]:
    return {"t": "tables", "path": path, "source": list(source)}


MAX_PATH = 4096             # bytes of a "tables" message's path


def tables_of(message: Mapping[str, Any]) -> tuple[str, tuple[str, int, int]]:
    """(path, source) of a "tables" message (FeedError if malformed)."""
    path, source = message.get("path"), message.get("source")
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\0" in path:
        raise FeedError(f"tables: expected \"path\": a file name, got {path!r:.80}")
    if not isinstance(source, list) or len(source) != 3 or not isinstance(source[0], str) \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in source[1:]):
        raise FeedError(f"tables: expected \"source\": [database path, size, mtime], got {source!r:.80}")
    return path, (source[0], source[1], source[2])


def latency_message(rows: list[list[Any]]) -> dict[str, Any]:
    return {"t": "latency", "rows": rows}


def pushed_rows(payload: dict[str, Any]) -> list[list[Any]]:
    """An ingested push ({"measurements": [{network, region, rtt_ms}]}, validated) as rows of age 0."""
    return [[m["network"], [[m["region"], m["rtt_ms"], 0.0]]] for m in payload["measurements"]]


def latency_snapshot(table: LatencyTable, now: float, per_message: int = LATENCY_ROWS) -> Iterator[dict[str, Any]]:
    """The whole table as "latency" messages of at most `per_message` networks."""
    rows: list[list[Any]] = []
    for row in table.export_rows(now):
        rows.append(row)
        if len(rows) >= per_message:
            yield latency_message(rows)
            rows = []
    if rows:
        yield latency_message(rows)


def answers_payload(sample: AnswerSampler, by_region: Mapping[str, int],
                    all_down: Mapping[str, int]) -> dict[str, Any]:
    return {"samples": [[str(client), list(regions), at] for client, regions, at in sample.samples],
            "seen": sample.seen, "by_region": dict(by_region), "all_down": dict(all_down)}


def merge_answers(replies: list[dict[str, Any]], every: int, size: int
                  ) -> tuple[AnswerSampler, dict[str, int], dict[str, int]]:
    """The workers' "answers_reply" messages as one sample (the latest `size`, by time) and summed
    counts (FeedError if one is malformed)."""
    sample = AnswerSampler(every=every, size=size)
    rows: list[tuple[float, IPAddress, tuple[str, ...]]] = []
    by_region: dict[str, int] = {}
    all_down: dict[str, int] = {}
    try:
        for reply in replies:
            for client, regions, at in reply["samples"]:
                rows.append((float(at), ipaddress.ip_address(client), tuple(str(r) for r in regions)))
            sample.seen += int(reply["seen"])
            for into, key in ((by_region, "by_region"), (all_down, "all_down")):
                for name, n in dict(reply[key]).items():
                    into[str(name)] = into.get(str(name), 0) + int(n)
    except (KeyError, TypeError, ValueError) as exc:
        raise FeedError(f"bad answers_reply: {exc!r}") from None
    rows.sort(key=lambda r: r[0])
    sample.samples.extend((client, regions, at) for at, client, regions in rows[-size:])
    return sample, by_region, all_down


REPLY_SOURCES = ("pktinfo", "bound")     # a UDP reply leaves from the address asked / the address bound
MAX_LISTENERS = 1024                    # UDP listeners a "ready" message may name


def ready_message(worker_id: int, pid: int, udp: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A worker's "ready": it serves; `udp` its UDP listeners as GslbServer.udp_listener_rows gives them."""
    return {"t": "ready", "worker": worker_id, "pid": pid, "udp": [dict(row) for row in udp]}


def udp_listeners_of(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The UDP listeners of a "ready" message, checked: [{"address": [host, port, ...], "reply_source":
    "pktinfo" | "bound"}, ...] (FeedError if malformed)."""
    rows = message.get("udp")
    if not isinstance(rows, list) or len(rows) > MAX_LISTENERS:
        raise FeedError(f"ready: expected \"udp\": a list of at most {MAX_LISTENERS} listeners, got {rows!r:.80}")
    out = []
    for row in rows:
        address = row.get("address") if isinstance(row, dict) else None
        source = row.get("reply_source") if isinstance(row, dict) else None
        if not isinstance(address, list) or not 2 <= len(address) <= 4 or not isinstance(address[0], str) \
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in address[1:]) \
                or source not in REPLY_SOURCES:
            raise FeedError(f"ready: expected {{\"address\": [host, port, ...], \"reply_source\": "
                            f"\"pktinfo\" | \"bound\"}}, got {row!r:.80}")
        out.append({"address": list(address), "reply_source": source})
    return out


def count_listeners(per_worker: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every worker's UDP listeners (udp_listeners_of) as one row per address and reply source, in
    the order first named, with "workers": how many of them named it (a worker naming one twice
    counts once)."""
    rows: dict[tuple[tuple[Any, ...], str], dict[str, Any]] = {}
    for listeners in per_worker:
        seen: set[tuple[tuple[Any, ...], str]] = set()
        for listener in listeners:
            key = (tuple(listener["address"]), str(listener["reply_source"]))
            if key in seen:
                continue
            seen.add(key)
            row = rows.setdefault(key, {"address": list(key[0]), "reply_source": key[1], "workers": 0})
            row["workers"] += 1
    return list(rows.values())


class StateSink(Protocol):
    """Where GslbServer reports its state changes (the supervisor broadcasts them to its workers)."""

    def regions(self, states: Mapping[str, RegionState]) -> None: ...

    def latency(self, rows: list[list[Any]]) -> None: ...

    async def reloaded(self, text: str) -> None:
        """The server switched to the config in `text` (its own file's, validated)."""
