"""uvicorn, set up for a server facing clients it does not trust: its own limits (connections,
keep-alive, header size) plus a header read timeout, and a word on start and on SIGTERM."""

import asyncio
import signal
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import Limits

MAX_HEADER_BYTES = 16 * 1024  # h11's limit on an incomplete request head (uvicorn's default)


class HeaderTimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a request's headers within
    `header_timeout_s` of opening or of its last response (uvicorn has no such timeout: a client
    sending one header byte a minute would hold its connection for ever)."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._expect_headers()

    def _expect_headers(self) -> None:
        self.loop.call_later(self.header_timeout_s, self._headers_due, self.cycle)

    def _headers_due(self, cycle_then: Any) -> None:
        """No request began since the timer was set (the cycle is the same, and done): close."""
        if self.cycle is cycle_then and (cycle_then is None or cycle_then.response_complete) and not self.transport.is_closing():
            self.transport.close()


def config_for(app: Any, host: str, port: int, limits: Limits) -> uvicorn.Config:
    """uvicorn's Config with the limits: limit_concurrency (503 over it), keep-alive, header size
    and read timeout; graceful shutdown within --timeout-s; no access log of its own."""
    protocol = type("HeaderTimedH11", (HeaderTimedH11Protocol,), {"header_timeout_s": limits.header_timeout_s})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  (used as a float)
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=limits.timeout_s,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
    )


class Server(uvicorn.Server):
    """uvicorn's Server that prints `announcement` once listening, and a line on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, announcement: str) -> None:
        super().__init__(config)
        self.announcement = announcement

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.announcement, file=sys.stderr, flush=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            print(
                f"onnxcam-serve: {signal.Signals(sig).name}: accepting no new requests; finishing the "
                f"{len(self.server_state.tasks)} in flight (at most {self.config.timeout_graceful_shutdown:g} s)",
                file=sys.stderr,
                flush=True,
            )
        super().handle_exit(sig, frame)
