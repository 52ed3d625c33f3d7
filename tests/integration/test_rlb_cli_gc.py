"""`regional-lb serve` from the command line freezes the heap startup built (gc.freeze) so the
collector's full passes stop walking it; serve() called as a library leaves the collector alone."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest
import yaml

from regional_lb.cli import serve
from tests.rlb_helpers import lb_config_dict


async def _run(path: Path, *, freeze_heap: bool) -> int:
    """gc.get_freeze_count() while serve() runs (listeners up), then stop it."""
    started = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(str(path), shutdown_trigger=stop, started=started, freeze_heap=freeze_heap))
    try:
        await asyncio.wait_for(started.wait(), 20)
        return gc.get_freeze_count()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 20) == 0


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(lb_config_dict(["127.0.0.1:9"])))
    return path


async def test_serve_freezes_the_started_heap_when_asked(config_path: Path) -> None:
    gc.unfreeze()
    try:
        assert await _run(config_path, freeze_heap=False) == 0
        assert await _run(config_path, freeze_heap=True) > 1000      # modules, config, pools, listeners
    finally:
        gc.unfreeze()
