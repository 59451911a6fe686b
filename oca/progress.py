"""Progress for long jobs: a bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

log = logging.getLogger("oca.progress")

LOG_EVERY = 10.0
"""Seconds between progress log lines when stderr is not a terminal."""


class Progress:
    """``with Progress("verify", total=n, unit="B") as p: p.update(k)``."""

    def __init__(self, label: str, total: int | None = None, unit: str = "it",
                 enabled: bool = True):
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._bar = None
        self._last_log = time.monotonic()
        self._tty = enabled and sys.stderr.isatty()
        self._log = enabled and not self._tty

    def __enter__(self) -> Progress:
        if self._tty:
            # A terminal that reports no size (0x0: a serial console, a pty nobody sized)
            # makes tqdm compute -1 rows and draw nothing at all; assume 80x24 there.
            try:
                sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
            except (OSError, ValueError):
                sized = False
            shape = {"dynamic_ncols": True} if sized else {"ncols": 80, "nrows": 24}
            self._bar = tqdm(total=self.total, desc=self.label, unit=self.unit,
                             unit_scale=self.unit == "B", unit_divisor=1024, leave=False,
                             file=sys.stderr, **shape)
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._log and time.monotonic() - self._last_log >= LOG_EVERY:
            self._last_log = time.monotonic()
            of = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s %s", self.label, self.done, of, self.unit)

    def each(self, items):
        """Yield *items*, counting one for each."""
        for item in items:
            yield item
            self.update(1)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
