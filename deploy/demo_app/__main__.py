"""`python -m deploy.demo_app --listen HOST:PORT --name NAME --region REGION --redis URL`."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from deploy.demo_app.app import AppInfo, make_app


def split_host_port(text: str) -> tuple[str, int]:
    """"127.0.1.21:8000" or "[::1]:8000" -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.demo_app", description=__doc__)
    parser.add_argument("--listen", type=split_host_port, required=True, help="HOST:PORT")
    parser.add_argument("--name", required=True, help="this server's name (X-App-Server)")
    parser.add_argument("--region", required=True, help="its region (X-App-Region)")
    parser.add_argument("--redis", required=True, help="session store URL, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--session-ttl", type=int, default=1800, help="session lifetime in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    host, port = args.listen
    app = make_app(AppInfo(args.name, args.region, args.session_ttl), redis_url=args.redis)
    print(f"demo app {args.name} ({args.region}) on {host}:{port}", file=sys.stderr, flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
