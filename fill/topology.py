"""The fleet topology: origin, backbone nodes, sites with their appliances, and links.

The JSON is shared with the fill agent and with Ansible (DESIGN.md, "Topology"), so keys
this module does not know are allowed and ignored: others extend the file. Every value
it reads is checked, and a bad one is an InputError naming the file and the JSON path,
e.g. ``topology.json: sites[1].appliances[0].tiers.ssd: 'x' is not a size (...)``.

Beyond DESIGN.md: a site's ``fill_window`` and ``upstream`` are optional (whole day; fill
from the origin), and a backbone node may have a ``fill_window`` too (whole day when
absent). docs/fill-inputs.md describes every key.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import deque
from pathlib import Path
from typing import Any

from oca.units import parse_size

from .errors import InputError
from .model import TIERS, ApplianceSpec, BackboneSpec, Link, Site, Topology

__all__ = ["load_topology", "parse_fill_window"]

# Node names become file names (manifests/<appliance>.json), so they follow the rule of
# an appliance's `[server] name` (oca/config.py).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_WINDOW_RE = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)\Z")


def parse_fill_window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` (UTC) to (start, end) seconds after midnight.

    An end before the start wraps past midnight (``22:00-06:00``); equal ends, or
    ``00:00-24:00``, mean the whole day. ValueError when malformed.
    """
    m = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"{text!r} is not a fill window (expected HH:MM-HH:MM, e.g. 02:00-08:00)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} is not a fill window (hours 00-23, minutes 00-59; "
                         "24:00 only as an end)")
    return (h1 * 3600 + m1 * 60, (h2 * 3600 + m2 * 60) % 86400)


class _Node:
    """One JSON object at a JSON path; every failure names the file and the path."""

    def __init__(self, file: Path, path: str, value: Any):
        self.file = file
        self.path = path
        if not isinstance(value, dict):
            self.fail(f"must be an object, not {_kind(value)}")
        self.value = value

    def fail(self, message: str, key: str | None = None) -> None:
        where = self.path if key is None else (f"{self.path}.{key}" if self.path else key)
        raise InputError(f"{self.file}: {where or '(top level)'}: {message}")

    def child(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], required: bool = True,
            default: Any = None) -> Any:
        if key not in self.value or (not required and self.value[key] is None):
            if required:
                self.fail("missing (required)", key)
            return default
        value = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(dict.fromkeys(_TYPE_NAMES[k] for k in kinds))
            self.fail(f"must be {names}, not {_kind(value)}", key)
        return value

    def name(self) -> str:
        value = self.get("name", str)
        if not _NAME_RE.match(value):
            self.fail(f"{value!r} is not a valid name (A-Z a-z 0-9 . _ -, starting with a "
                      "letter or digit, at most 63 characters)", "name")
        return value

    def url(self) -> str:
        value = self.get("url", str)
        if not value.startswith(("http://", "https://")):
            self.fail(f"{value!r} is not an http:// or https:// URL", "url")
        return value

    def positive(self, key: str) -> float:
        value = self.get(key, (int, float))
        if not math.isfinite(value) or value <= 0:
            self.fail(f"must be a number greater than zero, not {value!r}", key)
        return float(value)

    def tiers(self) -> dict[str, int]:
        raw = self.get("tiers", dict)
        if not raw:
            self.fail("needs at least one tier (ssd, flash, hdd)", "tiers")
        out: dict[str, int] = {}
        for tier in raw:
            if tier not in TIERS:
                self.fail(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})",
                          f"tiers.{tier}")
        for tier in TIERS:
            if tier not in raw:
                continue
            value = raw[tier]
            try:
                size = parse_size(value)
            except ValueError:
                self.fail(f"{value!r} is not a size (bytes, or K/M/G/T as powers of 1024, "
                          "e.g. 500G)", f"tiers.{tier}")
            if size <= 0:
                self.fail(f"must be greater than zero, not {value!r}", f"tiers.{tier}")
            out[tier] = size
        return out

    def fill_window(self) -> tuple[int, int]:
        raw = self.get("fill_window", str, required=False)
        if raw is None:
            return (0, 0)
        try:
            return parse_fill_window(raw)
        except ValueError as e:
            self.fail(str(e), "fill_window")
        raise AssertionError("unreachable")

    def items(self, key: str, required: bool) -> list[_Node]:
        raw = self.get(key, list, required=required, default=[])
        return [_Node(self.file, f"{self.child(key)}[{i}]", v) for i, v in enumerate(raw)]


_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", dict: "an object",
               list: "a list", bool: "true or false"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return {dict: "an object", list: "a list"}.get(type(value), f"{type(value).__name__} "
                                                                f"{value!r}")


