"""What `gslb ctl` and `regional-lb ctl` share: an admin API client and table printing  [edge].

    client = AdminClient.from_listen(host, port, token)          # from the program's config file
    client = AdminClient("http://127.0.0.1:8053", token)          # or --url / --token
    data = client.get("/api/regions")
    data = client.post("/api/regions/us-east/drain")               # bearer token sent on POST
    print(table(rows, ["name", "state", ...]))

A wildcard admin listen address (0.0.0.0, ::) is reached on the loopback address of its family.
Every failure is a `CtlError` whose message says what to do: the server is not running at that
address, the token was refused, the API answered an error (its message is shown).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

TIMEOUT = 10.0


class CtlError(Exception):
    """The admin API could not be used (the message says why)."""


class AdminClient:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # never through an HTTP proxy from the environment: the admin API is local
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<AdminClient {self.base_url}{' with token' if self.token else ''}>"

    @classmethod
    def from_listen(cls, host: str, port: int, token: str | None) -> AdminClient:
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        shown = f"[{host}]" if ":" in host else host
        return cls(f"http://{shown}:{port}", token)

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Any:
        return self._call("GET", path, query)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, None, body)

    def _call(self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            message = _error_message(raw) or exc.reason
            if exc.code == 401:
                raise CtlError(f"{method} {url}: the admin token was refused ({message}); "
                               "check admin.token in the config or --token") from None
            raise CtlError(f"{method} {url}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise CtlError(f"cannot reach the admin API at {self.base_url}: {reason} "
                           "(is the server running? see admin.listen in the config, or --url)") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise CtlError(f"{method} {url}: the answer is not JSON: {raw[:200]!r}") from None


def add_ctl_parser(sub: Any, program: str, *, help: str, description: str | None,
                   default_config: str) -> Any:
    """The `ctl` sub-command with the options both programs share; returns its sub-parsers."""
    ctl = sub.add_parser("ctl", help=help, description=description,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ctl.add_argument("-c", "--config", default=default_config, help=f"config file (default {default_config})")
    ctl.add_argument("--url", help="admin API base URL (default: from admin.listen in the config)")
    ctl.add_argument("--token", help="admin token (default: admin.token in the config)")
    ctl.add_argument("--json", action="store_true", help="print the API's JSON")
    ctl.set_defaults(ctl_program=program)
    return ctl.add_subparsers(dest="ctl_command", required=True)


def run_ctl(args: argparse.Namespace, from_config: Callable[[str, str | None], AdminClient],
            command: Callable[[AdminClient, argparse.Namespace], str]) -> int:
    """Build the client (--url, or the config file's admin address and token), run `command`, print
    its text; exit status 0, or 1 with the reason on stderr (config error or CtlError)."""
    from gslb.common.configload import ConfigError

    try:
        client = AdminClient(args.url, args.token) if args.url else from_config(args.config, args.token)
        print(command(client, args))
    except (CtlError, ConfigError) as exc:
        print(f"{args.ctl_program} ctl: {exc}", file=sys.stderr)
        return 1
    return 0


def _error_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or data)
    return str(data)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """Rows as an aligned text table (one header line, then one line per row)."""
    head = list(headers or [c.upper() for c in columns])
    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    return "\n".join(lines)


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
