"""One serving worker of ``oca serve``: its own SO_REUSEPORT listening socket, event
loop (uvloop when installed), object table (fed by the store watcher: no SQLite, no disk
probe here) and access log. Its event loop only serves.

Once a second (never per request): close timed-out connections, flush the access log,
publish metrics, apply the drain state, report per-object counters to the watcher.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time

import _fastpath

from ..config import Config
from ..http.accesslog import AccessLog
from ..http.auth import TokenChecker, load_key
from ..http.handler import Handler
from .connections import WorkerServer
from .objects import ObjectTable

log = logging.getLogger("oca.serve")

TICK = 1.0
LISTEN_BACKLOG = 4096


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the default), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def listen_socket(host: str, port: int, reuseport: bool = True) -> socket.socket:
    """A non-blocking listening socket; one per worker with SO_REUSEPORT, so the kernel
    spreads connections over the workers instead of waking all of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Worker:
    """Set up in the child after fork; ``run()`` returns the exit code."""

    def __init__(self, config: Config, index: int, metrics, control, feed_path: str,
                 feed_sock=None, steering=None):
        self.config = config
        self.index = index
        self.metrics = metrics
        self.control = control  # control.Control: the drain state and its confirmation
        self.feed_path = feed_path  # the store watcher's socket
        self.steering = steering  # steering.board.Board, when [steering] is on
        if feed_sock is not None:
            feed_sock.close()  # the watcher's listening socket: not ours
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: WorkerServer | None = None
        self.stopping = False
        self.exit_code = 0

    def run(self) -> int:
        cfg = self.config
        loop = self.loop = new_loop()
        asyncio.set_event_loop(loop)
        objects = ObjectTable(cfg.server.open_file_cache, cfg.store.disk_probe_timeout,
                              self.feed_path, self.index)
        objects.load()
        # The map's million tuples cannot form cycles: keep them out of every collection.
        # A full collection of a heap that size stalls the loop for ~100 ms (burst bench).
        gc.freeze()
        access_log = AccessLog(cfg.server.access_log, cfg.server.name)
        tokens = TokenChecker(load_key(cfg.auth.key_file)) if cfg.auth.key_file else None
        fill_tokens = (TokenChecker(load_key(cfg.auth.fill_key_file), "fill")
                       if cfg.auth.fill_key_file else None)
        self.handler = Handler(objects, cfg, self.metrics, access_log, tokens, fill_tokens,
                               self.steering)
        host, port = cfg.server.listen
        sock = listen_socket(host, port)
        self.server = WorkerServer(loop, sock, self.handler, objects, cfg)
        self.access_log = access_log
        self.objects = objects
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, access_log.reopen)
        loop.add_signal_handler(signal.SIGUSR1, self.apply_control)
        self.apply_control()
        objects.attach(loop)
        self.server.start()
        loop.call_later(TICK, self.tick)
        log.info("worker %d (pid %d) serving on %s:%d, fastpath %s, %s loop", self.index,
                 os.getpid(), host, port, _fastpath.IMPLEMENTATION, type(loop).__module__)
        try:
            loop.run_forever()
        finally:
            access_log.close()
            self.metrics.publish()
            objects.close()
        return self.exit_code

    def tick(self) -> None:
        server = self.server
        server.sweep()
        self.apply_control(quiet=True)
        self.objects.tick()
        self.access_log.flush()
        self.metrics.publish()
        if self.stopping and (not server.connections or time.monotonic() >= self.stop_deadline):
            server.close_all()
            self.loop.stop()
            return
        self.loop.call_later(TICK, self.tick)

    def apply_control(self, quiet: bool = False) -> None:
        """Apply the drain state (on SIGUSR1, at start and every tick) and confirm its
        generation to the supervisor, which answers POST /drain and /undrain only then."""
        state = self.control.read()
        if state is None:  # no consistent copy now: keep the current state, retry next tick
            return
        generation, draining, deadline = state
        handler = self.handler
        if draining != handler.draining and not quiet:
            log.info("worker %d: %s", self.index, "draining" if draining else "undrained")
        handler.draining = draining
        closing = draining and time.time() >= deadline
        if closing and not handler.closing:
            log.info("worker %d: drain deadline reached, closing connections", self.index)
            self.server.close_all()
        # Stopping (SIGTERM) closes connections as their responses end, whatever the drain
        # state says: this runs every tick.
        handler.closing = closing or self.stopping
        self.control.confirm(self.index, generation)

    def stop(self) -> None:
        """SIGTERM: stop accepting, finish responses in flight up to the shutdown timeout."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.config.server.shutdown_timeout
        self.server.stop_accepting()
        self.handler.closing = True  # further requests on open connections: 503, close
        self.server.close_idle()
        log.info("worker %d: stopping, %d connections in flight", self.index,
                 len(self.server.connections))
        if not self.server.connections:
            self.loop.call_soon(self.tick)
