"""Shared builders for the balancing tests (no tests here; named to sit under tests/unit/test_balancing_*)."""

from __future__ import annotations

from regional_lb.balancing.base import Backend, Candidate, RequestInfo


def backend(i: int | str, weight: int = 1) -> Backend:
    name = f"b{i}" if isinstance(i, int) else i
    return Backend(id=name, host="127.0.0.1", port=9000 + (i if isinstance(i, int) else 0), weight=weight)


def cands(n: int, **kw: object) -> list[Candidate]:
    return [Candidate(backend(i), **kw) for i in range(n)]  # type: ignore[arg-type]


def request(ip: str = "192.0.2.1", path: str = "/", headers: dict[str, str] | None = None,
            cookies: dict[str, str] | None = None, tls: bool = False) -> RequestInfo:
    return RequestInfo(client_ip=ip, method="GET", host="example.test", path=path,
                       headers=headers or {}, cookies=cookies or {}, tls=tls)
