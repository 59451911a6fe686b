"""One object's copy from one source over HTTP/1.1, and the appliance-wide rate limit.

A source is any HTTP/1.1 server that serves ``<base>/o/<id>`` and honours ``Range``
(another ``oca serve``, nginx over a directory). The response is checked before a byte
is written (status, lengths, ``Content-Range``, the strong ``ETag`` when it is an xxh3
digest); the body is then read straight into the store's ingest buffer
(``HTTPResponse.readinto``: one copy in user space). Connections are kept alive per
thread and per source.

Client: the standard library's ``http.client`` rather than aiohttp or httpx: the store's
ingest (``Store.put_stream``) is blocking (it fsyncs) and reads with ``readinto``, which
``http.client`` serves from the socket into the caller's buffer without an intermediate
``bytes`` per chunk; transfers run in threads, N at once. Measured (bench/fill/clients.py,
bench/RESULTS.md): 828 MiB/s one at a time and 1,608 four at once, against aiohttp's 793
and 668 and httpx's 360 and 496, with the least CPU.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from urllib.parse import urlsplit

from .. import __version__
from .manifest import FillObject

USER_AGENT = f"oca-fill/{__version__}"
_ETAG_DIGEST = re.compile(r'"([0-9a-f]{32})"\Z')


class CopyRefused(Exception):
    """This source cannot give this object now: try again (*retry*: a connection error,
    a timeout, a 5xx), wait for it (*missing*: a 404) or ask the next source."""

    def __init__(self, source: str, reason: str, retry: bool = False, missing: bool = False):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.retry = retry
        self.missing = missing


class RateLimit:
    """At most *bits_per_second* for every transfer of the appliance together (a token
    bucket that may run into debt by one read: the reader that took it waits it off);
    0: no limit."""

    def __init__(self, bits_per_second: float):
        self.rate = bits_per_second / 8.0  # bytes per second
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._burst = max(self.rate * 0.05, 64 << 10)  # 50 ms of the rate
        self._at = time.monotonic()

    def take(self, nbytes: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Connections:
    """Keep-alive connections of one thread, one per source origin (scheme, host, port)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def get(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn = self._conns.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = self._conns[(scheme, netloc)] = cls(netloc, timeout=self.timeout)
        return conn

    def drop(self, scheme: str, netloc: str) -> None:
        conn = self._conns.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class Copy:
    """An object's response from a source, checked: read it with ``readinto`` (as
    ``Store.put_stream`` does), *start* its first byte's position, *xxh3* the digest to
    verify it against. ``close()`` when done: the connection is kept for the next
    request when the body was read to its end, dropped otherwise."""

    def __init__(self, conns: Connections, scheme: str, netloc: str,
                 resp: http.client.HTTPResponse, start: int, xxh3: str, rate: RateLimit):
        self._conns = conns
        self._key = (scheme, netloc)
        self._resp = resp
        self.start = start
        self.xxh3 = xxh3
        self._rate = rate

    def readinto(self, buf) -> int:
        n = self._resp.readinto(buf)
        if n:
            self._rate.take(n)
        return n

    def close(self) -> None:
        if not self._resp.isclosed():
            self._conns.drop(*self._key)  # the rest of the body is not wanted


def _url(base: str, oid: str, token: str | None) -> tuple[str, str, str]:
    u = urlsplit(base)
    path = f"{u.path.rstrip('/')}/o/{oid}" + (f"?t={token}" if token else "")
    return u.scheme, u.netloc, path


def _request(conns: Connections, name: str, base: str, method: str, oid: str,
             token: str | None, headers: dict[str, str]) -> tuple[str, str,
                                                                 http.client.HTTPResponse]:
    scheme, netloc, path = _url(base, oid, token)
    headers = {"User-Agent": USER_AGENT, **headers}
    for attempt in (0, 1):
        conn = conns.get(scheme, netloc)
        try:
            conn.request(method, path, headers=headers)
            return scheme, netloc, conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            # A kept-alive connection the source closed meanwhile: once more, afresh.
            conns.drop(scheme, netloc)
            if attempt:
                raise CopyRefused(name, f"connection lost: {e}", retry=True) from None
        except (OSError, http.client.HTTPException) as e:
            conns.drop(scheme, netloc)
            raise CopyRefused(name, f"cannot reach {netloc}: {e}", retry=True) from None
    raise AssertionError("unreachable")


def open_copy(conns: Connections, name: str, base: str, obj: FillObject, start: int,
              token: str | None, rate: RateLimit) -> Copy:
    """Ask source *name* (at *base*) for *obj* from byte *start* (a kept partial prefix:
    ``Range`` with ``If-Range`` on the digest, so a changed object never continues an old
    prefix); the checked response. CopyRefused when this copy cannot be used."""
    headers = {}
    if start:
        headers["Range"] = f"bytes={start}-"
        headers["If-Range"] = f'"{obj.xxh3}"'
    scheme, netloc, resp = _request(conns, name, base, "GET", obj.id, token, headers)

    def refuse(reason: str, retry: bool = False, missing: bool = False):
        resp.close()
        conns.drop(scheme, netloc)
        raise CopyRefused(name, reason, retry=retry, missing=missing)

    status = resp.status
    if status == 404:
        refuse("404: does not hold it", missing=True)
    if 300 <= status < 400:
        refuse(f"{status} redirect to {resp.getheader('Location')!r}: not followed")
    if status >= 500:
        refuse(f"{status} {resp.reason}", retry=True)
    if status not in (200, 206):
        refuse(f"{status} {resp.reason}")
    length = resp.getheader("Content-Length")
    if length is None or not length.isdigit():
        refuse(f"no valid Content-Length ({length!r})")
    if status == 200:
        if start:
            refuse("a 200 to a Range request (it ignores Range)")
        if int(length) != obj.size:
            refuse(f"Content-Length {length}, the manifest says {obj.size}")
    else:
        want = f"bytes {start}-{obj.size - 1}/{obj.size}"
        if not start or resp.getheader("Content-Range") != want:
            refuse(f"Content-Range {resp.getheader('Content-Range')!r}, asked {want!r}")
        if int(length) != obj.size - start:
            refuse(f"Content-Length {length} for {want!r}")
    m = _ETAG_DIGEST.match(resp.getheader("ETag") or "")
    etag_digest = m.group(1) if m else None
    if obj.xxh3 and etag_digest and etag_digest != obj.xxh3:
        refuse(f"holds another version (ETag {etag_digest}, the manifest says {obj.xxh3})")
    digest = obj.xxh3 or etag_digest
    if digest is None:
        refuse("no digest to verify against: none in the manifest, and its ETag "
               f"{resp.getheader('ETag')!r} is not an xxh3 digest")
    return Copy(conns, scheme, netloc, resp, start, digest, rate)


def holds(conns: Connections, name: str, base: str, obj: FillObject,
          token: str | None) -> bool:
    """Whether source *name* serves *obj* now (HEAD: 200)."""
    scheme, netloc, resp = _request(conns, name, base, "HEAD", obj.id, token, {})
    resp.read()
    if resp.will_close:
        conns.drop(scheme, netloc)
    return resp.status == 200
