"""Backend responses forwarded as the backend sent them, on both server kinds (issue 7).

A raw-socket backend (`RawBackend`) writes exact bytes per request path; a raw client (`RawClient`)
reads exactly what the proxy sends back and then sends the next request on the same connection.
Covered: 1xx interim responses (103 forwarded, 100 dropped, 101 refused), close-delimited bodies
(chunked to HTTP/1.1 clients, close-delimited when the client closes or speaks HTTP/1.0), HEAD / 204
/ 304 without a body whatever their headers say, invalid framing (502 before the head, an aborted
client connection after it, counted in rlb_upstream_invalid_responses_total), and which backend
connections are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest

from regional_lb.app import LoadBalancer
from regional_lb.balancing.base import Backend
from regional_lb.errors import BackendError
from regional_lb.proxy.upstream import Upstream
from tests.rlb_helpers import lb_config, running_lb

SERVERS = ["fast", "aiohttp"]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BIG = bytes(range(256)) * 800                    # 204,800 bytes


@dataclass
class Script:
    """What the backend writes for one path: byte strings, or events to wait for in between."""

    parts: list[bytes | asyncio.Event]
    close: bool = False                          # close the connection after writing


@dataclass
class RawBackend:
    script: dict[str, Script]
    connections: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
                self.requests.append((method, target))
                script = self.script[target]
                for part in script.parts:
                    if isinstance(part, asyncio.Event):
                        await part.wait()
                    else:
                        writer.write(part)
                        await writer.drain()
                if script.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def start(self) -> RawBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            await self.server.wait_closed()


@dataclass
class Response:
    status: int
    head: bytes                                   # status line and header lines, as received
    headers: dict[bytes, bytes]                   # lower-case names (last value wins)
    body: bytes
    chunked: bool = False


class RawClient:
    """One client connection; reads responses with a deliberately small, strict reader."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, lb: LoadBalancer) -> RawClient:
        host, port = lb.listen_addresses[0]
        return cls(*await asyncio.open_connection(host, port))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def send(self, path: str, *, method: str = "GET", extra: str = "", version: str = "1.1") -> None:
        self.writer.write(f"{method} {path} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode())
        await self.writer.drain()

    async def response(self, *, head_request: bool = False) -> Response:
        async with asyncio.timeout(10):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw[:-4].split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines[1:])}
            if status < 200 or head_request or status in (204, 304):
                return Response(status, raw, headers, b"")
            if headers.get(b"transfer-encoding") == b"chunked":
                parts = []
                while True:
                    size = int(await self.reader.readuntil(b"\r\n"), 16)
                    if size == 0:
                        assert await self.reader.readexactly(2) == b"\r\n"
                        return Response(status, raw, headers, b"".join(parts), chunked=True)
                    chunk = await self.reader.readexactly(size + 2)
                    assert chunk.endswith(b"\r\n")
                    parts.append(chunk[:-2])
            if b"content-length" in headers:
                return Response(status, raw, headers, await self.reader.readexactly(int(headers[b"content-length"])))
            return Response(status, raw, headers, await self.reader.read())

    async def get(self, path: str, **kw: str) -> Response:
        await self.send(path, **kw)
        return await self.response(head_request=kw.get("method") == "HEAD")

    async def at_eof(self) -> bool:
        """The proxy closed (or reset) this connection."""
        try:
            async with asyncio.timeout(5):
                return await self.reader.read(1) == b""
        except ConnectionError:
            return True

    async def still_works(self) -> None:
        """The next request on this connection is answered normally."""
        r = await self.get("/ok")
        assert (r.status, r.body) == (200, b"ok")


@contextlib.asynccontextmanager
async def proxy(server: str, script: dict[str, Script], *, read_timeout: float = 5.0
                ) -> AsyncIterator[tuple[LoadBalancer, RawBackend]]:
    backend = await RawBackend({"/ok": Script([OK]), **script}).start()
    try:
        async with running_lb(lb_config([backend.address], timeouts={"backend_read": read_timeout}),
                              server=server) as lb:
            yield lb, backend
    finally:
        await backend.stop()


