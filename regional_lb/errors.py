"""The regional LB's exception tree  [pure].

    RegionalLBError
        ConfigError          (gslb.common.configload.ConfigError: file, key path, reason)
        ProxyError           a request could not be proxied; `status` is what the client gets
            NoRoute          404: no route matches the host and path
            NoBackend        503: the pool has no backend to pick
            BackendConnectError  502: connecting to the backend failed (retryable elsewhere)
            BackendError     502: the backend failed or closed before its response headers
                InvalidResponse  502: the backend's response has invalid framing (see proxy/upstream.py)
            BackendTimeout   504: the backend did not answer within backend_read
            BodyTooLarge     413: the request body is larger than limits.max_body_size
            BadRequest       400: the request head was refused (regional_lb/target.py)
                MethodNotAllowed      405: CONNECT on a route without allow_connect
                NotImplementedCoding  501: a transfer coding other than chunked
                VersionNotSupported   505: not HTTP/1.0 or HTTP/1.1
        StoreError           the shared state store (Redis) failed; never reaches a client: the store
                             answers from its local copy instead
            StoreTimeout     ... or did not answer within the request's time budget
                StoreBusy    ... because every pooled connection was busy (not Redis' fault)

aiohttp, httptools and OS exceptions are translated into these where they enter (regional_lb/proxy/upstream.py);
every exception redis-py raises becomes a StoreError at the store's edge (regional_lb/state/redis_client.py).
The docstring of each class is its default message, sent as the short response body.
"""

from __future__ import annotations

from gslb.common.configload import ConfigError


class RegionalLBError(Exception):
    """regional LB error"""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ProxyError(RegionalLBError):
    """the request could not be proxied"""

    status = 502


class NoRoute(ProxyError):
    """no route for this host and path"""

    status = 404


class NoBackend(ProxyError):
    """no backend available"""

    status = 503


class BackendConnectError(ProxyError):
    """could not connect to a backend"""

    status = 502


class BackendError(ProxyError):
    """the backend failed before sending a response"""

    status = 502


class InvalidResponse(BackendError):
    """the backend sent an invalid response"""

    status = 502


class BackendTimeout(ProxyError):
    """the backend did not answer in time"""

    status = 504


class BodyTooLarge(ProxyError):
    """request body too large"""

    status = 413


class BadRequest(ProxyError):
    """bad request"""

    status = 400


class MethodNotAllowed(BadRequest):
    """method not allowed"""

    status = 405


class NotImplementedCoding(BadRequest):
    """transfer coding not implemented"""

    status = 501


class VersionNotSupported(BadRequest):
    """HTTP version not supported"""

    status = 505


class StoreError(RegionalLBError):
    """the state store failed"""


class StoreTimeout(StoreError):
    """the state store did not answer in time"""


class StoreBusy(StoreTimeout):
    """every connection to the state store was busy"""


__all__ = ["BackendConnectError", "BackendError", "BackendTimeout", "BadRequest", "BodyTooLarge", "ConfigError",
           "InvalidResponse", "MethodNotAllowed", "NoBackend", "NoRoute", "NotImplementedCoding", "ProxyError",
           "RegionalLBError", "StoreBusy", "StoreError", "StoreTimeout", "VersionNotSupported"]
