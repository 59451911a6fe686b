"""Object ids: the one contract that stands between a URL and a path on disk.

An id is ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}`` (DESIGN.md). Nothing else ever
becomes part of a path.
"""

import re

from .errors import UsageError

MAX_ID_LEN = 128
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


class BadIdError(UsageError):
    """The string is not a valid object id."""


def is_valid_id(value: str) -> bool:
    """True when *value* is a valid object id."""
    return isinstance(value, str) and _ID_RE.match(value) is not None


def check_id(value: str) -> str:
    """Return *value* if it is a valid object id, else raise BadIdError saying why."""
    if is_valid_id(value):
        return value
    if not isinstance(value, str) or value == "":
        raise BadIdError("invalid object id '': must not be empty")
    shown = value if len(value) <= 40 else value[:37] + "..."
    if len(value) > MAX_ID_LEN:
        raise BadIdError(
            f"invalid object id {shown!r}: {len(value)} characters, at most {MAX_ID_LEN}"
        )
    bad = next((c for c in value if c not in _ALLOWED), None)
    if bad is not None:
        raise BadIdError(
            f"invalid object id {shown!r}: character {bad!r} not allowed (A-Z a-z 0-9 . _ -)"
        )
    raise BadIdError(f"invalid object id {shown!r}: must start with a letter or digit")
