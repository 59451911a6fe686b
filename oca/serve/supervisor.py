"""The supervisor of ``oca serve``: forks the children of every role, restarts one that
dies (after the delay of its role's restart policy), forwards signals, and stops them
all in order (the reverse of the start order) when asked. It knows nothing of what a
role does: that is the role's spec (roles.py) and module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .roles import Role

log = logging.getLogger("oca.serve")

REAP_POLL = 0.05
KILL_WAIT = 5.0
"""After SIGKILL, how long to wait for a child before giving up on it (a process blocked
in a hung filesystem cannot die until the filesystem answers)."""


@dataclass
class _Slot:
    role: Role
    slot: int
    pid: int = 0
    started: float = 0.0
    quick_deaths: int = 0
    restart: asyncio.TimerHandle | None = field(default=None, repr=False)


class Supervisor:
    """Runs *roles* on *loop*; ``close_in_child`` are descriptors no child keeps."""

    def __init__(self, roles: Iterable[Role], loop: asyncio.AbstractEventLoop,
                 close_in_child: Iterable = ()):
        self.roles = list(roles)
        self.loop = loop
        self.close_in_child = list(close_in_child)
        self.slots = [_Slot(r, i) for r in self.roles for i in range(r.count)]
        self.children: dict[int, _Slot] = {}  # pid -> slot
        self.stopping = False

    # -- children ------------------------------------------------------------

    def start(self) -> None:
        """Fork every child, role by role; reap and restart from now on."""
        self.loop.add_signal_handler(signal.SIGCHLD, self.reap)
        for s in self.slots:
            self._spawn(s)

    def pids(self, role: str) -> dict[int, int]:
        """pid -> slot of the live children of *role*."""
        return {pid: s.slot for pid, s in self.children.items() if s.role.name == role}

    def signal(self, role: str, sig: int) -> None:
        for pid in self.pids(role):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def forward(self, sig: int) -> None:
        """Pass *sig* on to the children of every role that asks for it."""
        for r in self.roles:
            if sig in r.forward:
                self.signal(r.name, sig)

    def _spawn(self, s: _Slot) -> None:
        s.restart = None
        if self.stopping:
            return
        role = s.role
        if role.before_start is not None:
            role.before_start(s.slot)
        pid = os.fork()
        if pid == 0:
            self._child(s)
        s.pid, s.started = pid, time.monotonic()
        self.children[pid] = s

    def _child(self, s: _Slot) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            # A signal the role handles must not kill it before it installs its handler.
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            for f in self.close_in_child:
                f.close()
            code = s.role.run(s.slot)
        except BaseException:
            log.exception("%s %d crashed", s.role.name, s.slot)
        finally:
            logging.shutdown()
            os._exit(code)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            s = self.children.pop(pid, None)
            if s is None:
                continue
            s.pid = 0
            if s.role.after_exit is not None:
                s.role.after_exit(s.slot)
            if self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            ran = time.monotonic() - s.started
            s.quick_deaths = s.quick_deaths + 1 if ran < s.role.restart.stable else 1
            delay = s.role.restart.delay(s.quick_deaths)
            log.error("%s %d (pid %d) exited with %s; restarting%s (it ran %.1f s)",
                      s.role.name, s.slot, pid,
                      f"signal {-code}" if code < 0 else f"status {code}",
                      f" in {delay:g} s" if delay else "", ran)
            s.restart = self.loop.call_later(delay, self._spawn, s)

    # -- stopping ------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every role in the reverse of the start order: its stop signal, then
        SIGKILL after its stop timeout."""
        self.stopping = True
        for s in self.slots:
            if s.restart is not None:
                s.restart.cancel()
        for role in reversed(self.roles):
            if not self.pids(role.name):
                continue
            self.signal(role.name, role.stop_signal)
            if not await self._wait(role.name, role.stop_timeout):
                log.error("%s %s did not stop in %g s: killing", role.name,
                          sorted(self.pids(role.name)), role.stop_timeout)
                self.signal(role.name, signal.SIGKILL)
                if not await self._wait(role.name, KILL_WAIT):
                    log.error("%s %s still there after SIGKILL (blocked in a hung disk?): "
                              "leaving them", role.name, sorted(self.pids(role.name)))
                    for pid in self.pids(role.name):
                        del self.children[pid]

    async def _wait(self, role: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if not self.pids(role):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(REAP_POLL)
