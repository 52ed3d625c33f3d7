"""`workers: auto | N` and the policies that need `state: redis` with more than one worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gslb.common.configload import ConfigError
from regional_lb.cli import main
from regional_lb.config import parse_config

DOC = {
    "region": "r1",
    "listen": [{"address": "127.0.0.1:8080"}],
    "pools": {"app": {"backends": [{"address": "127.0.0.1:9001"}]}},
    "routes": [{"pool": "app", "policy": "round_robin"}],
}


def _doc(**changes: object) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(DOC))
    doc.update(changes)
    return doc


def _parse(doc: dict) -> object:
    return parse_config(yaml.safe_dump(doc), file="t.yaml")


def test_workers_default_to_one() -> None:
    assert _parse(DOC).workers == 1


def test_workers_auto_is_the_cpus_this_process_may_use() -> None:
    assert _parse(_doc(workers="auto")).workers == len(os.sched_getaffinity(0))


def test_workers_number() -> None:
    assert _parse(_doc(workers=3)).workers == 3


@pytest.mark.parametrize("value", [0, -1, 1025, "many", 2.5, True])
def test_bad_workers_are_refused_with_the_key(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(_doc(workers=value))
    assert "t.yaml" in str(info.value)
    assert "workers" in str(info.value)


@pytest.mark.parametrize("policy", ["sticky_learn", "bounded_load", "least_connections"])
@pytest.mark.parametrize("workers", [2, "auto"])
def test_per_process_policies_need_redis_with_many_workers(policy: str, workers: object) -> None:
    doc = _doc(workers=workers, routes=[{"pool": "app", "policy": "round_robin"}, {"pool": "app", "policy": policy}])
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    text = str(info.value)
    assert "routes[1].policy" in text
    assert "state" in text
    assert "redis" in text


@pytest.mark.parametrize("policy", ["sticky_learn", "bounded_load", "least_connections"])
def test_per_process_policies_are_fine_with_one_worker_or_redis(policy: str) -> None:
    _parse(_doc(workers=1, routes=[{"pool": "app", "policy": policy}]))
    _parse(_doc(workers=4, routes=[{"pool": "app", "policy": policy}],
                state={"backend": "redis", "url": "redis://127.0.0.1:6379/0"}))


@pytest.mark.parametrize("policy", ["sticky_cookie", "ip_hash", "uri_hash", "round_robin"])
def test_policies_that_agree_across_workers_need_no_redis(policy: str) -> None:
    route: dict = {"pool": "app", "policy": policy}
    if policy == "sticky_cookie":
        route["options"] = {"secrets": ["s3cret-for-tests"]}
    assert _parse(_doc(workers=2, routes=[route])).workers == 2


def test_check_config_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(_doc(workers=2, routes=[{"pool": "app", "policy": "sticky_learn"}])))
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "routes[0].policy" in out
    assert "sticky_learn with workers: 2 needs state: {backend: redis" in out
