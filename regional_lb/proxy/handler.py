"""The request path: route, pick, forward, stream back  [edge].

For each request `ProxyHandler.__call__`:

1. reads the request head through regional_lb/target.py (`read`: the request-target, Host,
   path, method and framing checked and normalised; 400 / 501 / 505 and a close if refused),
   so that routing and the backend see the same normalised target -- on both server kinds;
2. answers the health endpoint (`/lb/healthz`) itself;
3. matches a route on the normalised host and path (404 if none; CONNECT 405 unless the route
   allows it: then a tunnel, regional_lb/proxy/connect.py) and rewrites the headers
   (regional_lb/headers.py);
4. asks the route's policy for a backend (the stick table first for sticky_learn), as in
   regional_lb/balancing (the policies) and regional_lb/state (the stick table) describe; no pick -> 503;
5. sends the request with its body streamed (bodies up to 64 KiB are buffered so that an
   idempotent request can be replayed); connect failures are retried on another backend,
   failures after sending only for idempotent requests with a replayable body, within the
   pool's attempts and retry budget;
6. forwards the backend's 1xx (103 Early Hints, ...) to HTTP/1.1 clients as they arrive, then
   streams the final response back as the backend framed it (regional_lb/proxy/upstream.py:
   small bodies in one write, HEAD / 204 / 304 without one, a close-delimited body chunked),
   with X-LB-Region / X-LB-Backend and the policy's Set-Cookie added, and reports the outcome
   and latency to the pool.

Failures before the response headers become short plain-text 502 / 503 / 504 responses (an
invalid response is a 502, counted in rlb_upstream_invalid_responses_total); a backend that
breaks mid-body makes the proxy abort the client connection (a truncated body the client can
detect), never an exception escaping to aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict, istr

from regional_lb.balancing.base import RequestInfo
from regional_lb.errors import BackendConnectError, BodyTooLarge, InvalidResponse, NoBackend, ProxyError
from regional_lb.headers import upstream_headers
from regional_lb.proxy.server import ProxyProtocol, plain_response
from regional_lb.proxy.upstream import LENGTH, NONE, interim_head, response_head
from regional_lb.retry import may_retry
from regional_lb.target import BadRequest, Request, read_request

if TYPE_CHECKING:
    from regional_lb.config import Listener
    from regional_lb.runtime import RouteRuntime
    from regional_lb.seams import ProxyContext

access_log = logging.getLogger("regional_lb.access")
log = logging.getLogger("regional_lb.proxy")

BUFFER_LIMIT = 64 * 1024            # request/response bodies up to this are read whole
_X_LB_REGION = istr("X-LB-Region")
_EXPECT = istr("Expect")
_EMPTY: frozenset[str] = frozenset()
_NO_STATE: Mapping[str, bool] = {}          # body state of a body-less request (never written)
_INFO = logging.INFO


def parse_cookie_header(header: str) -> dict[str, str]:
    """name -> value of a Cookie header (the first of a repeated name; quotes stripped)."""
    parsed: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if sep and name and name not in parsed:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            parsed[name] = value
    return parsed


# Cookie header -> its parse, shared (read-only): a returning client repeats its Cookie header on
# every request. Bounded: headers up to _PARSED_MAX_LEN characters, _PARSED_ENTRIES of them
# (cleared when full), ~2 MB at most.
_PARSED: dict[str, dict[str, str]] = {}
_PARSED_MAX_LEN = 512
_PARSED_ENTRIES = 4096


class LazyCookies(Mapping[str, str]):
    """The request's cookies, parsed from the Cookie header only if a policy asks."""

    __slots__ = ("_header", "_parsed")

    def __init__(self, header: str) -> None:
        self._header = header
        self._parsed: dict[str, str] | None = None

    def _get(self) -> dict[str, str]:
        parsed = self._parsed
        if parsed is None:
            header = self._header
            parsed = _PARSED.get(header)
            if parsed is None:
                parsed = parse_cookie_header(header)
                if len(header) <= _PARSED_MAX_LEN:
                    if len(_PARSED) >= _PARSED_ENTRIES:
                        _PARSED.clear()
                    _PARSED[header] = parsed
            self._parsed = parsed
        return parsed

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def get(self, key: str, default: Any = None) -> Any:
        if not self._header:
            return default
        return self._get().get(key, default)


