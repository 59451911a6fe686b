"""Fill manifests: write tonight's, read last night's (``--previous``).

One file per appliance and per backbone node, ``<node>.json``: canonical JSON (keys
sorted, no spaces, ASCII with \\u escapes), one object per line, byte-identical for the
same plan (docs/fill-placement.md#manifest):

    {"appliance":"isp-a1","delete":["t0000003-480p.mp4"],"generated":1795000000,"objects":[
    {"id":"t0000001-1080p.mp4","size":734003200,"source":"isp-a1","tier":"ssd","wave":0,"xxh3":null},
    {"id":"t0000002-2160p.mp4","size":2147483648,"source":"bb1","tier":"hdd","wave":1,"xxh3":"..."}
    ],"sources":{"bb1":"http://bb1","isp-a1":"http://a1","origin":"http://o"},"upstream":[...]}

(the last line shortened to fit here: its ``[...]`` is ``["bb1","origin"]``.)

``objects`` is everything the node holds after tonight, by id: what it keeps has itself
as ``source`` and wave 0; what it adds has the node to copy from and the wave of the copy
(a source holds the object before the wave starts). Additions the backbone deferred are
left out. ``delete`` lists, by id, what it held and must drop. ``upstream`` is where a
fill agent turns when a source fails, in order: a site appliance's site's backbone node
(its ``upstream`` in the topology, if any), then the origin; a backbone node's, the
origin. ``sources`` is the URL, from the topology, of every node named as a ``source``
or in ``upstream``: the file is applied with nothing else.

Older plans wrote neither key (their last line is ``]}``); the readers take both forms.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from . import loops
from .errors import InputError
from .model import TIERS, Catalog, SitePlan, Topology
from .rendezvous import catalog_lookup

__all__ = ["read_previous", "read_previous_numbers", "write_manifests", "write_manifest",
           "manifest_bytes"]

_TIERS = frozenset(TIERS)
_TIER_NAME = {t: t for t in TIERS}
_PLAIN = re.compile(r'[^\x20-\x7e]|["\\]')  # characters json.dumps would escape


def read_previous(directory: str | os.PathLike,
                  nodes: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """appliance -> {id: tier} from every ``<appliance>.json`` in *directory*, or only from
    those of *nodes* (a node without a file is left out: it held nothing).

    Objects without a tier are left out. Raises InputError naming the file and the field
    for anything that is not a manifest.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"{folder}: previous manifests: not a directory")
    if nodes is None:
        # Dot-files are a writer's temporary files.
        paths = [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]
    else:
        paths = [p for p in (folder / _file_name(n) for n in nodes) if p.is_file()]
    out: dict[str, dict[str, str]] = {}
    for path in paths:
        name, held = _read_one(path)
        out[name] = held
    return out


def read_previous_numbers(directory: str | os.PathLike, nodes: Iterable[str],
                          catalog: Catalog) -> dict[str, tuple[list[str], np.ndarray]]:
    """What the planner needs of `read_previous(directory, nodes)`: node -> (its ids, in
    file order, and their object numbers in *catalog*, -1 for ids it no longer has).

    A manifest as write_manifests writes it (one canonical object a line) is read with
    no JSON object per entry (~3x faster: an appliance holds 10^5 objects); any other
    file goes through the JSON reader, with its exact errors."""
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"{folder}: previous manifests: not a directory")
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for node in nodes:
        path = folder / _file_name(node)
        if not path.is_file():
            continue
        got = _read_canonical(path, catalog)
        if got is None:
            _, held = _read_one(path)
            ids = list(held)
            got = ids, catalog_lookup(catalog, ids)
        out[node] = got
    return out


# A whole object line as write_manifests writes it (canonical JSON, keys sorted, one
# object a line, each line between two newlines): its id, when the id has no escapes or
# control characters.
_OBJECT_LINE = re.compile(
    rb'\n\{"id":"([^"\\\x00-\x1f]*)","size":\d+,"source":"(?:[^"\\\x00-\x1f]|\\.)*",'
    rb'"tier":"(?:ssd|flash|hdd)","wave":\d+,"xxh3":(?:null|"[0-9a-f]{32}")\},?(?=\n)')


