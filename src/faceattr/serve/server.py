"""How `faceattr serve` runs the app: uvicorn's h11 server with the deadlines it lacks, in one or more processes.

uvicorn (h11) closes an idle keep-alive connection after `timeout_keep_alive` seconds, but it has no
deadline for a request to arrive: a connection that sends nothing, or trickles its headers or body a
byte at a time, is held for ever, and so is one whose client never reads a large answer (the send
waits for the socket to drain). `GuardedH11Protocol` adds both bounds:

- request_timeout: a request, headers and body, must arrive within this many seconds of its first
  byte (or of the connection opening). Late, the client gets 408 if no answer was started, and the
  connection is closed; an app still waiting for the body sees a disconnect.
- send_timeout: once the send buffer is full (the client has stopped reading), or when an answer is
  complete or the connection idle but part of it is still unsent, the client has this many seconds to
  read on; else the connection is dropped with what was left to send. (What the kernel has already
  taken is its business: the connection is then closed as usual, after `timeout_keep_alive`.) The
  clock restarts only when the buffer drains below asyncio's low-water mark, so a client reading less
  than about 48 KiB per send_timeout is dropped too.

Both are per connection and cost nothing while they wait; other requests go on being answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from faceattr.errors import FaceattrError

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "DEFAULT_SEND_TIMEOUT", "KEEP_ALIVE_TIMEOUT", "GuardedH11Protocol", "ServeConfig", "ServerLimits", "cap_malloc_arenas", "run", "worker_threads"]

logger = logging.getLogger(__name__)

# A 15 MiB upload (the default limit) needs about 4 Mbit/s to arrive in 30 s.
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_SEND_TIMEOUT = 30.0
# uvicorn's default: an idle keep-alive connection is closed after this many seconds.
KEEP_ALIVE_TIMEOUT = 5

_TIMEOUT_BODY = json.dumps({"detail": "the request did not arrive in time"}).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _TIMEOUT_BODY
)


@dataclass(frozen=True)
class ServerLimits:
    """The connection-level bounds `faceattr serve` runs with (seconds)."""

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    keep_alive: int = KEEP_ALIVE_TIMEOUT


class ServeConfig(uvicorn.Config):
    """uvicorn.Config that runs GuardedH11Protocol with `limits`; picklable, so worker processes get it too."""

    def __init__(self, app: Any, *, limits: ServerLimits = ServerLimits(), **kwargs: Any) -> None:
        if limits.request_timeout <= 0 or limits.send_timeout <= 0 or limits.keep_alive <= 0:
            raise ValueError(f"server timeouts must be positive: {limits}")
        super().__init__(app, http=GuardedH11Protocol, timeout_keep_alive=limits.keep_alive, **kwargs)
        self.limits = limits


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request to arrive and one for a stalled reader."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServerLimits = getattr(config, "limits", ServerLimits())
        self._request_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock at once: a connection that never sends a byte is bounded too."""
        super().connection_made(transport)
        self._request_timer = self.loop.call_later(self.limits.request_timeout, self._request_timed_out)

    def data_received(self, data: bytes) -> None:
        """Feed h11 as uvicorn does, then arm or stop the request clock by what is now pending."""
        super().data_received(data)
        self._update_request_timer()

    def on_response_complete(self) -> None:
        """Answered: a pipelined request may already be pending behind it, and part of the answer may be unsent."""
        super().on_response_complete()
        self._watch_unsent()
        self._update_request_timer()

    def timeout_keep_alive_handler(self) -> None:
        """Idle: close as uvicorn does, but not for ever if the client never reads what is still unsent."""
        super().timeout_keep_alive_handler()
        self._watch_unsent()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop both clocks; uvicorn does the rest."""
        for timer in (self._request_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._stall_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full: the client has this long to read on."""
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        """The client reads again."""
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _watch_unsent(self) -> None:
        """Bound an unsent remainder too small to pause writing: close() alone would wait for it for ever."""
        if self._stall_timer is None and self.transport.get_write_buffer_size() > 0:
            self._stall_timer = self.loop.call_later(self.limits.send_timeout, self._stalled)

    def _pending(self) -> bool:
        """Whether part of a request has arrived but not all of it."""
        state = self.conn.their_state
        # h11 keeps a partial request line or headers in its buffer until they are complete.
        return state is h11.SEND_BODY or (state is h11.IDLE and bool(self.conn.trailing_data[0]))

    def _update_request_timer(self) -> None:
        """Run the request clock while a request is partly here; stop it once it is whole."""
        if self.transport.is_closing():
            return
        if self._pending():
            if self._request_timer is None:
                self._request_timer = self.loop.call_later(self.limits.request_timeout, self._request_timed_out)
        elif self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        """Answer 408 if nothing was answered yet, then close."""
        self._request_timer = None
        if self.transport.is_closing():
            return
        client = "%s:%d" % self.client if self.client else "a client"
        state = self.conn.their_state
        partial_headers = state is h11.IDLE and bool(self.conn.trailing_data[0])
        waiting_app = state is h11.SEND_BODY and self.cycle is not None and not self.cycle.response_started
        if partial_headers or waiting_app:
            logger.info("408 to %s: its request did not arrive within %g s", client, self.limits.request_timeout)
            # Written raw, past h11's state machine: the connection is closed right after.
            self.transport.write(_TIMEOUT_RESPONSE)
        else:
            # Nothing to answer (a silent connection, or the rest of a body already answered): like keep-alive's close.
            logger.debug("closing the connection of %s: nothing complete arrived within %g s", client, self.limits.request_timeout)
        if waiting_app:
            # The app's next receive() answers http.disconnect, so it stops waiting for the body.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
        self._watch_unsent()

    def _stalled(self) -> None:
        """The client read nothing for send_timeout: drop it, unless it has caught up."""
        self._stall_timer = None
        if self.transport.get_write_buffer_size() == 0:
            return  # the client read it all in the meantime
        client = "%s:%d" % self.client if self.client else "a client"
        logger.info("dropping %s: its answer stayed unread for %g s (%d bytes unsent)", client,
                    self.limits.send_timeout, self.transport.get_write_buffer_size())
        # abort, not close: close would wait for the unread buffer to drain, that is for ever.
        self.transport.abort()


def run(config: ServeConfig) -> None:
    """Serve until Ctrl-C / SIGTERM: in this process, or in `config.workers` processes sharing one socket."""
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly; as uvicorn.run does, that ends quietly.
    try:
        if config.workers > 1:
            sock = config.bind_socket()
            try:
                Multiprocess(config, sockets=[sock]).run()
            finally:
                sock.close()
            return
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise FaceattrError(f"the server could not start on {config.host}:{config.port} (see the message above)")


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Limit glibc malloc to `arenas` arenas (as MALLOC_ARENA_MAX does); False where that cannot be done.

    By default glibc gives each thread that meets contention an arena of its own, up to 8 per core, and
    keeps what they free. A server decoding uploads in up to 40 worker threads then grows for a long
    while: under 16 concurrent clients the default model's server went from 0.70 to 0.81 GB over 1,800
    requests, and with 2 arenas from 0.56 to 0.66 GB, flat after the first 600 (2026-12-06, 2-core CPU).
    Called before the model and the thread pools start; arenas already made stay.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return True  # the user chose; glibc read it at start-up
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to cap
    m_arena_max = -8  # glibc's malloc.h
    return bool(mallopt(ctypes.c_int(m_arena_max), ctypes.c_int(arenas)))


def worker_threads(workers: int) -> int:
    """CPU threads each of `workers` processes should use so that together they use every core once."""
    return max(1, (os.cpu_count() or 1) // workers)
