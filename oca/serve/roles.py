"""What the supervisor runs: roles, each from one small spec.

A role is a kind of child process: how to start one (a function run in the child after
the fork, returning its exit code), how many, how to restart one that dies, and how to
stop it. Adding a role to ``oca serve`` is a spec and a module (daemon.py lists them);
the supervisor's loop does not change.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Restart:
    """When a dead child starts again: at once the first time; after *initial* seconds
    when it dies again within *stable* seconds of its start, the wait doubling with each
    such death up to *maximum* (a child that crashes at start-up must not spin a core)."""

    initial: float = 0.5
    maximum: float = 30.0
    stable: float = 10.0

    def delay(self, quick_deaths: int) -> float:
        """The wait before a restart, after *quick_deaths* deaths in a row (>= 1)."""
        if quick_deaths <= 1:
            return 0.0
        return min(self.maximum, self.initial * 2.0 ** (quick_deaths - 2))


@dataclass(frozen=True)
class Role:
    """One kind of child process of ``oca serve``.

    *run* is called in the child with its slot (0 .. count-1) and returns the exit code.
    *before_start* and *after_exit* run in the supervisor around each child's life (with
    its slot). Roles start in the order given and stop in the reverse order, each with
    *stop_signal*, then SIGKILL after *stop_timeout* seconds. *forward* lists the
    signals the supervisor passes on to the role's children (SIGHUP: reopen logs).
    """

    name: str
    run: Callable[[int], int]
    count: int = 1
    restart: Restart = Restart()
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    before_start: Callable[[int], None] | None = None
    after_exit: Callable[[int], None] | None = None
    forward: tuple[int, ...] = ()
