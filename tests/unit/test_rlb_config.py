"""Config loading: the example files, defaults, and errors that name file, key path and reason."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gslb.common.configload import ConfigError
from regional_lb.cli import main
from regional_lb.config import load_config, parse_address, parse_config, parse_size

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "region": "r1",
    "listen": [{"address": "127.0.0.1:8080"}],
    "pools": {"app": {"backends": [{"address": "127.0.0.1:9001", "weight": 2},
                                   {"address": "127.0.0.1:9002", "id": "app-2"},
                                   {"dns": "app.svc.example", "port": 9000}]}},
    "routes": [{"match": {"host": "*", "path": "/static/**"}, "pool": "app", "policy": "round_robin"},
               {"pool": "app", "policy": "least_connections"}],
}


def _parse(doc: dict) -> object:
    return parse_config(yaml.safe_dump(doc), file="t.yaml")


def test_minimal_config_and_defaults() -> None:
    cfg = _parse(BASE)
    assert cfg.region == "r1"
    assert cfg.role == "edge"
    assert cfg.listeners[0].host == "127.0.0.1"
    assert cfg.listeners[0].port == 8080
    assert [b.id for b in cfg.pools["app"].backends] == ["127.0.0.1:9001", "app-2"]
    assert cfg.pools["app"].backends[0].weight == 2
    assert cfg.pools["app"].dns[0].name == "app.svc.example"
    assert cfg.routes[0].path == "/static/**"
    assert cfg.routes[1].name == "app#1"
    assert cfg.timeouts.connect == 2.0
    assert cfg.limits.max_body_size == 100 * 1024 * 1024
    assert cfg.health_endpoint.path == "/lb/healthz"
    assert cfg.admin.host == "127.0.0.1"


def _error(doc: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _parse(doc)
    return info.value


def _with(**changes: object) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(("doc", "path", "reason"), [
    (_with(regoin="x"), "regoin", "did you mean 'region'"),
    (_with(listen=[{"address": "nohost"}]), "listen[0].address", "missing port"),
    (_with(listen=[{"address": "::1:80"}]), "listen[0].address", "brackets"),
    (_with(timeouts={"connect": "soon"}), "timeouts.connect", "duration"),
    (_with(limits={"max_body_size": "lots"}), "limits.max_body_size", "size"),
    (_with(trusted_proxies=["not-a-net"]), "trusted_proxies", "not a network"),
    (_with(routes=[{"pool": "nope"}]), "routes[0].pool", "unknown pool"),
    (_with(routes=[{"pool": "app", "policy": "bogus"}]), "routes[0].options", "unknown policy"),
    (_with(routes=[{"pool": "app", "match": {"path": "static"}}]), "routes[0].match", "must start with '/'"),
    (_with(routes=[{"pool": "app", "match": {"paht": "/x"}}]), "routes[0].match.paht", "unknown key"),
    (_with(pools={"app": {"backends": []}}), "pools.app.backends", "at least one"),
    (_with(pools={"app": {"backends": [{"dns": "x.example"}]}}), "pools.app.backends[0].port", "required"),
    (_with(pools={"app": {"backends": [{"address": "1.2.3.4:1"}, {"address": "1.2.3.4:1"}]}}),
     "pools.app.backends", "duplicate"),
    (_with(pools={"app": {"backends": [{"address": "1.2.3.4:1"}], "health": {"type": "icmp"}}}),
     "pools.app.health.type", "must be one of"),
    (_with(state={"backend": "redis"}), "state.url", "required"),
])
def test_errors_name_the_key_path(doc: dict, path: str, reason: str) -> None:
    err = _error(doc)
    assert err.file == "t.yaml"
    assert err.path == path
    assert reason in err.reason


def test_tls_files_must_exist(tmp_path: Path) -> None:
    doc = _with(listen=[{"address": "127.0.0.1:8443", "tls": {"cert": "nope.pem", "key": "nope.key"}}])
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"listen\[0\]\.tls\.cert: no such file"):
        load_config(path)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:8080", ("::1", 8080)), ("h.example:1", ("h.example", 1)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("value", "size"), [(10, 10), ("8k", 8192), ("100m", 100 * 1024**2), ("1G", 1024**3),
                                             ("1.5k", 1536), ("x", None), (True, None), (-1, None)])
def test_parse_size(value: object, size: int | None) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("name", ["edge.yaml", "internal.yaml"])
def test_example_configs_pass_check_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "deploy" / "example" / name)]) == 0
    assert capsys.readouterr().out.strip() == "OK"


def test_check_config_prints_file_key_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(timeouts={"conect": "1s"})))
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "conect" in text)
    assert out.startswith(f"{path}:{line}: timeouts.conect: unknown key (did you mean 'connect'?)")
    assert out.splitlines()[-1] == f"{path}: 1 error"


def test_check_config_lists_every_error_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _with(timeouts={"conect": "1s", "client_idle": "soon"}, limits={"max_header_size": -1})
    doc["colour"] = "blue"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    lines = path.read_text().splitlines()

    def line_of(word: str) -> int:
        return next(i for i, text in enumerate(lines, 1) if word in text)

    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{path}: 4 errors"
    expected = sorted([
        (line_of("colour:"), f"{path}:{line_of('colour:')}: colour: unknown key"),
        (line_of("client_idle:"), f"{path}:{line_of('client_idle:')}: timeouts.client_idle: expected a duration"),
        (line_of("conect:"), f"{path}:{line_of('conect:')}: timeouts.conect: unknown key (did you mean 'connect'?)"),
        (line_of("max_header_size:"), f"{path}:{line_of('max_header_size:')}: limits.max_header_size:"),
    ])
    assert len(out) == 5
    for got, (_line, want) in zip(out, expected, strict=False):
        assert got.startswith(want), (got, want)


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "none.yaml")]) == 1
    assert "cannot read file" in capsys.readouterr().out


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=3), max_leaves=12))
def test_any_document_loads_or_raises_config_error(doc: object) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(yaml.safe_dump(doc), file="fuzz.yaml")


def test_server_option_defaults_to_fast_and_reaches_the_load_balancer() -> None:
    from regional_lb.app import LoadBalancer

    assert _parse(BASE).server == "fast"
    cfg = _parse(_with(server="aiohttp"))
    assert cfg.server == "aiohttp"
    assert LoadBalancer(cfg).server_kind == "aiohttp"                  # taken from the config
    assert LoadBalancer(cfg, server="fast").server_kind == "fast"      # an explicit argument wins
    assert LoadBalancer(_parse(BASE)).server_kind == "fast"
    err = _error(_with(server="nginx"))
    assert err.path == "server"
    assert "must be one of" in err.reason


def test_version_flag_prints_the_program_and_version(capsys):
    from gslb import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"regional-lb {__version__}"
