"""Operator state of regions (ready / drain / maintenance), shared by peers and kept in a file.

    ready        the region is answered with when its (voted) health is up
    drain        no new answers name it; its health is still probed and shown; says when it is
                 safe to stop (the longest TTL after the drain)
    maintenance  the region counts as down whatever the probes say (gdnsd's admin_state DOWN)

`AdminStates` [pure] holds one `AdminEntry` per region: the state, the wall-clock time it was
set and the server it was set on. Entries merge *last writer wins* on (at, origin): an entry
replaces the one held only when it is later. A change made here is stamped at
max(wall clock, held entry's time + 1 ms), so an operator's action always replaces what this
server holds even when the clock of the server that set the old one runs ahead; an entry from a
peer stamped more than MAX_AHEAD (1 h) after our clock is ignored. Every change
sent to one server reaches the others by two paths: it is pushed to every peer at once, and
each peer's report (pulled every peer interval) carries its entries, so a peer that was down
during the push catches up at its next pull.

`load(path, known)` / `save(path, states)` [edge] keep the entries in a JSON file (default:
`admin_state.json` beside the config file, like gdnsd's `admin_state`) written atomically
(a temporary file in the same directory, fsync, rename): a crash leaves the old file or the
new one, never half of one. A file that is missing is an empty state; one that cannot be read
or parsed raises `StateFileError` (a `ConfigError`: "FILE: regions.us-east.state: reason"), so
the server refuses to start rather than quietly undraining a region. Entries naming a region
no longer configured are dropped at load.

    {"version": 1, "regions": {"us-east": {"state": "drain", "at": 1764600000.0, "origin": "gslb-a"}}}
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gslb.common.configload import ConfigError

FILE_VERSION = 1
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ORIGIN = 255
MAX_AHEAD = 3600.0          # seconds a peer's entry may be stamped ahead of our clock; later ones are ignored


class AdminState(enum.Enum):
    READY = "ready"
    DRAIN = "drain"
    MAINTENANCE = "maintenance"


ADMIN_STATES = tuple(s.value for s in AdminState)


class StateFileError(ConfigError):
    """The admin state file cannot be read or is not valid (file, key path, reason)."""


@dataclass(frozen=True, slots=True)
class AdminEntry:
    state: AdminState
    at: float               # wall-clock time the operator set it
    origin: str             # the server it was set on

    def newer_than(self, other: AdminEntry | None) -> bool:
        return other is None or (self.at, self.origin) > (other.at, other.origin)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state.value, "at": self.at, "origin": self.origin}

    @classmethod
    def from_json(cls, data: Any, where: str) -> AdminEntry:
        """ValueError naming `where` and the problem."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object")
        extra = set(data) - {"state", "at", "origin"}
        if extra:
            raise ValueError(f"{where}.{sorted(extra)[0]}: unknown key")
        state, at, origin = data.get("state"), data.get("at"), data.get("origin")
        if state not in ADMIN_STATES:
            raise ValueError(f"{where}.state: must be one of {', '.join(ADMIN_STATES)}, got {state!r}")
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) or at < 0:
            raise ValueError(f"{where}.at: expected a wall-clock time in seconds, got {at!r}")
        if not isinstance(origin, str) or not origin or len(origin) > MAX_ORIGIN:
            raise ValueError(f"{where}.origin: expected a server name, got {origin!r}")
        return cls(AdminState(state), float(at), origin)


class AdminStates:
    """The admin entries by region name; regions without one are READY."""

    def __init__(self, entries: Mapping[str, AdminEntry] | None = None) -> None:
        self._entries: dict[str, AdminEntry] = dict(entries or {})

    def __repr__(self) -> str:
        held = ", ".join(f"{n}={e.state.value}" for n, e in sorted(self._entries.items())
                         if e.state is not AdminState.READY)
        return f"<AdminStates [{held or 'all ready'}]>"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, region: str) -> AdminEntry | None:
        return self._entries.get(region)

    def state(self, region: str) -> AdminState:
        entry = self._entries.get(region)
        return AdminState.READY if entry is None else entry.state

    def set(self, region: str, state: AdminState, wall: float, origin: str) -> AdminEntry:
        """An operator's change made on this server: later than anything held for the region."""
        held = self._entries.get(region)
        at = wall if held is None else max(wall, held.at + 0.001)
        entry = AdminEntry(state, at, origin)
        self._entries[region] = entry
        return entry

    def merge(self, region: str, entry: AdminEntry) -> bool:
        """Take a peer's entry if it is later than the one held; True if it changed anything."""
        held = self._entries.get(region)
        if not entry.newer_than(held):
            return False
        self._entries[region] = entry
        return held is None or held.state is not entry.state

    def merge_all(self, entries: Mapping[str, AdminEntry], known: Collection[str],
                  not_after: float | None = None) -> list[str]:
        """Merge many; the regions whose state changed. Regions not in `known` are ignored, and so
        are entries stamped after `not_after` (a peer's clock far ahead, or a forged time, would
        otherwise pin the region's state until that time)."""
        return [region for region, entry in entries.items()
                if region in known and (not_after is None or entry.at <= not_after) and self.merge(region, entry)]

    def keep_only(self, known: Collection[str]) -> None:
        for region in [r for r in self._entries if r not in known]:
            del self._entries[region]

    def to_json(self) -> dict[str, Any]:
        return {region: entry.to_json() for region, entry in sorted(self._entries.items())}


def entries_from_json(data: Any, known: Collection[str], where: str = "admin") -> dict[str, AdminEntry]:
    """{region: entry} from a peer's JSON; ValueError naming the bad item. Unknown regions are
    skipped (not parsed), so the work is bounded by the regions this server has."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object")
    return {name: AdminEntry.from_json(data[name], f"{where}.{name}") for name in known if name in data}


def load(path: Path, known: Collection[str]) -> AdminStates:
    """The entries kept in `path` (empty when it does not exist); StateFileError if unusable."""
    file = str(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return AdminStates()
    except OSError as exc:
        raise StateFileError(file, "", f"cannot read the admin state file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise StateFileError(file, "", f"larger than {MAX_FILE_BYTES} bytes: not an admin state file")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(file, "", f"not valid JSON ({exc}); fix or remove it (a removed file "
                                       "undrains every region)") from None
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
        raise StateFileError(file, "version", f"expected an object with \"version\": {FILE_VERSION}")
    regions = data.get("regions")
    if not isinstance(regions, dict):
        raise StateFileError(file, "regions", "expected an object of region name -> entry")
    entries: dict[str, AdminEntry] = {}
    for name, item in regions.items():
        try:
            entry = AdminEntry.from_json(item, f"regions.{name}")
        except ValueError as exc:
            path_text, _, reason = str(exc).partition(": ")
            raise StateFileError(file, path_text, reason) from None
        if name in known:
            entries[name] = entry
    return AdminStates(entries)


def save(path: Path, states: AdminStates) -> None:
    """Write the entries atomically (temporary file, fsync, rename); OSError if it cannot."""
    body = json.dumps({"version": FILE_VERSION, "regions": states.to_json()}, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):        # the rename itself durable (not all filesystems allow it)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
