"""A small application server for the demo topology and the end-to-end tests  [edge].

    python -m deploy.demo_app --listen 127.0.1.21:8000 --name us-east-app-1 --region us-east \\
        --redis redis://127.0.0.1:6379/0

Routes
    POST /api/auth/login    form or JSON ``user=...``: a session in Redis (key with TTL) and a
                            ``session=<random id>`` cookie
    GET  /api/auth/me       the session's user (401 without a valid session)
    POST /api/auth/logout   forgets the session
    GET|POST /api/echo      what the request looked like here (method, path, headers, body size)
    GET  /static/<name>     a small fixed asset (app.css, app.js, logo.svg)
    GET  /                  which app server answered
    GET  /healthz           200 while the process serves (body says whether Redis answers)

Every response carries ``X-App-Server``, ``X-App-Region``, ``X-Seen-Client`` (the X-Forwarded-For
the request came with, "" if none) and ``X-Seen-Peer`` (the TCP peer: the regional LB in the demo),
so a test sees the real client through both LB tiers.  Sessions live only in Redis: any app server
of the region answers for any session, and killing one loses nothing.
"""

from deploy.demo_app.app import APP_INFO, REDIS, AppInfo, make_app

__all__ = ["APP_INFO", "REDIS", "AppInfo", "make_app"]
