"""Content types: guessed from the id for streaming formats, or checked when given."""

from __future__ import annotations

import pytest

from oca import mediatypes
from oca.errors import UsageError


@pytest.mark.parametrize(("object_id", "expected"), [
    ("title.mp4", "video/mp4"),
    ("TITLE.MP4", "video/mp4"),
    ("seg-0001.m4s", "video/iso.segment"),
    ("audio.m4a", "audio/mp4"),
    ("chunk.ts", "video/mp2t"),
    ("manifest.mpd", "application/dash+xml"),
    ("index.m3u8", "application/vnd.apple.mpegurl"),
    ("clip.webm", "video/webm"),
    ("film.mkv", "video/x-matroska"),
    ("subs.en.vtt", "text/vtt"),
    ("v.ismv", "video/mp4"),
    ("v.cmfv", "video/mp4"),
    ("a.cmfa", "audio/mp4"),
    ("poster.jpg", "image/jpeg"),
    ("meta.json", "application/json"),
    ("noextension", "application/octet-stream"),
    ("title.mp4.part", "application/octet-stream"),
    ("a.", "application/octet-stream"),
])
def test_guess(object_id, expected):
    assert mediatypes.guess(object_id) == expected


@pytest.mark.parametrize("value", [
    "video/mp4",
    "application/vnd.apple.mpegurl",
    "text/plain; charset=utf-8",
    "text/plain;charset=utf-8",
    'multipart/mixed; boundary="a b c"',
    "video/mp4; codecs=avc1.640028",
    'text/plain; x="a b!#[]~"',
])
def test_check_accepts(value):
    assert mediatypes.check(value) == value


@pytest.mark.parametrize("value", [
    "",
    "video",
    "video/",
    "/mp4",
    "video/mp4 extra",
    "video/mp4;",
    "video/mp4\r\nX-Injected: 1",
    "video/mp4\n",
    "vidéo/mp4",
    'text/plain; charset="utf\x00"',
    'text/plain; x="\x7f"',
    # field values are visible ASCII (RFC 9110 section 5.5)
    'text/plain; title="€"',
    'text/plain; title="é"',
    "a/" + "b" * 199,
])
def test_check_rejects_with_a_usage_error(value):
    with pytest.raises(UsageError) as e:
        mediatypes.check(value)
    assert str(e.value) == (
        f"invalid content type {value!r}: expected type/subtype, e.g. video/mp4")


def test_check_length_limit_is_200():
    assert mediatypes.check("a/" + "b" * 198) == "a/" + "b" * 198


@pytest.mark.parametrize("object_id", ["backup.tar.gz", "logo.svgz", "x.json.bz2"])
def test_compressed_files_are_opaque_not_their_inner_type(object_id):
    assert mediatypes.guess(object_id) == "application/octet-stream"
