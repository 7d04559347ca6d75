"""The app's ASGI middleware: the Host and Origin guard, the cap on requests in flight, and
metrics with the access log. Each answers its refusals in the service's JSON error shape."""

import sys
import time
from typing import Any

from .errors import error_response

class Guard:
    """Refuses a Host header not in --allowed-host (DNS rebinding) and a request from another
    origin's page unless --allow-origin names it: a page on any site could otherwise make the
    user's browser post to a server on their machine."""

    def __init__(self, app: Any, allowed_hosts: tuple[str, ...], allow_origins: tuple[str, ...]) -> None:
        self.app, self.allowed_hosts, self.allow_origins = app, allowed_hosts, allow_origins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get("host", "")
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if "*" not in self.allowed_hosts and hostname.strip("[]") not in self.allowed_hosts:
            await error_response(400, "bad_host", f"Host {host!r} is not served here (--allowed-host)")(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope['scheme']}://{host}" and origin not in self.allow_origins:
            message = f"requests from pages of {origin} are refused; start the server with --allow-origin {origin} to allow them"
            await error_response(403, "cross_origin", message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class InFlight:
    """At most `limit` requests to `path` at once, from their first byte to their last (body
    read, queued, answered): 503 for more. What they hold is bounded by limit x --max-body-mb."""

    def __init__(self, app: Any, limit: int, path: str) -> None:
        self.app, self.limit, self.path, self.count = app, limit, path, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if self.count >= self.limit:
            message = f"the server is busy ({self.limit} requests in flight, --max-requests); retry shortly"
            await error_response(503, "busy", message, {"Retry-After": "1"})(scope, receive, send)
            return
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


class Observed:
    """Counts every HTTP response by path (one of `paths`, else "other") and status, times it,
    and (access_log) prints one line per request: method, path, status, ms, images; never the
    body, query or key."""

    def __init__(self, app: Any, paths: frozenset[str], access_log: bool = False) -> None:
        self.app, self.paths, self.access_log = app, paths, access_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"] if scope["path"] in self.paths else "other"
            service = scope["app"].state.service if "app" in scope else None
            if service is not None:
                service.metrics.requests.labels(path, str(status[0])).inc()
                service.metrics.latency.labels(path).observe(seconds)
            if self.access_log:
                images = scope.get("state", {}).get("images", 0)
                print(f"{scope['method']} {scope['path'][:200]} {status[0]} {seconds * 1000:.0f} ms {images} image(s)", file=sys.stderr, flush=True)
