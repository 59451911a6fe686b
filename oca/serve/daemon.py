"""``oca serve`` put together: the start-up checks, the roles it runs (the store watcher
first, then the serving workers; they stop in the reverse order, so the watcher folds the
workers' last counters), the admin listener and the signals.

Adding a role (the fill agent, the steering loop) is one more entry in ``roles()`` and a
module of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import _fastpath

from .. import __version__
from ..config import Config
from ..fill import state as fill_state
from ..fill.role import FillRole
from ..http.metrics import MetricsArea
from .admin import AdminListener
from .checks import Prepared, prepare, raise_fd_limit
from .control import Control, Drain
from .roles import Role
from .supervisor import Supervisor
from .watcher import StoreWatcher
from .worker import Worker

log = logging.getLogger("oca.serve")


class Daemon:
    """One ``oca serve``: ``run()`` returns the exit code."""

    def __init__(self, config: Config, prepared: Prepared):
        self.config = config
        self.prepared = prepared
        n = config.server.worker_count
        self.control = Control(n)
        # The steering mode the workers' /health reports (mapped before any fork).
        self.board = None
        if config.steering.enabled:  # (pyroute2 and the steering modules: only then)
            from ..steering.board import Board

            self.board = Board()
        self.metrics = MetricsArea(n)
        self.started = time.time()

    def roles(self) -> list[Role]:
        cfg, p = self.config, self.prepared
        return [
            Role("watcher", lambda slot: StoreWatcher(cfg, p.feed_sock).run(),
                 stop_timeout=10.0),
            Role("worker",
                 lambda slot: Worker(cfg, slot, self.metrics.worker(slot), self.control,
                                     p.feed_path, p.feed_sock, self.board).run(),
                 count=cfg.server.worker_count,
                 # The new worker confirms the drain state it starts in; until then a
                 # drain waits for it.
                 before_start=lambda slot: self.control.confirm(slot, 0),
                 after_exit=self.metrics.retire,
                 forward=(signal.SIGHUP,),
                 stop_timeout=cfg.server.shutdown_timeout + 5),
        ] + ([Role("fill", lambda slot: FillRole(cfg).run(), stop_timeout=15.0)]
             if cfg.fill.manifest_url else []) + (
            [Role("steering", self._run_steering, stop_timeout=10.0)]
            if cfg.steering.enabled else [])

    def _run_steering(self, slot: int) -> int:
        from ..steering.loop import run_role

        return run_role(self.config, self.board, self.control)

    def _steer_state(self) -> dict | None:
        from ..steering.loop import read_state

        return read_state(self.config)

    def status(self) -> dict:
        cfg = self.config.server
        return {
            "pid": os.getpid(), "version": __version__, "appliance": cfg.name,
            "listen": "{}:{}".format(*cfg.listen),
            "admin_listen": "{}:{}".format(*cfg.admin_listen),
            "workers": sorted(self.supervisor.pids("worker")),
            "watcher": sorted(self.supervisor.pids("watcher")),
            "fill": sorted(self.supervisor.pids("fill")),
            "steering": sorted(self.supervisor.pids("steering")),
            "worker_count": cfg.worker_count,
            "fastpath": _fastpath.IMPLEMENTATION,
            "draining": self.drain.draining, "drain_deadline": self.drain.deadline,
            "started": self.started,
        }

    def run(self) -> int:
        cfg = self.config.server
        log.info("oca %s serve: %s:%d, admin %s:%d, %d workers, fastpath %s", __version__,
                 *cfg.listen, *cfg.admin_listen, cfg.worker_count, _fastpath.IMPLEMENTATION)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        p = self.prepared
        self.supervisor = Supervisor(self.roles(), loop,
                                     close_in_child=(p.admin_sock, p.reservation))
        self.drain = Drain(self.control, self.supervisor)
        admin = AdminListener(self.status, self.metrics, self.drain,
                              lambda: self.supervisor.pids("worker"),
                              lambda: fill_state.read(self.config),
                              self._steer_state if self.config.steering.enabled else None)
        self.supervisor.start()
        stopping: list[asyncio.Task] = []

        def shutdown() -> None:
            if not stopping:
                log.info("stopping: workers finish their responses (up to %.0f s)",
                         cfg.shutdown_timeout)
                stopping.append(loop.create_task(self._stop(loop)))

        loop.add_signal_handler(signal.SIGTERM, shutdown)
        loop.add_signal_handler(signal.SIGINT, shutdown)
        loop.add_signal_handler(signal.SIGHUP, self.supervisor.forward, signal.SIGHUP)
        server = loop.run_until_complete(asyncio.start_server(admin.handle,
                                                              sock=p.admin_sock))
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()
            p.close()
        log.info("stopped")
        return 0

    async def _stop(self, loop: asyncio.AbstractEventLoop) -> None:
        await self.supervisor.stop()
        loop.stop()


def serve(config: Config) -> int:
    """Run ``oca serve`` in the foreground; returns the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s oca serve[%(process)d]: %(message)s")
    prepared = prepare(config)
    raise_fd_limit(config)
    return Daemon(config, prepared).run()