def _read_canonical(path: Path, catalog: Catalog) -> tuple[list[str], np.ndarray] | None:
    """A manifest in write_manifests' form, with no JSON object per entry (and no
    polars: this runs in forked workers, where its thread pool is gone): the compiled
    scanner checks each line and numbers its id by galloping through the catalog's sorted
    ids; without it (or with ids out of order), one regex pass and a binary search do.
    None when the file is in any other form (or might be: a line without a tier, an id
    with escapes, a repeated id, bytes that are not UTF-8), for the JSON reader."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    # The first line opens `objects`, the last closes it and holds the keys after it
    # (`],"sources":{...},"upstream":[...]}`, or `]}` in older plans): the two together
    # are the manifest without its objects.
    head, sep, rest = raw.partition(b"\n")
    cut = rest.rfind(b"\n", 0, len(rest) - 1) + 1
    body, tail = rest[:cut], rest[cut:]
    if not (sep and head.endswith(b'"objects":[') and tail.startswith(b"]")
            and tail.endswith(b"}\n")):
        return None
    try:
        doc = json.loads(head + tail)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(doc, dict) and doc.get("objects") == []
            and doc.get("appliance") == path.stem):
        return None
    keys = _sorted_ids(catalog)
    if loops.compiled is not None and keys is not None and len(keys):
        # Compiled: the grammar checked and the ids numbered in one pass (ids ascending,
        # as write_manifests orders them); None: the paths below decide.
        got = loops.compiled.scan_manifest(body, keys.view(np.uint8), keys.dtype.itemsize)
        if got is not None:
            ids = _decoded([body[a:b] for a, b in zip(got[0].tolist(), got[1].tolist(),
                                                      strict=True)])
            return None if ids is None else (ids, got[2])
    lines = body.count(b"\n")
    # Every line whole in the canonical form, a comma after each but the last; else the
    # JSON reader takes the file.
    if body and not (body.endswith(b"}\n") and body.count(b"},\n") == lines - 1):
        return None
    found = _OBJECT_LINE.findall(b"\n" + body)
    if len(found) != lines:
        return None
    ids = _decoded(found)
    if ids is None or keys is None or len(set(found)) != len(found):
        return None  # not UTF-8, a catalog not in byte order, a repeated id: the JSON path
    if not found or not len(keys):
        return ids, np.full(len(found), -1, dtype=np.int64)
    want = np.array(found)  # its own width: a longer id is not cut to a catalog one's
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return ids, np.where(keys[at] == want, at, -1).astype(np.int64)


def _decoded(ids: list[bytes]) -> list[str] | None:
    try:
        return [i.decode() for i in ids]
    except UnicodeDecodeError:
        return None  # the JSON reader names the file


def _sorted_ids(catalog: Catalog) -> np.ndarray | None:
    """The catalog's ids as fixed-width bytes (sorted: the catalog is sorted by id, and
    ASCII ids sort the same as bytes), once per catalog and process; None when they do
    not sort as bytes."""
    if _IDS.get("ids") is not catalog.ids:
        keys = np.array([i.encode() for i in catalog.ids.tolist()]) if len(catalog) \
            else np.zeros(0, "S1")
        if len(keys) and not (keys[1:] > keys[:-1]).all():
            keys = None
        _IDS.clear()
        _IDS.update(ids=catalog.ids, keys=keys)
    return _IDS["keys"]


_IDS: dict = {}


def _read_one(path: Path) -> tuple[str, dict[str, str]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not a manifest: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: "
                         f"{e.msg}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a manifest: expected a JSON object")
    name = doc.get("appliance")
    if not isinstance(name, str):
        raise InputError(f"{path}: appliance: expected a string, got {_kind(name)}")
    if name != path.stem:
        raise InputError(f"{path}: appliance: {name!r} does not match the file name")
    objects = doc.get("objects")
    if not isinstance(objects, list):
        raise InputError(f"{path}: objects: expected a list, got {_kind(objects)}")
    try:
        # One shared str per tier: ~50 bytes an object less than json's own strings.
        held = {o["id"]: _TIER_NAME[o["tier"]] for o in objects if o.get("tier") is not None}
        ok = set(map(type, held)) <= {str}
    except (TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        _find_bad_object(path, objects)
    return name, held


def _find_bad_object(path: Path, objects: list) -> None:
    for i, o in enumerate(objects):
        where = f"{path}: objects[{i}]"
        if not isinstance(o, dict):
            raise InputError(f"{where}: expected an object, got {_kind(o)}")
        tier = o.get("tier")
        if tier is None:
            continue
        if not isinstance(o.get("id"), str):
            raise InputError(f"{where}.id: expected a string, got {_kind(o.get('id'))}")
        if not isinstance(tier, str) or tier not in _TIERS:
            raise InputError(f"{where}.tier: unknown tier {tier!r} "
                             f"(expected one of {', '.join(TIERS)})")
    raise InputError(f"{path}: objects: not a list of {{id, tier}} objects")  # unreachable


def _kind(v) -> str:
    return "nothing" if v is None else type(v).__name__


def write_manifests(out_dir: str | os.PathLike, site_plans: Iterable[SitePlan],
                    backbone_plans: Iterable[SitePlan], schedule, catalog: Catalog,
                    generated: float, topology: Topology) -> list[Path]:
    """Write ``<node>.json`` for every appliance of *site_plans* and every node of
    *backbone_plans*, atomically (temporary file, then rename); returns the paths in plan
    order.

    *schedule* (backbone.py) gives each addition's source and wave: through
    ``schedule.transfers.to(node)`` (arrays ``obj``, ``source``, ``wave`` with ``names``)
    when it has it, else ``schedule.source_of(node, obj) -> (source, wave) | None``; an
    addition without one is deferred and left out. *topology* gives the nodes' URLs
    (``sources``) and each node's ``upstream``.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plan in [*site_plans, *backbone_plans]:
        for node in plan.holdings:
            data = manifest_bytes(node, plan, schedule, catalog, generated, topology)
            paths.append(write_manifest(folder, node, data))
    return paths