def load_topology(path: str | os.PathLike) -> Topology:
    """Read and validate the topology JSON at *path*.

    Checks every value it uses, that names are unique across the origin, backbone
    nodes, sites and appliances, that a site's upstream is a backbone node, that links
    join known nodes, and that every backbone node and site can be reached from the
    origin (and every site from its upstream) over links. Raises InputError naming the
    file and the JSON path.
    """
    file = Path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{file}: topology file not found") from None
    except OSError as e:
        raise InputError(f"{file}: cannot read topology: {e.strerror or e}") from None
    try:
        raw = json.loads(text)
    except UnicodeDecodeError:
        raise InputError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{file}: line {e.lineno}: not valid JSON: {e.msg} "
                         f"(column {e.colno})") from None
    top = _Node(file, "", raw)
    names: dict[str, str] = {}  # name -> JSON path of its owner

    def claim(node: _Node, name: str) -> None:
        if name in names:
            node.fail(f"{name!r} is already the name of {names[name]}", "name")
        names[name] = node.path

    origin_node = _Node(file, "origin", top.get("origin", dict))
    origin = origin_node.name()
    origin_url = origin_node.url()
    claim(origin_node, origin)

    backbone = []
    for node in top.items("backbone", required=False):
        name = node.name()
        claim(node, name)
        backbone.append(BackboneSpec(name=name, url=node.url(), tiers=node.tiers(),
                                     fill_window=node.fill_window()))
    backbone_names = {b.name for b in backbone}

    sites = []
    site_nodes = top.items("sites", required=True)
    if not site_nodes:
        top.fail("needs at least one site", "sites")
    for node in site_nodes:
        name = node.name()
        claim(node, name)
        upstream = node.get("upstream", str, required=False)
        if upstream is not None and upstream not in backbone_names:
            known = ", ".join(b.name for b in backbone) or "none defined"
            node.fail(f"{upstream!r} is not a backbone node (backbone: {known})", "upstream")
        window = node.fill_window()
        appliances = []
        app_nodes = node.items("appliances", required=True)
        if not app_nodes:
            node.fail("needs at least one appliance", "appliances")
        for app in app_nodes:
            app_name = app.name()
            claim(app, app_name)
            appliances.append(ApplianceSpec(name=app_name, url=app.url(),
                                            serve_gbps=app.positive("serve_gbps"),
                                            tiers=app.tiers()))
        sites.append(Site(name=name, upstream=upstream, fill_window=window,
                          appliances=tuple(appliances)))

    nodes = {origin} | backbone_names | {s.name for s in sites}
    links = []
    seen_links: dict[tuple[str, str], str] = {}
    for node in top.items("links", required=False):
        ends = []
        for key in ("from", "to"):
            end = node.get(key, str)
            if end not in nodes:
                what = "an appliance; links join" if end in names else "not a node of"
                node.fail(f"{end!r} is {what} the origin, backbone nodes and sites", key)
            ends.append(end)
        if ends[0] == ends[1]:
            node.fail(f"a link from {ends[0]!r} to itself", "to")
        if tuple(ends) in seen_links:
            node.fail(f"a second link from {ends[0]!r} to {ends[1]!r} (also "
                      f"{seen_links[tuple(ends)]})")
        seen_links[(ends[0], ends[1])] = node.path
        links.append(Link(src=ends[0], dst=ends[1], gbps=node.positive("gbps")))

    topo = Topology(origin=origin, origin_url=origin_url, backbone=tuple(backbone),
                    sites=tuple(sites), links=tuple(links))
    _check_routes(file, topo)
    return topo


def _reachable(links: tuple[Link, ...], start: str) -> set[str]:
    out: dict[str, list[str]] = {}
    for lk in links:
        out.setdefault(lk.src, []).append(lk.dst)
    seen = {start}
    todo = deque([start])
    while todo:
        for nxt in out.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _check_routes(file: Path, topo: Topology) -> None:
    """Every fill needs a route: origin -> each backbone node and site, upstream -> site."""
    from_origin = _reachable(topo.links, topo.origin)
    for i, b in enumerate(topo.backbone):
        if b.name not in from_origin:
            raise InputError(f"{file}: backbone[{i}]: no route from the origin "
                             f"{topo.origin!r} to {b.name!r} over links")
    for i, s in enumerate(topo.sites):
        if s.name not in from_origin:
            raise InputError(f"{file}: sites[{i}]: no route from the origin "
                             f"{topo.origin!r} to {s.name!r} over links")
        if s.upstream is not None and s.name not in _reachable(topo.links, s.upstream):
            raise InputError(f"{file}: sites[{i}].upstream: no route from {s.upstream!r} "
                             f"to {s.name!r} over links")
