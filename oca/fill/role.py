"""The fill agent as a role of ``oca serve`` (``[fill] manifest_url`` set): a process of
its own under the supervisor, never a serving worker.

In the window (``[fill] window``, local time; none: any time) it fetches the manifest
every ``poll_interval`` and applies it unless one as new has been applied in full
already (the state file's ``applied_generated``); no transfer starts after the window's
end, and what is left resumes the next night (partial files are kept). SIGTERM: no new
transfer starts, the process exits when those under way are done (the supervisor's
SIGKILL after its stop timeout is safe too: a partial file is resumed next time).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from ..config import Config
from ..errors import OcaError
from . import state
from .agent import run_recorded
from .manifest import load

log = logging.getLogger("oca.fill")


def window_bounds(now: float, window: tuple[int, int] | None) -> tuple[float, float | None]:
    """(start, end) in epoch seconds of the fill window that is open at *now* or opens
    next; *window* is (start, end) in minutes after local midnight (end <= start: it
    ends the next day). No window: (now, None), always open."""
    if window is None:
        return now, None
    s_min, e_min = window
    lt = time.localtime(now)
    for day in (-1, 0, 1):
        start = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday + day, s_min // 60, s_min % 60,
                             0, 0, 0, -1))
        next_day = 1 if e_min <= s_min else 0
        end = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday + day + next_day, e_min // 60,
                           e_min % 60, 0, 0, 0, -1))
        if now < end:
            return start, end
    raise AssertionError("unreachable: tomorrow's window ends after now")


class FillRole:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = threading.Event()
        self._agent_options = {"parallel": config.fill.parallel, "rate": config.fill.max_rate,
                               "progress": False}

    def _stop(self, *_) -> None:
        self.stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        cfg = self.config
        poll = cfg.fill.poll_interval
        skipped = None
        while not self.stopping.is_set():
            now = time.time()
            start, end = window_bounds(now, cfg.fill.window)
            if now < start:
                self.stopping.wait(min(start - now, poll))
                continue
            try:
                manifest = load(cfg.fill.manifest_url, cfg.server.name)
            except OcaError as e:
                log.warning("fill: %s", e)
                self.stopping.wait(poll)
                continue
            applied = state.applied_generated(cfg)
            if applied is not None and manifest.generated <= applied:
                if skipped != manifest.generated:
                    log.info("fill: manifest %s (generated %d) applied already",
                             manifest.where, manifest.generated)
                    skipped = manifest.generated
                self.stopping.wait(poll if end is None else min(poll, max(end - now, 1.0)))
                continue
            log.info("fill: applying %s (generated %d)%s", manifest.where, manifest.generated,
                     "" if end is None else f" until {time.strftime('%H:%M', time.localtime(end))}")
            try:
                summary = run_recorded(cfg, manifest, deadline=end, **self._agent_options,
                                       on_agent=self._started)
            except OcaError as e:
                log.warning("fill: %s", e)
            else:
                log.info("fill: %s: added %d, moved %d, deleted %d, failed %d, in %.1f s",
                         "done" if summary.ok else "not complete", summary.added,
                         summary.moved, summary.deleted, len(summary.failed),
                         summary.seconds)
            self.stopping.wait(poll)
        return 0

    def _started(self, agent) -> None:
        # SIGTERM during a run: no transfer starts after it.
        def watch():
            self.stopping.wait()
            agent.deadline = time.time()
        threading.Thread(target=watch, daemon=True, name="oca-fill-stop").start()
