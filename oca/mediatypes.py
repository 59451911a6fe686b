"""Content types of stored objects: given by the operator, else guessed from the id."""

import mimetypes
import re

from .errors import UsageError

DEFAULT = "application/octet-stream"

# Streaming formats that Python's table lacks or gets wrong.
_VIDEO = {
    ".m4s": "video/iso.segment",
    ".m4v": "video/mp4",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".ts": "video/mp2t",
    ".mpd": "application/dash+xml",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".vtt": "text/vtt",
    ".ismv": "video/mp4",
    ".cmfv": "video/mp4",
    ".cmfa": "audio/mp4",
}

# RFC 9110 section 8.3.1: type "/" subtype *( OWS ";" OWS parameter ), token chars only.
# Quoted values: visible ASCII and SP only (section 5.5: senders limit field values to
# VCHAR, SP and HTAB and should not generate obs-text; anything else is a typo here).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[ !#-\[\]-~]*\"))*\Z"
)


def guess(object_id: str) -> str:
    """Content type from the id's extension; application/octet-stream when unknown."""
    dot = object_id.rfind(".")
    if dot > 0:
        ext = object_id[dot:].lower()
        if ext in _VIDEO:
            return _VIDEO[ext]
    mime, encoding = mimetypes.guess_type(object_id, strict=False)
    # a.tar.gz is gzip bytes, not a tar: without Content-Encoding the honest type is opaque.
    return mime if mime and not encoding else DEFAULT


def check(value: str) -> str:
    """Return *value* if it is a valid media type for a Content-Type header."""
    if len(value) > 200 or not _MEDIA_TYPE_RE.match(value):
        raise UsageError(f"invalid content type {value!r}: expected type/subtype, e.g. video/mp4")
    return value
