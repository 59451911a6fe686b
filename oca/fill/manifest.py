"""Reading this appliance's fill manifest (DESIGN.md "Fill manifest"), from a file or an
http(s) URL, and checking every field before anything is changed: a bad manifest is one
error naming the field (``objects[12].tier: unknown tier 'tape'``), and the store is left
as it was."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TIERS
from ..digest import is_digest
from ..errors import OcaError, UsageError
from ..ids import is_valid_id

MAX_OBJECT_SIZE = 1 << 50
"""1 PiB: a larger size is a broken manifest, not an object."""


class ManifestError(UsageError):
    """The manifest is not one this appliance can apply (exit 2)."""


@dataclass(frozen=True)
class FillObject:
    """One object the appliance holds after tonight."""

    id: str
    size: int
    xxh3: str | None
    tier: str
    source: str  # the node to copy from; the appliance itself for what it keeps
    wave: int


@dataclass
class Manifest:
    appliance: str
    generated: float
    objects: list[FillObject]
    delete: list[str]
    sources: dict[str, str] = field(default_factory=dict)  # node name -> base URL
    upstream: list[str] = field(default_factory=list)  # the fallback chain
    where: str = ""  # the file or URL it was read from

    def chain(self, obj: FillObject) -> list[str]:
        """The nodes to ask for *obj*, in order: its source, then ``upstream``."""
        return [obj.source] + [u for u in self.upstream if u != obj.source]


def read_text(where: str, timeout: float = 30.0) -> str:
    """The manifest's text, from a file path or an http(s) URL; OcaError (exit 1) when it
    cannot be had."""
    if where.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(where, timeout=timeout) as resp:  # noqa: S310
                return resp.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise OcaError(f"manifest {where}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise OcaError(f"manifest {where}: cannot fetch: {reason}") from None
        except UnicodeDecodeError:
            raise ManifestError(f"manifest {where}: not UTF-8 text") from None
    try:
        return Path(where).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OcaError(f"manifest {where}: no such file") from None
    except OSError as e:
        raise OcaError(f"manifest {where}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"manifest {where}: not UTF-8 text") from None


def load(where: str, appliance: str, timeout: float = 30.0) -> Manifest:
    """This appliance's manifest from *where*, checked (ManifestError naming the field)."""
    return parse(read_text(where, timeout), appliance, where)


def parse(text: str, appliance: str, where: str = "manifest") -> Manifest:
    """Check and read a manifest's *text* for *appliance*."""
    def fail(key: str, message: str):
        raise ManifestError(f"manifest {where}: {key}: {message}")

    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest {where}: not JSON: {e}") from None
    if not isinstance(raw, dict):
        fail("(top level)", f"must be an object, not {_kind(raw)}")
    name = raw.get("appliance")
    if not isinstance(name, str):
        fail("appliance", f"must be a string, not {_kind(name)}")
    if name != appliance:
        fail("appliance", f"names {name!r}, not this appliance ({appliance!r}: "
                          "[server] name)")
    generated = raw.get("generated")
    if isinstance(generated, bool) or not isinstance(generated, int | float) or generated < 0:
        fail("generated", f"must be epoch seconds, not {generated!r}")
    sources = raw.get("sources", {})
    if not isinstance(sources, dict):
        fail("sources", f"must be an object of node -> URL, not {_kind(sources)}")
    for node, url in sources.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            fail(f"sources.{node}", f"must be an http(s) URL, not {url!r}")
    upstream = raw.get("upstream", [])
    if not isinstance(upstream, list):
        fail("upstream", f"must be a list of node names, not {_kind(upstream)}")
    for i, node in enumerate(upstream):
        if not isinstance(node, str) or node not in sources:
            fail(f"upstream[{i}]", f"{node!r} has no URL in sources")
    objects_raw = raw.get("objects")
    if not isinstance(objects_raw, list):
        fail("objects", f"must be a list, not {_kind(objects_raw)}")
    objects: list[FillObject] = []
    seen: set[str] = set()
    for i, o in enumerate(objects_raw):
        key = f"objects[{i}]"
        if not isinstance(o, dict):
            fail(key, f"must be an object, not {_kind(o)}")
        oid = o.get("id")
        if not is_valid_id(oid):
            fail(f"{key}.id", f"not a valid object id: {oid!r}")
        if oid in seen:
            fail(f"{key}.id", f"{oid!r} is listed twice")
        seen.add(oid)
        size = o.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_OBJECT_SIZE:
            fail(f"{key}.size", f"must be a whole number of bytes from 0 to 1 PiB, not {size!r}")
        digest = o.get("xxh3")
        if digest is not None and not is_digest(digest):
            fail(f"{key}.xxh3", f"must be 32 lowercase hex digits or null, not {digest!r}")
        tier = o.get("tier")
        if tier not in TIERS:
            fail(f"{key}.tier", f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")
        source = o.get("source")
        if not isinstance(source, str) or not source:
            fail(f"{key}.source", f"must be a node name, not {source!r}")
        if source != appliance and source not in sources:
            fail(f"{key}.source", f"{source!r} has no URL in sources"
                 + ("" if "sources" in raw else " (the manifest has no sources: an older plan; "
                    "plan again)"))
        wave = o.get("wave", 0)
        if isinstance(wave, bool) or not isinstance(wave, int) or wave < 0:
            fail(f"{key}.wave", f"must be a whole number from 0, not {wave!r}")
        objects.append(FillObject(oid, size, digest, tier, source, wave))
    delete = raw.get("delete", [])
    if not isinstance(delete, list):
        fail("delete", f"must be a list of object ids, not {_kind(delete)}")
    for i, oid in enumerate(delete):
        if not is_valid_id(oid):
            fail(f"delete[{i}]", f"not a valid object id: {oid!r}")
        if oid in seen:
            fail(f"delete[{i}]", f"{oid!r} is also in objects")
    return Manifest(name, float(generated), objects, list(dict.fromkeys(delete)),
                    dict(sources), list(upstream), where)


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__
