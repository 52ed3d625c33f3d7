"""One way to read a request: a corpus of 200+ requests through `server: fast` and `server: aiohttp`.

Every request (valid and invalid; hand-written edge cases and generated combinations) goes over a
real socket to both server kinds, on a listener with the default request options and on one with
the permissive ones (escaped_slashes: keep, merge_slashes: off, underscores_in_headers: on). Both
must give the client the same statuses, and raw-socket backends must record the same bytes
(request line and header block as received, body de-chunked) from both. Nothing per connection
varies in what the proxy adds (X-Forwarded-For carries no port), so nothing is normalised.
The cases from issue 7's "Why" section are also checked for their exact outcome on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest
import yaml

from regional_lb.app import LoadBalancer
from regional_lb.config import parse_config
from regional_lb.proxy.server import default_backlog, listen_backlog

Record = tuple[str, bytes, bytes]          # (backend, request line + header block as received, body)


class Recorder:
    """A backend on a raw socket: records each request it receives, answers 200 "ok"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[Record] | None = None
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recorder = self

        class Message:
            raw = b""
            body: list[bytes] = []  # noqa: RUF012
            done = False

            def on_message_begin(self) -> None:
                self.body = []
                self.done = False

            def on_body(self, data: bytes) -> None:
                self.body.append(data)

            def on_message_complete(self) -> None:
                self.done = True

        msg = Message()
        parser = httptools.HttpRequestParser(msg)
        task = asyncio.current_task()
        assert task is not None
        self.conns[task] = writer
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                feed = data
                if not msg.raw and not data.startswith(b"CONNECT "):
                    # the proxy sends one request at a time: a read from an empty message starts
                    # with a request line. httptools knows only registered methods; read any other
                    # token as GET (what was received is recorded from msg.raw)
                    feed = re.sub(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+ ", b"GET ", data, count=1)
                msg.raw += data
                try:
                    parser.feed_data(feed)
                except httptools.HttpParserUpgrade:     # a WebSocket handshake: its key is random
                    head = msg.raw[:msg.raw.index(b"\r\n\r\n") + 4]
                    head = re.sub(rb"\r\nSec-WebSocket-Key: [^\r]*", b"", head)
                    if recorder.log is not None:
                        recorder.log.append((recorder.name, head, b""))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                if msg.done:
                    head = msg.raw[:msg.raw.index(b"\r\n\r\n") + 4]
                    if recorder.log is not None:
                        recorder.log.append((recorder.name, head, b"".join(msg.body)))
                    msg.raw = b""
                    msg.done = False
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
        except (httptools.HttpParserError, ConnectionError):
            return
        finally:
            self.conns.pop(task, None)
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.conns.values()):
                writer.close()                      # the handlers see EOF and return
            if self.conns:
                await asyncio.wait(list(self.conns), timeout=5.0)
            await self.server.wait_closed()


PERMISSIVE = {"escaped_slashes": "keep", "merge_slashes": False, "underscores_in_headers": True}


