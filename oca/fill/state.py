"""The fill's state file: the running or last fill of this appliance, for ``oca fill
status``, ``oca status`` and the agent itself (a manifest already applied in full is not
applied twice).

``<index folder>/fill-state.json``, replaced atomically (write, fsync, rename)::

    {"state": "running" | "done" | "failed", "manifest": WHERE, "generated": TS,
     "started": TS, "finished": TS | null, "pid": PID, "total_bytes": N,
     "summary": {...} | null, "applied_generated": TS | null}

``applied_generated`` is the ``generated`` of the newest manifest applied in full (its
summary ``ok``); it survives the runs that follow. Read back, a ``running`` state whose
process is gone is ``interrupted``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil

from ..config import Config

NAME = "fill-state.json"


def path(config: Config) -> Path:
    return Path(config.store.index).parent / NAME


def read(config: Config) -> dict | None:
    """The state, or None when no fill has run (or the file is unreadable). A fill whose
    process is gone while its state says running (killed: SIGKILL, a crash, a reboot) is
    ``interrupted``: what it got is kept, and the next run resumes it."""
    try:
        state = json.loads(path(config).read_text())
    except (OSError, ValueError):
        return None
    if state.get("state") == "running" and not _alive(state.get("pid")):
        state["state"] = "interrupted"
    return state


def _alive(pid) -> bool:
    return isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid)


def write(config: Config, state: dict) -> None:
    p = path(config)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def applied_generated(config: Config) -> float | None:
    """The ``generated`` of the newest manifest applied in full, None if none."""
    s = read(config)
    return None if s is None else s.get("applied_generated")