async def _limited(stream: aiohttp.StreamReader, limit: int, state: dict[str, bool]) -> AsyncIterator[bytes]:
    """A chunked request body, refusing more than `limit` bytes."""
    total = 0
    async for chunk in stream.iter_any():
        total += len(chunk)
        if total > limit:
            state["too_large"] = True
            raise BodyTooLarge()
        yield chunk


async def _send_and_close(request: BaseRequest, resp: web.StreamResponse) -> web.StreamResponse:
    """Send `resp` now and close the connection: the rest of the request body is never read
    (aiohttp would otherwise linger reading and discarding it)."""
    with contextlib.suppress(ConnectionError):
        await resp.prepare(request)
        await resp.write_eof()
    request.protocol.force_close()
    return resp


def _is_websocket(headers: Mapping[str, str]) -> bool:
    upgrade = headers.get("Upgrade")
    if upgrade is None or upgrade.lower() != "websocket":
        return False
    return "upgrade" in headers.get("Connection", "").lower()


class _Sent(web.StreamResponse):
    """A response `ProxyHandler._respond` wrote itself: aiohttp's server only learns its status and
    whether the connection stays open (prepare and write_eof have nothing left to do)."""

    def __init__(self, status: int, *, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._keep_alive = keep_alive

    async def prepare(self, request: BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class ProxyHandler:
    """The aiohttp low-level handler for one listener."""

    def __init__(self, lb: ProxyContext, listener: Listener) -> None:
        self.lb = lb
        self.scheme = listener.scheme
        self.tls = listener.tls is not None
        self.options = listener.requests            # how targets and header names are read

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        proto = request.protocol
        if not isinstance(proto, ProxyProtocol):    # (aiohttp's own server, as some tests run it)
            return await self.handle(request)
        proto.request_started()
        try:
            return await self.handle(request)
        finally:
            proto.request_finished()

    def read(self, request: Any) -> tuple[Request, Any]:
        """The request head through target.read_request (raises BadRequest), and its headers as a
        case-insensitive multidict for policies and upstream_headers. aiohttp's own reading is
        not trusted for this: its raw fields are read again, values as latin-1 so that the backend
        gets the bytes the client sent."""
        fields = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers]
        norm = read_request(request.method, request.raw_path, request.version, fields, self.options)
        return norm, CIMultiDict(norm.headers)

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        lb = self.lb
        rt = lb.rt
        try:
            norm, headers = self.read(request)
        except BadRequest as exc:
            log.debug("refused a request from %s: %s %s", request.remote, exc.status, exc)
            return plain_response(exc.status, f"{exc}\n", close=True)
        path = norm.path
        if path == rt.health_path:
            status, body = lb.healthz_body()
            return web.Response(status=status, body=body, content_type="application/json",
                                headers={"Cache-Control": "no-store"})
        host = norm.host
        route = rt.table.match(host, path)
        if route is None:
            return plain_response(404, "no route for this host and path\n")
        if norm.connect and not route.allow_connect:
            return plain_response(405, "CONNECT is not allowed here\n", close=True)
        rr = rt.routes[route.name]
        peer = request.remote or ""
        out_headers, client_ip = self.upstream_headers(request, peer, rt.forwarding, headers)
        info = RequestInfo(client_ip, norm.method, host, norm.target, headers,
                           LazyCookies(headers.get("Cookie", "")), self.tls)
        if norm.connect:                # allowed by the route (only aiohttp's path gets here)
            from regional_lb.proxy.connect import proxy_connect
            return await proxy_connect(self, request, rr, info, out_headers)
        if "Upgrade" in headers and _is_websocket(headers):
            from regional_lb.proxy.websocket import proxy_websocket
            return await proxy_websocket(self, request, rr, info, out_headers)
        return await self._forward(request, rr, info, out_headers)

    def upstream_headers(self, request: Any, peer: str, settings: Any, headers: Any) -> tuple[Any, str]:
        """The headers for the backend and the client address (headers.upstream_headers)."""
        return upstream_headers(headers, peer=peer, scheme=self.scheme, settings=settings)

    # -- the normal request path ---------------------------------------------------------------
    async def _body(self, request: BaseRequest, out_headers: Any
                    ) -> tuple[Any, bool, Mapping[str, bool]]:
        """(body to send, streamed (not replayable), state flags) or raises BodyTooLarge."""
        state: dict[str, bool] = {}
        if not request.body_exists:
            return None, False, state
        limit = self.lb.config.limits.max_body_size
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLarge()
        if _EXPECT in out_headers:
            if out_headers[_EXPECT].lower() == "100-continue" and request.version >= (1, 1):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            del out_headers[_EXPECT]
        if length is not None:
            if length <= BUFFER_LIMIT:
                return await request.read(), False, state
            return request.content, True, state
        return _limited(request.content, limit, state), True, state

    async def _forward(self, request: BaseRequest, rr: RouteRuntime, info: RequestInfo,
                       out_headers: Any) -> web.StreamResponse:
        lb = self.lb
        clock = lb.clock
        t0 = clock()
        route = rr.route
        prt = rr.pool
        pool = prt.pool
        policy = rr.policy
        method = request.method
        try:
            if request.body_exists:
                body, streamed, body_state = await self._body(request, out_headers)
            else:
                body, streamed, body_state = None, False, _NO_STATE
        except BodyTooLarge:
            return await _send_and_close(request, self._error(request, rr, 413, "request body too large\n",
                                                              t0, "-", "limit", close=True))
        except (aiohttp.ClientPayloadError, ConnectionError) as exc:
            return await _send_and_close(request, self._error(
                request, rr, 400, f"bad request body: {type(exc).__name__}\n", t0, "-", "client", close=True))

        key = policy.sticky_key(info)
        stuck = await lb.store.get_sticky(route.name, key) if key else None
        attempts = prt.attempts
        tried: set[str] = set()
        retrying = False
        last: ProxyError | None = None
        prt.active += 1
        try:
            for attempt in range(attempts):
                now = clock()
                if lb.shared_inflight and policy.uses_load:      # counts over all replicas
                    counts = lb.store.inflight(prt.name, [b.id for b in pool.backends])
                    cands = pool.candidates(now, counts)
                else:
                    cands = pool.candidates(now, load=policy.uses_load)
                pick = policy.pick(info, cands.list, now=lb.wall(), rng=lb.rng, stuck_to=stuck,
                                   exclude=frozenset(tried) if tried else _EMPTY)
                if pick is None:
                    if last is not None:
                        break
                    return self._error(request, rr, 503, "no backend available\n", t0, "-", "none")
                backend = pick.backend
                pool.request_started(backend.id)
                if lb.shared_inflight:
                    lb.store.incr_inflight(prt.name, backend.id)
                sent_at = clock()
                try:
                    up = await lb.upstream.send(backend, method, info.path, out_headers, body,
                                                self.interim_sink(request))
                except ProxyError as exc:
                    pool.request_finished(backend.id, ok=False, latency=None, now=clock())
                    if isinstance(exc, InvalidResponse):
                        self._invalid(rr, backend.id, exc)
                    if lb.shared_inflight:
                        lb.store.decr_inflight(prt.name, backend.id)
                    if body_state.get("too_large"):
                        return await _send_and_close(request, self._error(
                            request, rr, 413, "request body too large\n", t0, backend.id, pick.reason,
                            close=True))
                    last = exc
                    sent = not isinstance(exc, BackendConnectError)
                    if (attempt + 1 < attempts and may_retry(method, sent=sent, body_streamed=streamed)
                            and prt.budget.can_retry(prt.active)):
                        tried.add(backend.id)
                        if retrying:
                            prt.budget.retry_finished()
                        prt.budget.retry_started()
                        retrying = True
                        lb.metrics.retries.labels(route.name, "connect" if not sent else "reset").inc()
                        log.debug("retrying %s %s after %s", method, info.path, exc)
                        continue
                    break
                return await self._respond(request, rr, info, pick, up, t0, sent_at)
        finally:
            prt.active -= 1
            if retrying:
                prt.budget.retry_finished()
        assert last is not None
        return self._error(request, rr, last.status, f"{last}\n", t0, "-", "failed",
                           close=request.can_read_body)      # unread request body: close

    def interim_sink(self, request: BaseRequest) -> Callable[[Any], None] | None:
        """Where a backend's 1xx responses (but 100) go as they arrive: to an HTTP/1.1 client,
        written ahead of the final response; an HTTP/1.0 client gets none (RFC 9110 15.2)."""
        if request.version < (1, 1):
            return None
        transport = request.transport

        def write(head: Any) -> None:
            if transport is not None and not transport.is_closing():
                transport.write(interim_head(head))
        return write

    def _invalid(self, rr: RouteRuntime, backend_id: str, exc: Exception) -> None:
        """A backend response with invalid framing: counted, logged (502 or an aborted client)."""
        self.lb.metrics.invalid_responses.labels(rr.pool.name, backend_id).inc()
        log.warning("%s", exc)

    async def _respond(self, request: BaseRequest, rr: RouteRuntime, info: RequestInfo, pick: Any,
                       up: Any, t0: float, sent_at: float) -> web.StreamResponse:
        """The backend's final response, written through aiohttp's writer as the fast path writes
        it (upstream.response_head: the backend's header lines as received, nothing added but
        ours): HEAD / 204 / 304 without a body, a collected body in one write with its length, a
        streamed one with its Content-Length, else chunked to an HTTP/1.1 keep-alive client and
        close-delimited (then the close) otherwise. A body that breaks mid-way aborts the client
        connection (the head is out: there is no status left to say so). aiohttp's server gets a
        `_Sent` that only tells it whether the connection stays open."""
        lb = self.lb
        clock = lb.clock
        backend = pick.backend
        status = up.status
        ok = status < 500
        latency = clock() - sent_at
        writer = request.writer
        keep = request.keep_alive
        http10 = request.version < (1, 1)
        try:
            extra: list[tuple[str, str]] = []
            drop_lb = lb.config.lb_headers
            if drop_lb:
                extra.append(("X-LB-Region", lb.rt.region))
                extra.append(("X-LB-Backend", backend.id))
            if pick.set_cookie:
                extra.append(("Set-Cookie", pick.set_cookie))
            if rr.bookkeeping:
                await self._sticky_bookkeeping(rr, info, pick, up)
            framing = up.framing
            content = up.content
            if content.complete:
                data = await content.read()
                length = b"" if framing in (NONE, LENGTH) else b"Content-Length: %d\r\n" % len(data)
                await writer.write(response_head(up.raw, extra, length, close=not keep,
                                                 keep_alive=http10, drop_lb=drop_lb) + data)
            else:
                chunked = framing != LENGTH and keep and not http10
                keep = keep and (chunked or framing == LENGTH)
                await writer.write(response_head(up.raw, extra, b"Transfer-Encoding: chunked\r\n" if chunked else b"",
                                                 close=not keep, keep_alive=http10, drop_lb=drop_lb))
                try:
                    async for chunk in content.iter_any():
                        if chunked:
                            await writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        else:
                            await writer.write(chunk)
                except ProxyError as exc:
                    ok = False
                    if isinstance(exc, InvalidResponse):
                        self._invalid(rr, backend.id, exc)
                    else:
                        log.warning("backend %s broke mid-response (%s): aborting the client connection",
                                    backend.id, exc)
                    up.close()
                    request.protocol.force_close()
                    if request.transport is not None:
                        request.transport.abort()
                    return _Sent(status, keep_alive=False)
                if chunked:
                    await writer.write(b"0\r\n\r\n")
        except (ConnectionError, asyncio.CancelledError):
            up.close()                  # the client went away: do not reuse a half-read connection
            raise
        finally:
            await self._finish(request, rr, pick, up, status=status, ok=ok, latency=latency, t0=t0)
        return _Sent(status, keep_alive=keep)

    async def _finish(self, request: Any, rr: RouteRuntime, pick: Any, up: Any, *, status: int, ok: bool,
                      latency: float | None, t0: float) -> None:
        """After a proxied response, on every path: passive health and EWMA (unless already reported:
        `latency` None), the shared in-flight count, the upstream connection back to its pool, metrics
        and the access log."""
        lb = self.lb
        backend_id = pick.backend.id
        if latency is not None:
            rr.pool.pool.request_finished(backend_id, ok=ok, latency=latency, now=lb.clock())
        if lb.shared_inflight:
            lb.store.decr_inflight(rr.pool.name, backend_id)
        up.release()
        self._account(request, rr, status, t0, backend_id, pick.reason)

    async def _sticky_bookkeeping(self, rr: RouteRuntime, info: RequestInfo, pick: Any,
                                  up: aiohttp.ClientResponse) -> None:
        lb = self.lb
        if rr.sessions is not None and rr.cookie_name:
            token = None
            if pick.set_cookie:
                _name, _, rest = pick.set_cookie.partition("=")
                token = rest.split(";", 1)[0]
                old = info.cookies.get(rr.cookie_name)
                if old:
                    for bid in list(rr.sessions._seen):
                        rr.sessions.forget(bid, old)
            else:
                token = info.cookies.get(rr.cookie_name)
            if token:
                rr.sessions.touch(pick.backend.id, token, lb.clock())
        if rr.learns:
            if pick.learn:
                await lb.store.set_sticky(rr.route.name, pick.learn[0], pick.learn[1], rr.ttl)
            learnt = rr.policy.learn_from_response(info, pick.backend, up.headers.getall("Set-Cookie", ()))
            if learnt:
                await lb.store.set_sticky(rr.route.name, learnt[0], learnt[1], rr.ttl)
        if rr.route.policy.startswith("sticky"):
            lb.metrics.pick_reason(rr.route.name, pick.reason)

    # -- accounting --------------------------------------------------------------------------
    def _account(self, request: BaseRequest, rr: RouteRuntime, status: int, t0: float, backend: str,
                 reason: str) -> None:
        lb = self.lb
        elapsed = lb.clock() - t0
        lb.metrics.observe(rr.route.name, rr.pool.name, backend, status, elapsed)
        if access_log.isEnabledFor(_INFO):
            access_log.info("%s %s %s %s route=%s backend=%s status=%d duration_ms=%.1f pick=%s",
                            request.remote, request.method, request.host, request.raw_path, rr.route.name,
                            backend, status, elapsed * 1000, reason)

    def _error(self, request: BaseRequest, rr: RouteRuntime, status: int, text: str, t0: float,
               backend: str, reason: str, *, close: bool = False, account: bool = True) -> web.Response:
        self.lb.metrics.errors.labels(rr.route.name, str(status)).inc()
        if account:
            self._account(request, rr, status, t0, backend, reason)
        resp = plain_response(status, text, close=close)
        if self.lb.config.lb_headers:
            resp.headers[_X_LB_REGION] = self.lb.rt.region
        return resp


__all__ = ["BUFFER_LIMIT", "LazyCookies", "NoBackend", "ProxyHandler"]