def invalid_count(lb: LoadBalancer) -> float:
    for line in generate_latest(lb.metrics.registry).decode().splitlines():
        if line.startswith("rlb_upstream_invalid_responses_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- 1xx ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVERS)
async def test_103_is_forwarded_ahead_of_the_final_response_and_100_is_not(server: str) -> None:
    script = {"/hints": Script([b"HTTP/1.1 100 Continue\r\n\r\n",
                                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
                                b"Connection: keep-alive\r\n\r\n",
                                b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
                                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </style.css>\r\n\r\nhello"])}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        await client.send("/hints")
        first = await client.response()
        assert first.head == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        second = await client.response()
        assert second.head == b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
        final = await client.response()
        assert (final.status, final.body) == (200, b"hello")
        await client.still_works()
        await client.close()
        assert backend.connections == 1                   # 1xx and all, the connection was reused


@pytest.mark.parametrize("server", SERVERS)
async def test_an_http10_client_gets_no_interim_response(server: str) -> None:
    script = {"/hints": Script([b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"])}
    async with proxy(server, script) as (lb, _backend):
        client = await RawClient.open(lb)
        await client.send("/hints", version="1.0")
        final = await client.response()
        assert (final.status, final.body) == (200, b"hi")
        await client.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_101_without_an_upgrade_request_is_a_502(server: str) -> None:
    script = {"/switch": Script([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                                 b"\x00\x00\x12\x04"])}
    async with proxy(server, script) as (lb, _backend):
        client = await RawClient.open(lb)
        r = await client.get("/switch")
        assert r.status == 502
        await client.still_works()
        await client.close()
        assert invalid_count(lb) == 1


# -- close-delimited bodies --------------------------------------------------------------------------
def close_delimited(body: bytes) -> Script:
    return Script([b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n", body], close=True)


@pytest.mark.parametrize("server", SERVERS)
async def test_a_close_delimited_body_is_forwarded_in_full_chunked(server: str) -> None:
    async with proxy(server, {"/eof": close_delimited(BIG), "/small": close_delimited(b"tiny")}) as (lb, backend):
        client = await RawClient.open(lb)
        for path, body in (("/eof", BIG), ("/small", b"tiny"), ("/eof", BIG)):
            r = await client.get(path)
            assert (r.status, r.chunked, len(r.body)) == (200, True, len(body))
            assert r.body == body
        await client.still_works()
        await client.close()
        assert backend.connections == 4                  # never reused after a close-delimited body


@pytest.mark.parametrize("server", SERVERS)
async def test_a_close_delimited_body_to_a_closing_or_http10_client(server: str) -> None:
    async with proxy(server, {"/eof": close_delimited(BIG)}) as (lb, _backend):
        client = await RawClient.open(lb)
        r = await client.get("/eof", version="1.0")
        assert r.body == BIG
        assert b"transfer-encoding" not in r.headers
        await client.close()
        client = await RawClient.open(lb)
        r = await client.get("/eof", extra="Connection: close\r\n")
        assert r.body == BIG                              # chunked or close-delimited, but all of it
        assert await client.at_eof()
        await client.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("server", SERVERS)
async def test_curl_sees_the_early_hints_and_the_whole_close_delimited_body(server: str) -> None:
    script = {"/hints": Script([b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"]),
              "/eof": close_delimited(BIG)}
    async with proxy(server, script) as (lb, _backend):
        host, port = lb.listen_addresses[0]
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-v", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{size_download}\n",
            f"http://{host}:{port}/hints", "-o", "/dev/null", f"http://{host}:{port}/eof",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert out.decode().split("\n")[:2] == ["200 2", f"200 {len(BIG)}"]
        assert b"< HTTP/1.1 103 Early Hints" in err
        assert b"< Link: </a.css>; rel=preload" in err
        assert b"Re-using existing connection" in err or b"Reusing existing" in err   # one connection


# -- the bytes both server kinds write ------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVERS)
async def test_both_server_kinds_pass_the_head_on_as_received_and_add_only_their_own(server: str) -> None:
    script = {"/as-is": Script([b"HTTP/1.1 299 Custom Reason\r\nX-A: caf\xe9 \xff\r\nx-lower:  padded \r\n"
                                b"Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                                b"X-LB-Backend: from-below\r\nContent-Length: 2\r\n\r\nhi"])}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        r = await client.get("/as-is")
        assert r.head == (b"HTTP/1.1 299 Custom Reason\r\nX-A: caf\xe9 \xff\r\nx-lower: padded \r\n"
                          b"Content-Length: 2\r\nX-LB-Region: test-region\r\n"
                          b"X-LB-Backend: " + backend.address.encode() + b"\r\n\r\n")   # no Date, Server, ...
        assert r.body == b"hi"
        await client.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_an_http10_keep_alive_client_keeps_its_connection(server: str) -> None:
    async with proxy(server, {"/eof": close_delimited(b"tiny")}) as (lb, _backend):
        client = await RawClient.open(lb)
        for _ in range(2):
            r = await client.get("/ok", version="1.0", extra="Connection: keep-alive\r\n")
            assert (r.status, r.body, r.headers.get(b"connection")) == (200, b"ok", b"keep-alive")
        r = await client.get("/eof", version="1.0", extra="Connection: keep-alive\r\n")
        assert (r.body, r.headers.get(b"connection")) == (b"tiny", b"close")   # no length to give: close
        assert await client.at_eof()
        await client.close()


# -- no body by rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVERS)
async def test_head_204_and_304_carry_no_body_whatever_the_headers_say(server: str) -> None:
    script = {"/head": Script([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n"]),
              "/head-chunked": Script([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]),
              "/304": Script([b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nETag: \"v1\"\r\n\r\n"]),
              "/204": Script([b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"])}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        r = await client.get("/head", method="HEAD")
        assert (r.status, r.headers[b"content-length"]) == (200, b"1000")
        await client.still_works()
        r = await client.get("/head-chunked", method="HEAD")
        assert r.status == 200
        assert b"content-length" not in r.headers
        await client.still_works()
        r = await client.get("/304")
        assert (r.status, r.headers[b"etag"]) == (304, b'"v1"')
        assert b"transfer-encoding" not in r.headers
        await client.still_works()
        assert backend.connections == 1                   # HEAD, 304: the connection stays reusable
        r = await client.get("/204")
        assert r.status == 204
        assert b"content-length" not in r.headers         # a 204 must not carry one
        await client.still_works()                          # ... and "hello" did not reach the client
        await client.close()
        assert backend.connections == 2                   # the bytes after the 204 dropped that connection
        assert invalid_count(lb) == 0


# -- invalid framing ---------------------------------------------------------------------------------
INVALID = {
    "te-and-cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    "signed-cl": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "list-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
    "two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "te-not-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "te-chunked-then-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello",
    "te-gzip-then-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "empty-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\nhello",
    "te-on-http10": b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nx\r\n",
    "control-byte": b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
    "space-in-name": b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "longer-than-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more",
    "http2-version": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    "status-099": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "status-600": b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
    "1xx-with-length": b"HTTP/1.1 199 Odd\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
}


@pytest.mark.parametrize("server", SERVERS)
async def test_invalid_framing_is_a_502_counted_and_the_connection_dropped(server: str) -> None:
    script = {f"/{name}": Script([raw]) for name, raw in INVALID.items()}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        counted = 0
        for name in INVALID:
            r = await client.get(f"/{name}")
            assert r.status == 502, (name, r.head, r.body)
            assert b"sent an invalid response" in r.body, (name, r.body)
            tries = backend.requests.count(("GET", f"/{name}"))      # a GET is retried like other errors
            assert invalid_count(lb) == counted + tries, name
            counted += tries
            await client.still_works()
        await client.close()
        # none of those connections was reused: one per invalid response, and the one for /ok
        assert backend.connections == counted + 1


@pytest.mark.parametrize("server", SERVERS)
async def test_an_invalid_response_is_a_backend_failure_for_outlier_detection(server: str) -> None:
    bad = await RawBackend({"/x": Script([INVALID["te-not-chunked"]])}).start()
    good = await RawBackend({"/x": Script([OK])}).start()
    cfg = lb_config([bad.address, good.address], pool_extra={
        "panic_threshold": 0.0,
        "outlier": {"consecutive_failures": 1, "base_ejection": "60s", "max_ejected_fraction": 0.5}})
    try:
        async with running_lb(cfg, server=server) as lb:
            client = await RawClient.open(lb)
            for _ in range(6):
                r = await client.get("/x")
                assert (r.status, r.body) == (200, b"ok")       # the GET that met `bad` was retried on `good`
            await client.close()
            assert len(bad.requests) == 1                       # then `bad` was ejected
            assert invalid_count(lb) == 1
    finally:
        await bad.stop()
        await good.stop()


@pytest.mark.parametrize("server", SERVERS)
async def test_a_head_over_the_limit_is_a_502(server: str) -> None:
    huge = b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"v" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n"
    async with proxy(server, {"/huge": Script([huge])}) as (lb, _backend):
        client = await RawClient.open(lb)
        r = await client.get("/huge")
        assert r.status == 502
        await client.still_works()
        await client.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_invalid_framing_after_the_head_was_sent_aborts_the_client(server: str) -> None:
    go = asyncio.Event()
    script = {"/late": Script([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", go,
                               b"zz\r\nbroken\r\n0\r\n\r\n"])}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        await client.send("/late")
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        go.set()
        async with asyncio.timeout(10):
            rest = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await client.reader.read(65536):
                    rest += chunk
        assert rest.startswith(b"5\r\nhello\r\n")
        assert not rest.endswith(b"0\r\n\r\n")            # never a complete body
        assert b"broken" not in rest
        assert invalid_count(lb) == 1
        await client.close()
        client = await RawClient.open(lb)                 # the proxy itself is fine
        await client.still_works()
        await client.close()
        assert backend.connections == 2


@pytest.mark.parametrize("server", SERVERS)
async def test_a_backend_that_closes_mid_body_aborts_the_client(server: str) -> None:
    go = asyncio.Event()
    script = {"/cut": Script([b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000, go], close=True)}
    async with proxy(server, script) as (lb, _backend):
        client = await RawClient.open(lb)
        await client.send("/cut")
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 100000" in head
        go.set()
        got = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(10):
                while chunk := await client.reader.read(65536):
                    got += chunk
        assert got == b"a" * 1000                          # then the connection ends: a short body
        assert invalid_count(lb) == 0                      # a broken backend, not an invalid response
        await client.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_a_body_that_stalls_past_backend_read_aborts_the_client(server: str) -> None:
    never = asyncio.Event()
    script = {"/stall": Script([b"HTTP/1.1 200 OK\r\n\r\nfirst part", never])}      # close-delimited, stalls
    async with proxy(server, script, read_timeout=0.3) as (lb, _backend):
        client = await RawClient.open(lb)
        await client.send("/stall")
        got = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(10):
                while chunk := await client.reader.read(65536):
                    got += chunk
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        assert got.endswith(b"first part\r\n")                  # the chunk, never the terminator
        await client.close()
        never.set()
        client = await RawClient.open(lb)
        await client.still_works()
        await client.close()


@pytest.mark.parametrize("server", SERVERS)
async def test_chunked_and_length_bodies_keep_the_connection(server: str) -> None:
    script = {"/chunked": Script([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                                  b"5;ext=1\r\nhello\r\n", b"6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"]),
              "/big": Script([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG), BIG]),
              "/keepalive-10": Script([b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"])}
    async with proxy(server, script) as (lb, backend):
        client = await RawClient.open(lb)
        r = await client.get("/chunked")
        assert r.body == b"hello world"
        assert b"x-t" not in r.headers
        assert b"trailer" not in r.headers
        r = await client.get("/big")
        assert (r.headers[b"content-length"], r.body) == (str(len(BIG)).encode(), BIG)
        r = await client.get("/keepalive-10")
        assert r.body == b"hi"
        await client.still_works()
        await client.close()
        assert backend.connections == 1


# -- the upstream client's keep-alive and replay rules, on real sockets --------------------------------
async def test_a_request_on_a_kept_alive_connection_the_backend_dropped_is_replayed_only_if_idempotent() -> None:
    served: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                n += 1
                if n == 2:                        # the second request on a connection: closed unanswered
                    break
                served.append(n)
                writer.write(OK)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    backend = Backend("b", "127.0.0.1", server.sockets[0].getsockname()[1])
    upstream = Upstream(connect_timeout=2.0, read_timeout=5.0)
    try:
        for method in ("GET", "GET"):
            r = await upstream.send(backend, method, "/", {"Host": "x"}, None)
            assert (r.status, await r.read()) == (200, b"ok")
            r.release()
        assert served == [1, 1]                   # the GET was sent again, on a fresh connection
        assert repr(upstream) == "<Upstream [1 backends | connections: 0 reading, 1 idle]>"
        with pytest.raises(BackendError, match="kept-alive"):
            await upstream.send(backend, "POST", "/", {"Host": "x", "Content-Length": "1"}, b"x")
    finally:
        await upstream.close()
        server.close()
        await server.wait_closed()
