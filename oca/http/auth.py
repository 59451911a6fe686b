"""Signed URLs: the ``?t=<expires>.<signature>`` token of DESIGN.md.

With ``[auth] key_file`` set, every object request must carry a token::

    GET /o/<id>?t=<expires>.<mac>
    GET /o/<id>/range/<first>-<last>?t=<expires>.<mac>

    expires  epoch seconds, 1-12 ASCII digits; the URL is good while now <= expires
    mac      64 lowercase hex digits: HMAC-SHA256(key, "<id>|<expires>"), where
             <expires> is the digits exactly as written in the URL

A missing, malformed, expired or wrong token is a 403. The token is found as the
first ``t=`` parameter of the raw query (other parameters may stand before or after
it, separated by ``&``); it is not percent-decoded, as a correct one never needs it.

Key file: the key is the file's bytes as they are, less one trailing newline; at
least 16 bytes. Hex text is the easy form to generate and to copy to the signer::

    openssl rand -hex 32 > /etc/oca/url.key                    # or:
    head -c 32 /dev/urandom | xxd -p -c 64 > /etc/oca/url.key

Those 64 hex characters *are* the key (their ASCII bytes; they are not hex-decoded),
so whoever signs URLs must use the file's text, not the 32 bytes it spells.

Scopes: viewer URLs are one scope, ``viewer``, and its message is the contract's
``<id>|<expires>``. Fill traffic will get a scope of its own with a key file of its
own; every scope other than ``viewer`` signs ``<scope>|<id>|<expires>``. A token of
one scope never verifies in another: the keys differ, and even under one key the
messages cannot coincide, because an object id never contains ``|`` (so no viewer
message ``<id>|<expires>`` reads as ``fill|<id>|<expires>``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from ..errors import ConfigError
from ..ids import check_id

VIEWER = "viewer"
"""The scope of viewers' object URLs; its message is the DESIGN.md contract form."""

MIN_KEY_BYTES = 16
MAX_EXPIRES = 10**12 - 1  # 12 digits: year 33658
_MAC_HEX = 64  # hex digits of a SHA-256 MAC
_SCOPE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")


def load_key(path: Path) -> bytes:
    """The key in *path*: its bytes less one trailing newline; ConfigError naming the
    file when it cannot be read or holds fewer than 16 bytes."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"key file {path}: cannot read: {e.strerror or e}") from None
    key = data[:-1] if data.endswith(b"\n") else data
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"key file {path}: {len(key)} bytes, at least {MIN_KEY_BYTES} needed "
            "(generate one with `openssl rand -hex 32`)")
    return key


class _Scoped:
    """A key bound to one scope: the HMAC state after the key, and the message prefix."""

    def __init__(self, key: bytes, scope: str = VIEWER):
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")
        if not isinstance(scope, str) or not _SCOPE_RE.match(scope):
            raise ValueError(f"scope must match [a-z][a-z0-9-]{{0,31}}, not {scope!r}")
        self.scope = scope
        self._prefix = "" if scope == VIEWER else scope + "|"
        # The key's HMAC state is computed once; each MAC starts from a copy of it.
        # timeit on CPython 3.11 / OpenSSL 3, 25-character id: copy+update+hexdigest
        # 1.2 us, hmac.new(key, msg, sha256) per message 1.7 us.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def _mac(self, object_id: str, expires: str) -> str:
        h = self._keyed.copy()
        h.update(f"{self._prefix}{object_id}|{expires}".encode())
        return h.hexdigest()


class Signer(_Scoped):
    """Makes tokens and signed URLs for one scope."""

    def token(self, object_id: str, expires: int) -> str:
        """``<expires>.<mac>`` for *object_id*, good until epoch second *expires*.

        BadIdError for an invalid id; ValueError for *expires* outside 0-999999999999.
        """
        check_id(object_id)
        if isinstance(expires, bool) or not isinstance(expires, int) \
                or not 0 <= expires <= MAX_EXPIRES:
            raise ValueError(f"expires must be an epoch second 0-{MAX_EXPIRES}, not {expires!r}")
        return f"{expires}.{self._mac(object_id, str(expires))}"

    def url(self, base: str, object_id: str, ttl_seconds: float, now: float) -> str:
        """``<base>/o/<id>?t=<token>``, good for *ttl_seconds* from *now* (epoch seconds).

        The expiry is rounded down to the second, so a URL never lives longer than asked.
        """
        if not ttl_seconds > 0 or not now >= 0:  # also refuses NaN
            raise ValueError(f"need ttl > 0 and now >= 0, not ttl {ttl_seconds!r}, now {now!r}")
        expires = now + ttl_seconds
        if not expires <= MAX_EXPIRES:
            raise ValueError(f"expiry {expires:.0f} is past {MAX_EXPIRES} (12 digits)")
        return f"{base.rstrip('/')}/o/{object_id}?t={self.token(object_id, int(expires))}"


class TokenChecker(_Scoped):
    """Verifies tokens of one scope, once per request: cheap, and never raises on what
    a client sent. The caller has checked the id already (DESIGN.md: a bad id is a
    400/404 before any token matters); of the id, this only refuses what would break
    scope separation or encoding: a ``|`` or a non-ASCII character."""

    def check(self, object_id: str, query: str | None, now: float) -> bool:
        """True when the raw *query* (the text after ``?``, or None) carries a token that
        is well formed, not expired at *now* (epoch seconds) and signed for *object_id*."""
        if not query:
            return False
        if query.startswith("t="):
            start = 2
        else:
            start = query.find("&t=")
            if start < 0:
                return False
            start += 3
        end = query.find("&", start)
        expires, dot, mac = (query[start:] if end < 0 else query[start:end]).partition(".")
        if (not dot or len(mac) != _MAC_HEX or not mac.isascii()
                or not 0 < len(expires) <= 12 or not expires.isascii() or not expires.isdigit()
                or int(expires) < now
                or not object_id.isascii() or "|" in object_id):
            return False
        # Uppercase hex fails here too: the computed MAC is lowercase. compare_digest takes
        # time independent of where the strings differ (it needs ASCII str, checked above).
        return hmac.compare_digest(self._mac(object_id, expires), mac)


def signed_url(base: str, object_id: str, key: bytes, ttl_seconds: float, now: float) -> str:
    """A viewer URL ``<base>/o/<id>?t=<token>`` good for *ttl_seconds* from *now*."""
    return Signer(key).url(base, object_id, ttl_seconds, now)
