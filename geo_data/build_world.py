"""Build the status page's world map (land outlines) from Natural Earth 110m countries.

    python geo_data/build_world.py [--wheel PATH] [--out gslb/status/world.json]

Source: Natural Earth 1:110m "Admin 0 - Countries" (public domain, https://www.naturalearthdata.com),
as shipped in the PyPI wheel `geopandas==0.14.4` (`geopandas/datasets/naturalearth_lowres/
naturalearth_lowres.shp`, pinned below, checked by SHA-256). The wheel is downloaded with
`pip download --no-deps` into geo_data/cache/ (git-ignored) and only read: never installed.

The ESRI shapefile is read with `struct` (polygon records only; the format is public:
ESRI Shapefile Technical Description, 1998), each ring is simplified with Douglas-Peucker
(TOLERANCE degrees), rounded to 0.1 degree, and written as one SVG path in an equirectangular
projection: x = longitude + 180, y = 90 - latitude, viewBox "0 0 360 180". Rings that shrink
below 4 points (tiny islands) are dropped. The page draws it with one <path>; no projection
code runs in the browser. The output is reproducible: same wheel, same parameters, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
OUT = HERE.parent / "gslb" / "status" / "world.json"
WHEEL = "geopandas-0.14.4-py3-none-any.whl"
WHEEL_SHA256 = "3bb6473cb59d51e1a7fe2dbc24a1a063fb0ebdeddf3ce08ddbf8c7ddc99689aa"
MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp"
TOLERANCE = 0.15        # degrees (~15 km): invisible on a page-wide map
POLYGON = 5

Point = tuple[float, float]


def fetch_wheel(wheel: Path | None) -> Path:
    if wheel is None:
        wheel = CACHE / WHEEL
        if not wheel.exists():
            CACHE.mkdir(exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                            "-d", str(CACHE), "geopandas==0.14.4"], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: SHA-256 {digest} is not the pinned {WHEEL_SHA256}")
    return wheel


def read_polygons(shp: bytes) -> list[list[Point]]:
    """Every ring of every polygon record of an ESRI shapefile (bounds-checked)."""
    if len(shp) < 100 or struct.unpack_from(">i", shp, 0)[0] != 9994:
        raise SystemExit("not an ESRI shapefile")
    rings: list[list[Point]] = []
    offset = 100
    while offset + 8 <= len(shp):
        _number, words = struct.unpack_from(">ii", shp, offset)
        start, end = offset + 8, offset + 8 + 2 * words
        if end > len(shp):
            raise SystemExit(f"record at {offset} runs past the end of the file")
        offset = end
        (kind,) = struct.unpack_from("<i", shp, start)
        if kind != POLYGON:
            continue
        nparts, npoints = struct.unpack_from("<ii", shp, start + 36)
        parts_at = start + 44
        points_at = parts_at + 4 * nparts
        if points_at + 16 * npoints > end:
            raise SystemExit(f"polygon at {start} is longer than its record")
        parts = [*struct.unpack_from(f"<{nparts}i", shp, parts_at), npoints]
        for a, b in itertools.pairwise(parts):
            rings.append([struct.unpack_from("<dd", shp, points_at + 16 * i) for i in range(a, b)])
    return rings


def simplify(points: list[Point], tolerance: float) -> list[Point]:
    """Douglas-Peucker (iterative)."""
    if len(points) < 3:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        (x1, y1), (x2, y2) = points[first], points[last]
        dx, dy = x2 - x1, y2 - y1
        norm = (dx * dx + dy * dy) ** 0.5
        worst, worst_at = -1.0, -1
        for i in range(first + 1, last):
            x, y = points[i]
            d = abs(dy * (x - x1) - dx * (y - y1)) / norm if norm else ((x - x1) ** 2 + (y - y1) ** 2) ** 0.5
            if d > worst:
                worst, worst_at = d, i
        if worst > tolerance:
            keep[worst_at] = True
            stack += [(first, worst_at), (worst_at, last)]
    return [p for p, k in zip(points, keep, strict=True) if k]


def ring_path(ring: list[Point]) -> str:
    """One closed SVG subpath: absolute first point, then relative moves in tenths of a degree."""
    grid: list[tuple[int, int]] = []
    for lon, lat in ring:
        point = (round((lon + 180) * 10), round((90 - lat) * 10))
        if not grid or grid[-1] != point:
            grid.append(point)
    if len(grid) > 1 and grid[0] == grid[-1]:
        grid.pop()
    if len(grid) < 3:
        return ""
    (x0, y0), parts = grid[0], []
    for (ax, ay), (bx, by) in itertools.pairwise(grid):
        parts.append(f"{(bx - ax) / 10:g} {(by - ay) / 10:g}")
    return f"M{x0 / 10:g} {y0 / 10:g}l" + " ".join(parts) + "z"


def build(shp: bytes) -> dict[str, object]:
    rings = read_polygons(shp)
    paths = [p for p in (ring_path(simplify(r, TOLERANCE)) for r in rings) if p]
    return {
        "source": "Natural Earth 1:110m Admin 0 - Countries (public domain), via geopandas 0.14.4",
        "projection": "equirectangular: x = lon + 180, y = 90 - lat",
        "viewBox": [0, 0, 360, 180],
        "rings": len(paths),
        "d": "".join(paths),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a local copy of the pinned geopandas wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with zipfile.ZipFile(fetch_wheel(args.wheel)) as zf:
        shp = zf.read(MEMBER)
    data = build(shp)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"{args.out}: {data['rings']} rings, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