def config_doc(recorders: dict[str, Recorder]) -> dict[str, Any]:
    def pool(name: str) -> dict[str, Any]:
        return {"backends": [{"address": f"127.0.0.1:{recorders[name].port}", "id": name}],
                "health": {"type": "none"}}
    return {
        "region": "test-region",
        "listen": [{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:0", **PERMISSIVE}],
        "admin": {"enabled": False},
        "pools": {name: pool(name) for name in recorders},
        "routes": [
            {"name": "other", "match": {"host": "other.host", "path": "/api/"}, "pool": "other"},
            {"name": "tunnel", "match": {"host": "tunnel.host"}, "pool": "default", "allow_connect": True},
            {"name": "static", "match": {"path": "/static/"}, "pool": "static"},
            {"name": "api", "match": {"path": "/api/"}, "pool": "api"},
            {"name": "default", "match": {"path": "/"}, "pool": "default"},
        ],
    }


@dataclass
class Outcome:
    statuses: list[int] = field(default_factory=list)
    received: list[Record] = field(default_factory=list)


async def read_responses(reader: asyncio.StreamReader, methods: list[str]) -> list[int]:
    """The final statuses of up to len(methods) responses (1xx skipped), until the server closes."""
    statuses: list[int] = []
    buf = b""

    async def fill(n: int) -> bool:
        nonlocal buf
        while len(buf) < n:
            data = await reader.read(65536)
            if not data:
                return False
            buf += data
        return True

    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while len(statuses) < len(methods):
            while b"\r\n\r\n" not in buf:
                data = await reader.read(65536)
                if not data:
                    return statuses
                buf += data
            end = buf.index(b"\r\n\r\n") + 4
            head, buf = buf[:end], buf[end:]
            status = int(head.split(b" ", 2)[1])
            if status < 200:
                continue
            fields = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            method = methods[len(statuses)]
            statuses.append(status)
            if method == "HEAD" or status in (204, 304):
                continue
            if b"content-length" in fields:
                n = int(fields[b"content-length"])
                if not await fill(n):
                    return statuses
                buf = buf[n:]
            elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                while True:
                    while b"\r\n" not in buf:
                        if not await fill(len(buf) + 1):
                            return statuses
                    size_line, buf = buf.split(b"\r\n", 1)
                    size = int(size_line.split(b";")[0], 16)
                    if not await fill(size + 2):
                        return statuses
                    buf = buf[size + 2:]
                    if size == 0:
                        break
            else:
                return statuses                       # close-delimited
    return statuses


async def send_case(port: int, data: bytes, methods: list[str], recorders: dict[str, Recorder]) -> Outcome:
    log: list[Record] = []
    for r in recorders.values():
        r.log = log
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(5.0):
            statuses = await read_responses(reader, methods)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    for r in recorders.values():
        r.log = None
    return Outcome(statuses, log)


# -- the corpus ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    methods: tuple[str, ...] = ("GET",)


def req(line: str, *fields: str, body: bytes = b"", host: str | None = "a.test") -> bytes:
    head = [line]
    if host is not None:
        head.append(f"Host: {host}")
    head.extend(fields)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


HAND_WRITTEN = [
    # request-target
    Case("dot-segments", req("GET /static/../api/auth/me HTTP/1.1")),
    Case("encoded dot-segments", req("GET /static/%2e%2e/api/auth/me HTTP/1.1")),
    Case("mixed-case encoded dots", req("GET /static/%2E./api/x HTTP/1.1")),
    Case("climbing above root", req("GET /../../../etc/passwd HTTP/1.1")),
    Case("dot segment at the end", req("GET /api/x/.. HTTP/1.1")),
    Case("single dots", req("GET /./api/./x/. HTTP/1.1")),
    Case("absolute-form", req("GET http://other.host/api/auth/me HTTP/1.1")),
    Case("absolute-form with port and query", req("GET http://other.host:8080/api/a?x=1 HTTP/1.1")),
    Case("absolute-form https", req("GET https://b.test/static/x HTTP/1.1")),
    Case("absolute-form upper-case scheme", req("GET HTTP://b.test/x HTTP/1.1")),
    Case("absolute-form empty path", req("GET http://b.test HTTP/1.1")),
    Case("absolute-form query only", req("GET http://b.test?q=1 HTTP/1.1")),
    Case("absolute-form userinfo", req("GET http://u:p@b.test/x HTTP/1.1")),
    Case("absolute-form other scheme", req("GET ftp://b.test/x HTTP/1.1")),
    Case("absolute-form bad port", req("GET http://b.test:99999/x HTTP/1.1")),
    Case("absolute-form empty authority", req("GET http:///x HTTP/1.1")),
    Case("absolute-form dot-segments", req("GET http://other.host/static/../api/x HTTP/1.1")),
    Case("absolute-form without Host in 1.1", req("GET http://b.test/x HTTP/1.1", host=None)),
    Case("absolute-form in 1.0 without Host", req("GET http://b.test/x HTTP/1.0", host=None)),
    Case("asterisk OPTIONS", req("OPTIONS * HTTP/1.1"), ("OPTIONS",)),
    Case("asterisk GET", req("GET * HTTP/1.1")),
    Case("CONNECT refused", req("CONNECT b.test:443 HTTP/1.1", host="b.test:443"), ("CONNECT",)),
    Case("CONNECT allowed route", req("CONNECT tunnel.host:443 HTTP/1.1", host="tunnel.host:443"), ("CONNECT",)),
    Case("CONNECT without port", req("CONNECT b.test HTTP/1.1", host="b.test"), ("CONNECT",)),
    Case("fragment", req("GET /x#frag HTTP/1.1")),
    Case("relative target", req("GET x HTTP/1.1")),
    Case("double slash start", req("GET //api/x HTTP/1.1")),
    Case("double slashes inside", req("GET /api//x///y HTTP/1.1")),
    Case("double slash with dots", req("GET /static//../api/x HTTP/1.1")),
    Case("empty query", req("GET /x? HTTP/1.1")),
    Case("query kept as is", req("GET /x?a=%2f/../b&c=%00 HTTP/1.1")),
    Case("query with dots", req("GET /static/?../api HTTP/1.1")),
    Case("encoded slash", req("GET /static%2f..%2fapi/x HTTP/1.1")),
    Case("encoded backslash", req("GET /static/..%5capi HTTP/1.1")),
    Case("raw backslash", req("GET /static\\..\\api HTTP/1.1")),
    Case("encoded NUL", req("GET /x%00.html HTTP/1.1")),
    Case("encoded CRLF", req("GET /x%0d%0aSet-Cookie:a=b HTTP/1.1")),
    Case("encoded DEL", req("GET /x%7f HTTP/1.1")),
    Case("malformed escape", req("GET /x%zz HTTP/1.1")),
    Case("truncated escape", req("GET /x% HTTP/1.1")),
    Case("unreserved escapes", req("GET /%61%70%69/%7Euser HTTP/1.1")),
    Case("reserved escapes lower-case", req("GET /a%3fb%c3%a9 HTTP/1.1")),
    Case("encoded percent", req("GET /a%2541 HTTP/1.1")),
    Case("raw non-ASCII", b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    Case("raw control", b"GET /a\x01 HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    Case("tab in target", b"GET /a\tb HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    Case("space in target", req("GET /a b HTTP/1.1")),
    Case("braces and pipes", req("GET /a{b}|c^d HTTP/1.1")),
    Case("health path via dots", req("GET /x/../lb/healthz HTTP/1.1")),
    # Host
    Case("no Host in 1.1", req("GET /x HTTP/1.1", host=None)),
    Case("no Host in 1.0", req("GET /x HTTP/1.0", host=None)),
    Case("two Hosts", req("GET /x HTTP/1.1", "Host: b.test")),
    Case("two identical Hosts", req("GET /x HTTP/1.1", "Host: a.test")),
    Case("empty Host", req("GET /x HTTP/1.1", host="")),
    Case("Host with userinfo", req("GET /x HTTP/1.1", host="u@a.test")),
    Case("Host with path", req("GET /x HTTP/1.1", host="a.test/x")),
    Case("Host with space", req("GET /x HTTP/1.1", host="a .test")),
    Case("Host with bad port", req("GET /x HTTP/1.1", host="a.test:80x")),
    Case("Host with big port", req("GET /x HTTP/1.1", host="a.test:70000")),
    Case("Host with empty port", req("GET /x HTTP/1.1", host="a.test:")),
    Case("Host IPv6", req("GET /x HTTP/1.1", host="[::1]:8080")),
    Case("Host IPv6 unbracketed", req("GET /x HTTP/1.1", host="::1")),
    Case("Host IPv4", req("GET /x HTTP/1.1", host="127.0.0.1:80")),
    Case("Host upper-case", req("GET /api/x HTTP/1.1", host="OTHER.HOST")),
    Case("Host other.host", req("GET /api/x HTTP/1.1", host="other.host:80")),
    Case("Host trailing dot", req("GET /api/x HTTP/1.1", host="other.host.")),
    Case("bad Host in 1.0", req("GET /x HTTP/1.0", host="a b")),
    # methods and versions
    Case("lower-case method", req("get /x HTTP/1.1")),
    Case("unknown method", req("FOO /x HTTP/1.1")),
    Case("registered extension method", req("PURGE /x HTTP/1.1"), ("PURGE",)),
    Case("WebDAV method", req("PROPFIND /x HTTP/1.1"), ("PROPFIND",)),
    Case("method with bad char", req("G@T /x HTTP/1.1")),
    Case("extension method with a body", req("FOO /x HTTP/1.1", "Content-Length: 3", body=b"abc"), ("FOO",)),
    Case("extension method chunked", req("BREW /x HTTP/1.1", "Transfer-Encoding: chunked",
                                         body=b"3\r\nabc\r\n0\r\n\r\n"), ("BREW",)),
    Case("extension method, 64 characters", req("M" * 64 + " /x HTTP/1.1"), ("M" * 64,)),
    Case("extension method, 65 characters", req("M" * 65 + " /x HTTP/1.1")),
    Case("extension method with every tchar", req("!#$%&'*+-.^_`|~09az /x HTTP/1.1"), ("X",)),
    Case("extension method, absolute-form", req("FOO http://other.host/static/../api/auth/me HTTP/1.1"), ("FOO",)),
    Case("extension method, asterisk", req("FOO * HTTP/1.1")),
    Case("extension method after empty lines", b"\r\n\r\n" + req("FOO /x HTTP/1.1"), ("FOO",)),
    Case("extension methods pipelined", req("get /a HTTP/1.1") + req("GET /b HTTP/1.1") + req("QUUX /c HTTP/1.1")
         + req("POST /d HTTP/1.1", "Content-Length: 4", body=b"wxyz") + req("FOO /e HTTP/1.1")
         + req("PUT /f HTTP/1.1", "Transfer-Encoding: chunked", body=b"1\r\nq\r\n0\r\n\r\n")
         + req("BAR /g HTTP/1.1", "Content-Length: 2", body=b"ok") + req("baz /h HTTP/1.1"),
         ("get", "GET", "QUUX", "POST", "FOO", "PUT", "BAR", "baz")),
    Case("extension method sent as GET's stand-in", req("GET /x HTTP/1.1") + req("ZAP /y HTTP/1.1")
         + req("GET /z HTTP/1.1"), ("GET", "ZAP", "GET")),
    Case("HEAD", req("HEAD /x HTTP/1.1"), ("HEAD",)),
    Case("DELETE", req("DELETE /api/x HTTP/1.1"), ("DELETE",)),
    Case("HTTP/1.0", req("GET /x HTTP/1.0")),
    Case("HTTP/2.0 line", req("GET /x HTTP/2.0")),
    Case("HTTP/1.2", req("GET /x HTTP/1.2")),
    Case("HTTP/0.9 style", b"GET /x\r\n\r\n"),
    Case("lower-case version", req("GET /x http/1.1")),
    Case("two spaces", req("GET  /x HTTP/1.1")),
    Case("bare LF", b"GET /x HTTP/1.1\nHost: a.test\n\n"),
    Case("leading empty line", b"\r\nGET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    # framing
    Case("empty TE with CL", req("POST /x HTTP/1.1", "Transfer-Encoding: ", "Content-Length: 3", body=b"abc"),
         ("POST",)),
    Case("empty TE", req("POST /x HTTP/1.1", "Transfer-Encoding:", body=b"0\r\n\r\n"), ("POST",)),
    Case("TE and CL", req("POST /x HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 3",
                          body=b"0\r\n\r\n"), ("POST",)),
    Case("TE gzip", req("POST /x HTTP/1.1", "Transfer-Encoding: gzip", body=b"abc"), ("POST",)),
    Case("TE chunked, gzip", req("POST /x HTTP/1.1", "Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"),
         ("POST",)),
    Case("TE gzip, chunked", req("POST /x HTTP/1.1", "Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
         ("POST",)),
    Case("TE chunked twice", req("POST /x HTTP/1.1", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked",
                                 body=b"0\r\n\r\n"), ("POST",)),
    Case("TE Chunked", req("POST /x HTTP/1.1", "Transfer-Encoding: Chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
         ("POST",)),
    Case("TE chunked", req("POST /x HTTP/1.1", "Transfer-Encoding: chunked",
                           body=b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), ("POST",)),
    Case("TE in HTTP/1.0", req("POST /x HTTP/1.0", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), ("POST",)),
    Case("TE with spaces", req("POST /x HTTP/1.1", "Transfer-Encoding:  chunked ", body=b"0\r\n\r\n"), ("POST",)),
    Case("TE x-chunked", req("POST /x HTTP/1.1", "Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), ("POST",)),
    Case("CL", req("POST /x HTTP/1.1", "Content-Length: 3", body=b"abc"), ("POST",)),
    Case("CL 0 on GET", req("GET /x HTTP/1.1", "Content-Length: 0")),
    Case("CL with sign", req("POST /x HTTP/1.1", "Content-Length: +3", body=b"abc"), ("POST",)),
    Case("CL negative", req("POST /x HTTP/1.1", "Content-Length: -3", body=b"abc"), ("POST",)),
    Case("CL list", req("POST /x HTTP/1.1", "Content-Length: 3, 3", body=b"abc"), ("POST",)),
    Case("CL inner space", req("POST /x HTTP/1.1", "Content-Length: 3 3", body=b"abc"), ("POST",)),
    Case("CL twice same", req("POST /x HTTP/1.1", "Content-Length: 3", "Content-Length: 3", body=b"abc"),
         ("POST",)),
    Case("CL twice different", req("POST /x HTTP/1.1", "Content-Length: 3", "Content-Length: 4", body=b"abcd"),
         ("POST",)),
    Case("CL with OWS", req("POST /x HTTP/1.1", "Content-Length:  3 ", body=b"abc"), ("POST",)),
    Case("CL hex", req("POST /x HTTP/1.1", "Content-Length: 0x3", body=b"abc"), ("POST",)),
    Case("CL empty", req("POST /x HTTP/1.1", "Content-Length:", body=b""), ("POST",)),
    Case("Expect 100-continue", req("POST /x HTTP/1.1", "Content-Length: 3", "Expect: 100-continue",
                                    body=b"abc"), ("POST",)),
    # header fields
    Case("obs-fold", req("GET /x HTTP/1.1", "X-A: a", " folded")),
    Case("obs-fold tab", req("GET /x HTTP/1.1", "X-A: a", "\tfolded")),
    Case("space before colon", req("GET /x HTTP/1.1", "X-A : a")),
    Case("space in name", req("GET /x HTTP/1.1", "X A: a")),
    Case("empty name", req("GET /x HTTP/1.1", ": a")),
    Case("name with slash", req("GET /x HTTP/1.1", "X/A: a")),
    Case("name with non-ASCII", b"GET /x HTTP/1.1\r\nHost: a.test\r\nX\xc3\xa9: a\r\n\r\n"),
    Case("value with NUL", b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-A: a\x00b\r\n\r\n"),
    Case("value with bare CR", b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-A: a\rb\r\n\r\n"),
    Case("value with obs-text", b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-A: caf\xe9\r\n\r\n"),
    Case("value with tab", b"GET /x HTTP/1.1\r\nHost: a.test\r\nX-A: a\tb\r\n\r\n"),
    Case("value with trailing space", req("GET /x HTTP/1.1", "X-A: a  \t")),
    Case("empty value", req("GET /x HTTP/1.1", "X-A:")),
    Case("underscore name", req("GET /x HTTP/1.1", "X_User: admin", "X-User: bob")),
    Case("underscore Host-alike", req("GET /x HTTP/1.1", "Content_Length: 5")),
    Case("header names keep their case", req("GET /x HTTP/1.1", "x-lower: 1", "X-UPPER: 2", "X-Mixed-Case: 3")),
    Case("hop-by-hop dropped", req("GET /x HTTP/1.1", "Connection: keep-alive, X-Drop", "X-Drop: 1",
                                   "Keep-Alive: 5", "TE: trailers", "Proxy-Connection: x")),
    Case("forwarding headers replaced", req("GET /x HTTP/1.1", "X-Forwarded-For: 6.6.6.6", "Forwarded: for=6.6.6.6",
                                            "Via: 1.0 evil", "X-Real-IP: 6.6.6.6")),
    Case("cookies", req("GET /x HTTP/1.1", "Cookie: a=1", "Cookie: b=2")),
    Case("repeated User-Agent", req("GET /x HTTP/1.1", "User-Agent: a", "User-Agent: a")),
    Case("repeated Content-Type", req("GET /x HTTP/1.1", "Content-Type: a", "content-type: b")),
    Case("many headers", req("GET /x HTTP/1.1", *(f"X-H{i}: {i}" for i in range(60)))),
    Case("too many headers", req("GET /x HTTP/1.1", *(f"X-H{i}: {i}" for i in range(120)))),
    Case("over-long header", req("GET /x HTTP/1.1", "X-Long: " + "v" * 9000)),
    Case("over-long target", req("GET /" + "a" * 9000 + " HTTP/1.1")),
    Case("websocket upgrade without key", req("GET /ws HTTP/1.1", "Connection: Upgrade", "Upgrade: websocket")),
    Case("Connection: close", req("GET /x HTTP/1.1", "Connection: close")),
    Case("websocket with an odd target", req("GET /ws/%c3%a9/{x}/../y?q=%2f/../z HTTP/1.1", "Connection: Upgrade",
                                             "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                             "Sec-WebSocket-Version: 13")),
    # pipelining
    Case("pipelined three", req("GET /a HTTP/1.1") + req("GET /static/../b HTTP/1.1") + req("HEAD /c HTTP/1.1"),
         ("GET", "GET", "HEAD")),
    Case("pipelined with a body", req("GET /a HTTP/1.1") + req("POST /b HTTP/1.1", "Content-Length: 2", body=b"hi")
         + req("GET /c HTTP/1.1"), ("GET", "POST", "GET")),
    Case("pipelined then bad", req("GET /a HTTP/1.1") + req("GET /b HTTP/1.1", host=None) + req("GET /c HTTP/1.1"),
         ("GET", "GET", "GET")),
    Case("pipelined then smuggled", req("GET /a HTTP/1.1")
         + req("POST /b HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 4", body=b"0\r\n\r\n")
         + req("GET /c HTTP/1.1"), ("GET", "POST", "GET")),
    Case("pipelined absolute-form", req("GET http://other.host/api/1 HTTP/1.1") + req("GET /api/2 HTTP/1.1"),
         ("GET", "GET")),
    Case("pipelined twenty", b"".join(req(f"GET /p{i} HTTP/1.1") for i in range(20)), ("GET",) * 20),
    Case("body full of CRLFCRLF", req("POST /x HTTP/1.1", "Content-Length: 40000", body=b"\r\n\r\n" * 10000),
         ("POST",)),
    Case("body with a request inside", req("POST /x HTTP/1.1", "Content-Length: 37",
                                           body=b"GET /admin HTTP/1.1\r\nHost: a.test\r\n\r\n")
         + req("GET /after HTTP/1.1"), ("POST", "GET")),
    Case("pipelined 1.0 keep-alive", req("GET /a HTTP/1.0", "Connection: keep-alive") + req("GET /b HTTP/1.1"),
         ("GET", "GET")),
]


def generated() -> list[Case]:
    cases: list[Case] = []
    targets = ["/", "/api/x", "/static/a.css", "/static/../api/y", "/a/./b", "/%41%42", "/a%2Fb", "/a//b",
               "/.well-known/x", "/a/..b", "/static/%2E%2E/%2e%2E/api", "/x?q=/../a", "/%7e/%5F", "/a%3B",
               "http://a.test/api/z", "http://other.host/api/z", "/a;b=c/d", "/a/b/../../..", "/a%20b", "/%c3%a9"]
    hosts: list[str | None] = ["a.test", "other.host", None]
    for target, host, method in itertools.product(targets, hosts, ["GET", "DELETE"]):
        cases.append(Case(f"gen {method} {target} host={host}", req(f"{method} {target} HTTP/1.1", host=host),
                          (method,)))
    framings = [(), ("Content-Length: 4",), ("Transfer-Encoding: chunked",), ("Content-Length: 4", "Content-Length: 4"),
                ("Transfer-Encoding: chunked", "Content-Length: 4"), ("Transfer-Encoding: identity",),
                ("Content-Length: 04",), ("Content-Length: 4 ",)]
    bodies = {(): b"", ("Transfer-Encoding: chunked",): b"4\r\nbody\r\n0\r\n\r\n"}
    for framing, version in itertools.product(framings, ["1.1", "1.0"]):
        body = bodies.get(framing, b"body" if "Transfer-Encoding: chunked" not in framing else b"0\r\n\r\n")
        cases.append(Case(f"gen POST {framing} HTTP/{version}",
                          req(f"POST /api/p HTTP/{version}", *framing, body=body), ("POST",)))
    names = ["X-Ok", "x_under", "X.Dot", "X~Tilde", "X!Bang", "X#Hash", "X'Quote", "X(Paren)", "X\"Q", "X,Comma",
             "X;Semi", "X=Eq", "X[B]", "X{C}", "X@At", "X?Q", "X`Tick", "X|Pipe"]
    for name in names:
        cases.append(Case(f"gen header name {name}", req("GET /h HTTP/1.1", f"{name}: v")))
    return cases


CORPUS = HAND_WRITTEN + generated()


@contextlib.asynccontextmanager
async def two_servers() -> AsyncIterator[tuple[dict[str, Recorder], dict[str, LoadBalancer]]]:
    recorders = {name: Recorder(name) for name in ("other", "static", "api", "default")}
    for r in recorders.values():
        await r.start()
    config = parse_config(yaml.safe_dump(config_doc(recorders)), file="differential.yaml")
    lbs = {kind: LoadBalancer(config, server=kind) for kind in ("fast", "aiohttp")}
    try:
        for lb in lbs.values():
            await lb.start()
        yield recorders, lbs
    finally:
        for lb in lbs.values():
            await lb.stop()
        for r in recorders.values():
            await r.close()


async def run_corpus(listener: int) -> dict[str, dict[str, Outcome]]:
    out: dict[str, dict[str, Outcome]] = {}
    async with two_servers() as (recorders, lbs):
        for kind, lb in lbs.items():
            port = lb.listen_addresses[listener][1]
            for case in CORPUS:
                out.setdefault(case.name, {})[kind] = await send_case(port, case.data, list(case.methods), recorders)
    return out


def test_the_corpus_is_large_and_named_uniquely() -> None:
    assert len(CORPUS) >= 200
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("listener", [0, 1], ids=["default-options", "permissive-options"])
async def test_both_server_kinds_read_every_request_the_same_way(listener: int) -> None:
    results = await run_corpus(listener)
    differ = []
    for case in CORPUS:
        fast, slow = results[case.name]["fast"], results[case.name]["aiohttp"]
        if fast != slow:
            differ.append(f"{case.name}: fast {fast} != aiohttp {slow}")
        assert fast.statuses, f"{case.name}: no answer at all"
    assert not differ, "\n".join(differ)
    outcome = {name: r["fast"] for name, r in results.items()}
    # a spread of answers, not everything refused or everything accepted
    statuses = {s for o in outcome.values() for s in o.statuses}
    assert {200, 400, 405, 501, 505} <= statuses
    assert sum(1 for o in outcome.values() if o.received) >= 100


def head_of(outcome: Outcome) -> tuple[str, str, dict[str, str]]:
    """(backend, request line, lower-cased headers) of the one request a backend received."""
    assert len(outcome.received) == 1, outcome
    backend, head, _ = outcome.received[0]
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.lower()] = value.strip()
    return backend, lines[0], fields


async def test_the_issue_cases_on_both_server_kinds() -> None:
    results = await run_corpus(0)
    for kind in ("fast", "aiohttp"):
        got = {name: r[kind] for name, r in results.items()}
        # route policy cannot be bypassed with dot-segments: the api route, forwarded as routed
        backend, line, _ = head_of(got["dot-segments"])
        assert (backend, line) == ("api", "GET /api/auth/me HTTP/1.1")
        assert head_of(got["encoded dot-segments"])[:2] == ("api", "GET /api/auth/me HTTP/1.1")
        assert head_of(got["climbing above root"])[:2] == ("default", "GET /etc/passwd HTTP/1.1")
        # absolute-form: matched on its path, with the URI's authority as Host
        backend, line, fields = head_of(got["absolute-form"])
        assert (backend, line, fields["host"]) == ("other", "GET /api/auth/me HTTP/1.1", "other.host")
        assert fields["x-forwarded-host"] == "other.host"
        assert head_of(got["absolute-form in 1.0 without Host"])[2]["host"] == "b.test"
        # Host rules
        for name in ("no Host in 1.1", "two Hosts", "two identical Hosts", "empty Host", "Host with userinfo",
                     "Host with path", "Host with space", "Host with bad port", "Host with big port",
                     "Host IPv6 unbracketed", "absolute-form without Host in 1.1"):
            assert got[name].statuses == [400], name
            assert got[name].received == [], name
        assert got["no Host in 1.0"].statuses == [200]
        # methods
        # extension methods and other spellings: forwarded as received (HAProxy, nginx)
        assert head_of(got["lower-case method"])[1] == "get /x HTTP/1.1"
        assert head_of(got["unknown method"])[1] == "FOO /x HTTP/1.1"
        _, line, fields = head_of(got["extension method with a body"])
        assert (line, fields["content-length"]) == ("FOO /x HTTP/1.1", "3")
        assert got["extension method with a body"].received[0][2] == b"abc"
        assert head_of(got["extension method chunked"])[1] == "BREW /x HTTP/1.1"
        assert got["extension method chunked"].received[0][2] == b"abc"
        assert head_of(got["extension method, 64 characters"])[1] == "M" * 64 + " /x HTTP/1.1"
        assert head_of(got["extension method with every tchar"])[1] == "!#$%&'*+-.^_`|~09az /x HTTP/1.1"
        backend, line, fields = head_of(got["extension method, absolute-form"])
        assert (backend, line, fields["host"]) == ("other", "FOO /api/auth/me HTTP/1.1", "other.host")
        assert head_of(got["extension method after empty lines"])[1] == "FOO /x HTTP/1.1"
        piped = got["extension methods pipelined"]
        assert piped.statuses == [200] * 8
        assert [h.split(b"\r\n")[0] for _, h, _ in piped.received] == [
            b"get /a HTTP/1.1", b"GET /b HTTP/1.1", b"QUUX /c HTTP/1.1", b"POST /d HTTP/1.1", b"FOO /e HTTP/1.1",
            b"PUT /f HTTP/1.1", b"BAR /g HTTP/1.1", b"baz /h HTTP/1.1"]
        assert [body for _, _, body in piped.received] == [b"", b"", b"", b"wxyz", b"", b"q", b"ok", b""]
        assert [h.split(b"\r\n")[0] for _, h, _ in got["extension method sent as GET's stand-in"].received] == [
            b"GET /x HTTP/1.1", b"ZAP /y HTTP/1.1", b"GET /z HTTP/1.1"]
        for name in ("method with bad char", "extension method, 65 characters", "extension method, asterisk"):
            assert got[name].statuses == [400], name
            assert got[name].received == [], name
        assert head_of(got["registered extension method"])[1] == "PURGE /x HTTP/1.1"
        assert got["HTTP/2.0 line"].statuses == [505]
        # framing
        for name in ("empty TE with CL", "empty TE", "TE and CL", "TE gzip", "TE chunked, gzip", "TE chunked twice",
                     "TE in HTTP/1.0", "CL with sign", "CL list", "CL inner space", "CL twice same",
                     "CL twice different", "obs-fold", "space before colon", "value with NUL"):
            assert got[name].statuses == [400], name
            assert got[name].received == [], name
        assert got["TE gzip, chunked"].statuses == [501]
        assert got["repeated User-Agent"].statuses == got["repeated Content-Type"].statuses == [400]
        assert got["TE chunked"].received[0][2] == b"abcde"
        # paths
        for name in ("encoded slash", "encoded backslash", "raw backslash", "encoded NUL", "encoded CRLF",
                     "malformed escape", "fragment", "asterisk GET", "CONNECT without port"):
            assert got[name].statuses == [400], name
        assert got["CONNECT refused"].statuses == [405]
        assert head_of(got["unreserved escapes"])[1] == "GET /api/~user HTTP/1.1"
        assert head_of(got["reserved escapes lower-case"])[1] == "GET /a%3Fb%C3%A9 HTTP/1.1"
        assert head_of(got["double slashes inside"])[:2] == ("api", "GET /api/x/y HTTP/1.1")
        assert head_of(got["query kept as is"])[1] == "GET /x?a=%2f/../b&c=%00 HTTP/1.1"
        assert head_of(got["asterisk OPTIONS"])[1] == "OPTIONS * HTTP/1.1"
        # header names with '_' dropped by default
        _, _, fields = head_of(got["underscore name"])
        assert "x_user" not in fields
        assert fields["x-user"] == "bob"
        assert head_of(got["value with obs-text"])[2]["x-a"] == "caf\xe9"       # bytes passed on as received
        # pipelining: answered in order, the bad one closes the connection
        assert got["pipelined three"].statuses == [200, 200, 200]
        assert [h.split(b"\r\n")[0] for _, h, _ in got["pipelined three"].received] == [
            b"GET /a HTTP/1.1", b"GET /b HTTP/1.1", b"HEAD /c HTTP/1.1"]
        assert got["pipelined then bad"].statuses == [200, 400]
        assert got["pipelined then smuggled"].statuses == [200, 400]
        assert len(got["pipelined then smuggled"].received) == 1
        assert got["pipelined twenty"].statuses == [200] * 20
        assert got["body full of CRLFCRLF"].received[0][2] == b"\r\n\r\n" * 10000
        inside = got["body with a request inside"]
        assert inside.statuses == [200, 200]
        assert [h.split(b"\r\n")[0] for _, h, _ in inside.received] == [b"POST /x HTTP/1.1", b"GET /after HTTP/1.1"]
        ws = head_of(got["websocket with an odd target"])[1]          # forwarded as routed, not requoted
        assert ws == "GET /ws/%C3%A9/y?q=%2f/../z HTTP/1.1"
        assert got["CONNECT allowed route"].received[0][1].startswith(b"CONNECT tunnel.host:443 HTTP/1.1\r\n")


async def test_the_permissive_listener_keeps_escaped_slashes_and_underscores() -> None:
    results = await run_corpus(1)
    for kind in ("fast", "aiohttp"):
        got = {name: r[kind] for name, r in results.items()}
        assert head_of(got["encoded slash"])[:2] == ("default", "GET /static%2F..%2Fapi/x HTTP/1.1")
        assert head_of(got["encoded backslash"])[1] == "GET /static/..%5Capi HTTP/1.1"
        assert got["encoded NUL"].statuses == [400]                  # control bytes: always refused
        assert head_of(got["double slashes inside"])[1] == "GET /api//x///y HTTP/1.1"
        assert head_of(got["underscore name"])[2]["x_user"] == "admin"


def test_the_listen_backlog_defaults_to_somaxconn(tmp_path: Any) -> None:
    f = tmp_path / "somaxconn"
    f.write_text("4242\n")
    assert default_backlog(str(f)) == 4242
    assert default_backlog(str(tmp_path / "missing")) == 4096
    f.write_text("junk")
    assert default_backlog(str(f)) == 4096
    assert listen_backlog(17) == 17
    assert listen_backlog(None) == default_backlog()


async def test_a_configured_backlog_reaches_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both server kinds pass the listener's backlog to listen() (seen from the socket calls)."""
    import socket
    seen: list[int] = []
    real_listen = socket.socket.listen

    def spy(self: socket.socket, backlog: int = 0) -> None:
        seen.append(backlog)
        real_listen(self, backlog)

    monkeypatch.setattr(socket.socket, "listen", spy)
    for kind in ("fast", "aiohttp"):
        seen.clear()
        doc = {"region": "r", "listen": [{"address": "127.0.0.1:0", "backlog": 777}], "admin": {"enabled": False},
               "pools": {"p": {"backends": [{"address": "127.0.0.1:1"}], "health": {"type": "none"}}},
               "routes": [{"pool": "p"}]}
        lb = LoadBalancer(parse_config(yaml.safe_dump(doc)), server=kind)
        await lb.start()
        try:
            assert seen == [777], kind
        finally:
            await lb.stop()


def test_listener_request_options_are_validated() -> None:
    from gslb.common.configload import ConfigError
    base = {"region": "r", "pools": {"p": {"backends": [{"address": "127.0.0.1:1"}]}}, "routes": [{"pool": "p"}]}
    for listen, message in (({"escaped_slashes": "decode"}, "escaped_slashes"), ({"backlog": 0}, "backlog"),
                            ({"merge_slashes": "yes"}, "merge_slashes"), ({"underscore_in_headers": True},
                                                                          "underscore_in_headers")):
        doc = {**base, "listen": [{"address": "127.0.0.1:0", **listen}]}
        with pytest.raises(ConfigError, match=message):
            parse_config(yaml.safe_dump(doc))


async def send_in_reads(port: int, parts: list[bytes], methods: list[str], recorders: dict[str, Recorder]) -> Outcome:
    """send_case with the bytes written in several TCP segments (a pause lets each arrive as a
    read of its own; if two were read together the case only gets easier)."""
    log: list[Record] = []
    for r in recorders.values():
        r.log = log
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        async with asyncio.timeout(5.0):
            statuses = await read_responses(reader, methods)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    for r in recorders.values():
        r.log = None
    return Outcome(statuses, log)


SPLIT_CASES = {
    "method cut": ([b"FO", b"O /x HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["FOO"]),
    "method cut after empty lines": ([b"\r\n\r\nBR", b"EW /x HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["BREW"]),
    "head cut": ([b"FOO /x HTTP/1.1\r\nHo", b"st: a.test\r\n\r\n", b"get /y HTTP/1.1\r\nHost: a.test\r\n\r\n"],
                 ["FOO", "get"]),
    "body cut, then an extension method": (
        [b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nwx",
         b"yzBAR /y HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["POST", "BAR"]),
    "chunked body cut, then an extension method": (
        [b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nwx\r\n",
         b"0\r\n\r\nBAR /y HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["POST", "BAR"]),
}


async def test_extension_methods_across_reads_on_both_server_kinds() -> None:
    """Where a read ends inside a method, a head or a body, the next request's method is still
    read as sent: the aiohttp path tracks where each request starts (proxy/server.py)."""
    async with two_servers() as (recorders, lbs):
        for kind, lb in lbs.items():
            port = lb.listen_addresses[0][1]
            for name, (parts, methods) in SPLIT_CASES.items():
                got = await send_in_reads(port, parts, methods, recorders)
                assert got.statuses == [200] * len(methods), (kind, name, got)
                lines = [h.split(b"\r\n")[0].split(b" ")[0].decode() for _, h, _ in got.received]
                assert lines == methods, (kind, name)
            # a method that never ends: held back at most _HOLD_MAX bytes, then llhttp refuses it
            got = await send_in_reads(port, [b"M" * 40, b"M" * 40, b" /x HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["M"],
                                      recorders)
            assert got.statuses == [400], kind
            assert not got.received, kind
            got = await send_in_reads(port, [b"\r\n" * 600, b"FOO /x HTTP/1.1\r\nHost: a.test\r\n\r\n"], ["FOO"],
                                      recorders)
            assert got.statuses == [200], kind
