"""Probing the upstream paths: per path, every interval, a TCP connect to each probe URL
and an HTTP GET of it, from the path's source address (which a rule of ours pins to the
path's own routing table), so a probe measures that path and no other.

One thread per path (``Prober``): a slow or dead path never delays the others' rounds.
A round answers when every probe URL of the path answered 2xx within the timeout; its RTT
is the first URL's time from the connect to the response's status line (what a fill or
a redirected viewer would wait for over that path).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from urllib.parse import urlsplit

from .policy import Probe

HISTORY = 1000
"""Probe rounds a Prober keeps (the policy reads the last ``window`` of them)."""


def probe_url(url: str, source: str | None, timeout: float) -> float | None:
    """The time (ms) from the TCP connect to *url*'s host to the status line of a GET of
    it, when that answers 2xx within *timeout* seconds in all, from *source* (an address
    of this host) when given; None when it does not."""
    u = urlsplit(url)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        t0 = time.monotonic()
        sock.connect((host, port))
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        netloc = f"[{host}]" if family == socket.AF_INET6 else host
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: oca-steer\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        head = b""
        while b"\r\n" not in head:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            chunk = sock.recv(4096)
            if not chunk:
                return None
            head += chunk
        rtt = (time.monotonic() - t0) * 1000.0
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].startswith(b"2"):
            return None
        return rtt
    except OSError:
        return None
    finally:
        sock.close()


class Prober:
    """Probes one path every *interval* seconds in a thread of its own and keeps the
    rounds (oldest first) for the policy."""

    def __init__(self, name: str, urls: tuple[str, ...], source: str | None,
                 interval: float, timeout: float | None = None):
        self.name = name
        self.urls = urls
        self.source = source
        self.interval = interval
        self.timeout = timeout if timeout is not None else interval * 0.9
        self.rounds: collections.deque[Probe] = collections.deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"oca-steer-probe-{name}")

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + self.timeout + 1)

    def history(self) -> list[Probe]:
        with self._lock:
            return list(self.rounds)

    def probe(self) -> Probe:
        """One round now."""
        t = time.time()
        rtts = [probe_url(url, self.source, self.timeout) for url in self.urls]
        ok = all(r is not None for r in rtts)
        return Probe(t, ok, rtts[0] if ok else None)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            p = self.probe()
            with self._lock:
                self.rounds.append(p)
            next_at += self.interval
            wait = next_at - time.monotonic()
            if wait < 0:  # a round took longer than the interval: start the next now
                next_at = time.monotonic()
                wait = 0
            self._stop.wait(wait)
