"""`gslb ctl` and `regional-lb ctl` against real running servers (the admin address and token read
from the config file), with their readable tables, --json and clear errors."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import yaml

from regional_lb.config import parse_config
from tests.gslb_helpers import SEOUL_NET, free_port, running_gslb
from tests.rlb_helpers import backend_servers, lb_config_dict, running_lb


async def seoul_answer(port: int) -> list[str]:
    address, prefix = SEOUL_NET.split("/")
    query = dns.message.make_query("www.example.test", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(address, int(prefix))])
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)
    return [rd.address for rrset in reply.answer for rd in rrset]


async def ctl(program: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", program, "ctl", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_gslb_ctl_regions_drain_undrain_explain_and_status(tmp_path: Path) -> None:
    async with running_gslb(tmp_path) as g:
        config = str(g.config_path)
        code, out, err = await ctl("gslb", "-c", config, "regions")
        assert code == 0, err
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["REGION", "STATE", "ELIGIBLE"]
        assert {row.split()[0] for row in rows} == {"us-east", "eu-central", "ap-northeast"}

        code, out, err = await ctl("gslb", "-c", config, "drain", "ap-northeast")
        assert code == 0, err
        assert out.splitlines()[1].split()[:4] == ["ap-northeast", "up", "no", "yes"]
        assert await seoul_answer(g.dns_port) != ["127.0.3.1"]     # the drain reached the DNS

        code, out, err = await ctl("gslb", "-c", config, "--json", "regions")
        assert code == 0, err
        regions = {r["name"]: r for r in json.loads(out)["regions"]}
        assert regions["ap-northeast"]["drained"] is True

        code, out, err = await ctl("gslb", "-c", config, "undrain", "ap-northeast")
        assert code == 0, err
        assert await seoul_answer(g.dns_port) == ["127.0.3.1"]

        code, out, err = await ctl("gslb", "-c", config, "explain", "www.example.test", "--client", "168.126.63.9")
        assert code == 0, err
        assert out.splitlines()[-1].startswith("answer    ap-northeast")

        code, out, err = await ctl("gslb", "-c", config, "status")
        assert code == 0, err
        assert "www.example.test" in out

        code, out, err = await ctl("gslb", "-c", config, "--token", "wrong", "drain", "us-east")
        assert code == 1
        assert "admin token was refused" in err

        code, out, err = await ctl("gslb", "-c", config, "drain", "nowhere")
        assert code == 1
        assert "no region named 'nowhere'" in err


async def test_gslb_ctl_says_when_the_server_is_not_running_or_the_config_is_bad(tmp_path: Path) -> None:
    port = free_port()
    code, _out, err = await ctl("gslb", "--url", f"http://127.0.0.1:{port}", "regions")
    assert code == 1
    assert f"cannot reach the admin API at http://127.0.0.1:{port}" in err
    code, _out, err = await ctl("gslb", "-c", str(tmp_path / "missing.yaml"), "regions")
    assert code == 1
    assert "missing.yaml" in err


async def test_regional_lb_ctl_pools_drain_maint_ready(tmp_path: Path) -> None:
    async with backend_servers(["b1", "b2"]) as backends:
        admin_port = free_port()
        doc = lb_config_dict(backends, admin={"listen": f"127.0.0.1:{admin_port}", "token": "test-token"})
        path = tmp_path / "edge.yaml"
        path.write_text(yaml.safe_dump(doc))
        async with running_lb(parse_config(path.read_text(), file=str(path))) as lb:
            config = str(path)
            code, out, err = await ctl("regional_lb", "-c", config, "pools")
            assert code == 0, err
            lines = out.splitlines()
            assert lines[0].split()[:3] == ["POOL", "ID", "ADDRESS"]
            assert {line.split()[1] for line in lines[1:3]} == {"b1", "b2"}
            assert "app: 2/2 available" in out

            code, out, err = await ctl("regional_lb", "-c", config, "drain", "app", "b1")
            assert code == 0, err
            assert out.splitlines()[1].split()[4] == "drain"
            assert lb.rt.pools["app"].pool.status(lb.clock())[0]["admin"] == "drain"

            code, out, err = await ctl("regional_lb", "-c", config, "--json", "maint", "app", "b1")
            assert code == 0, err
            assert json.loads(out)["backend"]["admin"] == "maintenance"

            code, out, err = await ctl("regional_lb", "-c", config, "ready", "app", "b1")
            assert code == 0, err
            assert out.splitlines()[1].split()[4] == "ready"

            code, out, err = await ctl("regional_lb", "-c", config, "maint", "app", "nope")
            assert code == 1
            assert "no backend 'nope' in pool 'app'" in err

            code, out, err = await ctl("regional_lb", "-c", config, "--token", "bad", "reload")
            assert code == 1
            assert "admin token was refused" in err
