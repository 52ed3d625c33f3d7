"""geo_data/build_world.py: the shapefile reader (bounds-checked) and the SVG path it writes;
and the shipped gslb/status/world.json as the page reads it."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from geo_data.build_world import build, read_polygons, ring_path, simplify

ROOT = Path(__file__).resolve().parents[2]


def shapefile(rings: list[list[tuple[float, float]]], *, kind: int = 5, cut: int = 0) -> bytes:
    points = [p for ring in rings for p in ring]
    parts, at = [], 0
    for ring in rings:
        parts.append(at)
        at += len(ring)
    content = struct.pack("<i4d", kind, 0, 0, 0, 0) + struct.pack("<ii", len(rings), len(points))
    content += struct.pack(f"<{len(parts)}i", *parts) + b"".join(struct.pack("<dd", *p) for p in points)
    record = struct.pack(">ii", 1, len(content) // 2) + content
    header = struct.pack(">i", 9994) + b"\0" * 96
    data = header + record
    return data[: len(data) - cut] if cut else data


SQUARE = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (0.0, 0.0)]


def test_reads_polygon_rings_and_writes_a_relative_path():
    data = shapefile([SQUARE, [(20.0, 20.0), (21.0, 20.0), (21.0, 21.0), (20.0, 20.0)]])
    rings = read_polygons(data)
    assert rings[0] == SQUARE
    assert len(rings) == 2
    assert ring_path(SQUARE) == "M180 90l10 0 0 -10 -10 0z"          # x = lon + 180, y = 90 - lat
    assert ring_path([(0.0, 0.0), (0.01, 0.0), (0.0, 0.0)]) == ""     # shrinks below a triangle: dropped
    doc = build(data)
    assert doc["rings"] == 2
    assert doc["viewBox"] == [0, 0, 360, 180]


def test_simplify_drops_points_within_tolerance_and_keeps_corners():
    line = [(0.0, 0.0), (1.0, 0.01), (2.0, 0.0), (2.0, 2.0)]
    assert simplify(line, 0.1) == [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0)]


@pytest.mark.parametrize("data", [
    b"", b"\0" * 100, shapefile([SQUARE], cut=8),
])
def test_refuses_what_is_not_a_whole_shapefile(data):
    with pytest.raises(SystemExit):
        read_polygons(data)


def test_other_shape_types_are_skipped():
    assert read_polygons(shapefile([SQUARE], kind=3)) == []      # polyline


def test_shipped_world_map_is_a_compact_path_inside_its_view_box():
    doc = json.loads((ROOT / "gslb/status/world.json").read_text())
    assert doc["viewBox"] == [0, 0, 360, 180]
    assert "public domain" in doc["source"]
    assert (ROOT / "gslb/status/world.json").stat().st_size < 150_000
    assert re.fullmatch(r"(M[-\d. ]+l[-\d. ]+z)+", doc["d"])
    assert doc["d"].count("M") == doc["rings"] > 200
    for start in re.findall(r"M([-\d.]+) ([-\d.]+)l", doc["d"]):
        x, y = map(float, start)
        assert 0 <= x <= 360
        assert 0 <= y <= 180