def manifest_bytes(node: str, plan: SitePlan, schedule, catalog: Catalog,
                   generated: float, topology: Topology) -> bytes:
    """One node's manifest, as written by `write_manifests`.

    ValueError when *node*, or a source the schedule names, is not a node of *topology*.
    """
    objs = np.asarray(plan.holdings[node], dtype=np.int64)
    tier = np.asarray(plan.tiers[node], dtype=np.int64)
    added = np.asarray(plan.added.get(node, ()), dtype=np.int64)
    is_added = np.zeros(len(objs), dtype=bool)
    if len(added):
        j = np.minimum(np.searchsorted(objs, added), max(len(objs) - 1, 0))
        if len(objs) == 0 or not np.array_equal(objs[j], added):
            raise ValueError(f"plan of {plan.site}: {node}: an added object is not held")
        is_added[j] = True
    # Source (index into `names`, 0 = the node itself) and wave of every object.
    names, src, wave = _sources(node, objs[is_added], schedule)
    source = np.zeros(len(objs), dtype=np.int64)
    waves = np.zeros(len(objs), dtype=np.int64)
    source[is_added] = src
    waves[is_added] = wave
    keep = source >= 0  # deferred additions are left out
    objs, tier, source, waves = objs[keep], tier[keep], source[keep], waves[keep]

    urls, upstream = _addresses(node, topology)
    named = [names[i] for i in
             np.flatnonzero(np.bincount(source, minlength=len(names))).tolist()]
    sources = {}
    for name in [*named, *upstream]:
        if name not in urls:
            raise ValueError(f"plan of {plan.site}: {node}: source {name!r} is not a node "
                             "of the topology")
        sources[name] = urls[name]

    head = (f'{{"appliance":{_json(node)},"delete":{_json(list(plan.deleted.get(node, ())))},'
            f'"generated":{_json(_number(generated))},"objects":[\n').encode()
    body = _object_lines(catalog, objs, tier, source, waves, names)
    tail = f'],"sources":{_json(sources)},"upstream":{_json(upstream)}}}\n'.encode()
    return head + body + tail


def _addresses(node: str, topology: Topology) -> tuple[dict[str, str], list[str]]:
    """(the URL of every node of *topology*, *node*'s upstream: its site's backbone node
    if the site has one, then the origin; a backbone node's is the origin alone)."""
    urls = {topology.origin: topology.origin_url}
    urls.update((b.name, b.url) for b in topology.backbone)
    upstream = [topology.origin] if node in urls and node != topology.origin else None
    for site in topology.sites:
        for a in site.appliances:
            urls[a.name] = a.url
            if a.name == node:
                upstream = [topology.origin] if site.upstream is None else \
                    [site.upstream, topology.origin]
    if upstream is None:
        raise ValueError(f"{node}: not an appliance or a backbone node of the topology")
    return urls, upstream


def _sources(node: str, objs: np.ndarray, schedule) -> tuple[list[str], np.ndarray,
                                                             np.ndarray]:
    """(names, source index into names or -1 when deferred, wave) for added *objs*;
    names[0] is *node*."""
    names = [node]
    src = np.full(len(objs), -1, dtype=np.int64)
    wave = np.zeros(len(objs), dtype=np.int64)
    if not len(objs):
        return names, src, wave
    table = getattr(getattr(schedule, "transfers", None), "to", None)
    if table is not None:
        t = table(node)
        t_obj = np.asarray(t.obj, dtype=np.int64)
        if len(t_obj):
            j = np.minimum(np.searchsorted(t_obj, objs), len(t_obj) - 1)
            hit = t_obj[j] == objs
            used, code = _dense_codes(np.asarray(t.source, dtype=np.int64)[j[hit]])
            names += [t.names[k] for k in used.tolist()]
            src[hit] = code + 1
            wave[hit] = np.asarray(t.wave, dtype=np.int64)[j[hit]]
        return names, src, wave
    index = {node: 0}
    for i, o in enumerate(objs.tolist()):
        got = schedule.source_of(node, o)
        if got is None:
            continue
        name, w = got
        if name not in index:
            index[name] = len(names)
            names.append(name)
        src[i] = index[name]
        wave[i] = int(w)
    return names, src, wave


def _object_lines(catalog: Catalog, objs: np.ndarray, tier: np.ndarray, source: np.ndarray,
                  waves: np.ndarray, names: list[str]) -> bytes:
    """The object lines, each ``{...},\\n`` but the last ``{...}\\n``.

    Each line is three fixed-width byte fields, NUL-padded: the object's own part up to
    ``"source":`` (cached per catalog), the part for its (source, tier, wave), and its
    ``xxh3`` part. Gluing the fields as byte rows and dropping the NULs is a few memory
    copies instead of a Python string operation per object (~10^5 per appliance).
    """
    if not len(objs):
        return b""
    heads, tails = _catalog_fields(catalog)
    w_count = int(waves.max()) + 1
    keys, code = _dense_codes((source * len(TIERS) + tier) * w_count + waves)
    mids = []
    for k in keys.tolist():
        s, rest = divmod(k, len(TIERS) * w_count)
        t, w = divmod(rest, w_count)
        mids.append(f'{_json(names[s])},"tier":"{TIERS[t]}","wave":{w},"xxh3":'.encode())
    if loops.compiled is not None:
        (h_buf, h_at), (t_buf, t_at) = _catalog_buffers(catalog)
        m_buf, m_at = _joined(mids)
        return bytes(loops.compiled.object_lines(h_buf, h_at, m_buf, m_at, t_buf, t_at,
                                           np.ascontiguousarray(objs, dtype=np.int64),
                                           np.ascontiguousarray(code, dtype=np.int64)))
    mid = np.array(mids, dtype=bytes)
    parts = [heads[objs], mid[code], tails[objs]]
    n = len(objs)
    width = sum(p.dtype.itemsize for p in parts)
    rows = np.empty((n, width), dtype=np.uint8)
    at = 0
    for p in parts:
        w = p.dtype.itemsize
        rows[:, at:at + w] = p.view(np.uint8).reshape(n, w)
        at += w
    data = rows.tobytes().translate(None, b"\x00")
    return data[:-2] + b"\n"  # the last line has no comma


def _dense_codes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values ascending, index of each x among them) for small non-negative
    integers: np.unique without its sort."""
    present = np.bincount(x) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[x]


_CACHE: dict = {}


def _catalog_fields(catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """Per object: b'{"id":ID,"size":N,"source":' and b'XXH3},\\n' as fixed-width bytes."""
    if _CACHE.get("ids") is catalog.ids:
        return _CACHE["fields"]
    ids = catalog.ids.tolist()
    digests = [_json(x) if isinstance(x, str) else "null" for x in catalog.xxh3.tolist()]
    if _PLAIN.search("".join(ids)) is None:
        quoted = np.strings.add(np.strings.add(b'"', np.array(ids, dtype=bytes)), b'"')
    else:
        quoted = np.array([_json(i).encode() for i in ids], dtype=bytes)
    sizes = np.asarray(catalog.size, dtype=np.int64).astype(bytes)
    heads = np.strings.add(np.strings.add(np.strings.add(b'{"id":', quoted), b',"size":'),
                           np.strings.add(sizes, b',"source":'))
    tails = np.strings.add(np.array(digests, dtype=bytes), b"},\n")
    _CACHE.clear()
    _CACHE.update(ids=catalog.ids, fields=(heads, tails))
    return heads, tails


def _joined(parts: list[bytes]) -> tuple[bytes, np.ndarray]:
    """(the parts end to end, where part j starts: at[j]; at[len] is the end)."""
    at = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=at[1:])
    return b"".join(parts), at


def _catalog_buffers(catalog: Catalog) -> tuple[tuple[bytes, np.ndarray], ...]:
    """`_catalog_fields` as two joined buffers with offsets (the compiled writer's input);
    made once per catalog and process, like the fields."""
    heads, tails = _catalog_fields(catalog)
    if "buffers" not in _CACHE:
        _CACHE["buffers"] = (_joined(heads.tolist()), _joined(tails.tolist()))
    return _CACHE["buffers"]


def _json(v) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=True, sort_keys=True)


def _number(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def _file_name(node: str) -> str:
    if not node or "/" in node or "\0" in node or node.startswith("."):
        raise InputError(f"node name {node!r} cannot be a manifest file name")
    return f"{node}.json"


def write_manifest(folder: str | os.PathLike, node: str, data: bytes) -> Path:
    """Write one manifest as ``<node>.json`` in *folder*, atomically (a dot-file, then
    rename: readers never see half a manifest)."""
    folder = Path(folder)
    path = folder / _file_name(node)
    tmp = folder / f".{node}.json.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
