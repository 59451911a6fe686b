"""The one typed configuration: ``oca.toml`` loaded with tomllib.

Every key is documented in docs/config.md. An unknown key, a value of the wrong
type or a bad value raises ConfigError naming the file and the key, e.g.
``oca.toml: store.disk[1].tier: unknown tier 'nvme' (expected one of ssd, flash, hdd)``.
Relative paths are taken relative to the directory of the config file.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .units import format_size, parse_duration, parse_rate, parse_size

TIERS = ("ssd", "flash", "hdd")
"""Tier names, fastest first."""

DEFAULT_CONFIG = "oca.toml"
CONFIG_ENV = "OCA_CONFIG"

_LISTEN_RE = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]*)):(?P<port>\d{1,5})\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def default_name() -> str:
    """The host name, or its first label (cut to 63 characters) when it is not a valid name."""
    host = socket.gethostname()
    if _NAME_RE.match(host):
        return host
    label = re.sub(r"[^A-Za-z0-9._-]", "-", host.split(".")[0])[:63].lstrip("._-")
    return label or "oca"


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: listeners, workers, access log, appliance name."""

    listen: tuple[str, int] = ("127.0.0.1", 8080)
    admin_listen: tuple[str, int] = ("127.0.0.1", 8081)
    workers: int = 0  # 0: one per CPU
    access_log: Path | None = None
    name: str = ""
    origin_url: str | None = None
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    shutdown_timeout: float = 30.0
    max_connections: int = 10000
    max_url_size: int = 8 << 10
    max_header_size: int = 16 << 10
    max_ranges: int = 16
    sendfile_max_chunk: int = 2 << 20
    open_file_cache: int = 4096

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: signed URLs. Off (every object public) when ``key_file`` is unset."""

    key_file: Path | None = None
    fill_key_file: Path | None = None
    """Signs fill requests (scope ``fill``): the same key on every box of a fleet."""


@dataclass(frozen=True)
class FillConfig:
    """``[fill]``: where tonight's manifest comes from and how the agent may fill."""

    manifest_url: str | None = None  # a file path or an http(s) URL
    window: tuple[int, int] | None = None  # minutes after local midnight: start, end
    max_rate: float = 0.0  # bits per second for the whole appliance; 0: no limit
    parallel: int = 4  # transfers at once
    poll_interval: float = 300.0  # seconds between looks at the manifest in the window


@dataclass(frozen=True)
class SteeringPath:
    """One ``[[steering.path]]``: the next hop of one upstream mode and what probes it."""

    mode: str  # isp-backbone | netflix-backbone | backbone-oca
    gateway: str  # an IP address
    device: str
    probe: tuple[str, ...]  # http URLs of an address inside the origin prefixes
    source: str | None = None  # pins the probes to this path (a source-address rule)


@dataclass(frozen=True)
class SteeringConfig:
    """``[steering]``: off (no role) when there is no such table."""

    enabled: bool = False
    interval: float = 1.0
    window: int = 10
    down_after: int = 3
    margin_loss: float = 0.02
    margin_rtt: float = 0.2
    margin_rtt_ms: float = 1.0
    consecutive: int = 3
    hold_down: float = 30.0
    preference: tuple[str, ...] = ("netflix-backbone", "isp-backbone", "backbone-oca")
    prefixes: tuple[str, ...] = ()
    table: int = 100
    rule_priority: int = 1000
    origin_url: str | None = None
    paths: tuple[SteeringPath, ...] = ()


@dataclass(frozen=True)
class DiskConfig:
    """One ``[[store.disk]]``: a mounted filesystem that belongs to one tier."""

    path: Path
    tier: str
    capacity: int | None = None  # None: the filesystem's size


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: the SQLite index and the disks."""

    index: Path
    disks: tuple[DiskConfig, ...]
    disk_probe_timeout: float = 2.0
    """Seconds a disk probe may take before the disk is reported failed (hung)."""


@dataclass(frozen=True)
class Config:
    """The whole ``oca.toml``."""

    path: Path
    server: ServerConfig
    store: StoreConfig
    auth: AuthConfig = AuthConfig()
    fill: FillConfig = FillConfig()
    steering: SteeringConfig = SteeringConfig()


class _Section:
    """Reads the keys of one TOML table, remembering which were used."""

    def __init__(self, file: Path, name: str, table: Any):
        self.file = file
        self.name = name
        if not isinstance(table, dict):
            self.fail(f"must be a table, not {type(table).__name__}", key=None)
        self.table = table
        self.used: set[str] = set()

    def fail(self, message: str, key: str | None) -> None:
        where = f"{self.name}.{key}" if key and self.name else (key or self.name or "(top level)")
        raise ConfigError(f"{self.file}: {where}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required=False):
        self.used.add(key)
        if key not in self.table:
            if required:
                self.fail("missing (required)", key)
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds).replace("str", "string")
            self.fail(f"must be {names}, not {type(value).__name__} {value!r}", key)
        return value

    def finish(self, known_sections: tuple[str, ...] = ()) -> None:
        for key in self.table:
            if key not in self.used and key not in known_sections:
                self.fail("unknown key", key)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); ValueError when malformed."""
    m = _LISTEN_RE.match(text)
    if not m:
        raise ValueError(f"expected host:port, not {text!r}")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1-65535")
    host = m.group("v6") or m.group("host") or "0.0.0.0"
    return host, port


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _server(file: Path, raw: Any) -> ServerConfig:
    s = _Section(file, "server", raw)
    base = file.parent
    kw: dict[str, Any] = {}
    for key in ("listen", "admin_listen"):
        text = s.get(key, str)
        if text is not None:
            try:
                kw[key] = parse_listen(text)
            except ValueError as e:
                s.fail(str(e), key)
    workers = s.get("workers", int)
    if workers is not None:
        if not 1 <= workers <= 1024:
            s.fail(f"must be between 1 and 1024, not {workers}", "workers")
        kw["workers"] = workers
    log = s.get("access_log", str)
    if log is not None:
        kw["access_log"] = _resolve(base, log)
    name = s.get("name", str, default=None)
    if name is None:
        name = default_name()
    elif not _NAME_RE.match(name):
        s.fail(f"appliance name {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,62}}", "name")
    kw["name"] = name
    origin = s.get("origin_url", str)
    if origin is not None:
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[!-~]*)?", origin):
            s.fail(f"must be an http:// or https:// URL, not {origin!r}", "origin_url")
        kw["origin_url"] = origin.rstrip("/")
    for key, low, high in (("header_timeout", 0.1, 3600), ("keepalive_timeout", 0, 3600),
                           ("send_timeout", 0.1, 3600), ("shutdown_timeout", 0, 3600)):
        value = s.get(key, (str, int, float))
        if value is not None:
            try:
                seconds = parse_duration(value)
            except ValueError as e:
                s.fail(str(e), key)
            if not low <= seconds <= high:
                s.fail(f"must be between {low}s and {high}s, not {value!r}", key)
            kw[key] = seconds
    for key, low, high in (("max_connections", 1, 1_000_000), ("max_ranges", 1, 1000),
                           ("open_file_cache", 0, 1_000_000)):
        value = s.get(key, int)
        if value is not None:
            if not low <= value <= high:
                s.fail(f"must be between {low} and {high}, not {value}", key)
            kw[key] = value
    for key, low, high in (("max_url_size", 256, 1 << 20), ("max_header_size", 1 << 10, 1 << 20),
                           ("sendfile_max_chunk", 64 << 10, 1 << 30)):
        value = s.get(key, (str, int))
        if value is not None:
            try:
                size = parse_size(value)
            except ValueError as e:
                s.fail(str(e), key)
            if not low <= size <= high:
                s.fail(f"must be between {format_size(low)} and {format_size(high)}, "
                       f"not {value!r}", key)
            kw[key] = size
    s.finish()
    return ServerConfig(**kw)


def _auth(file: Path, raw: Any) -> AuthConfig:
    s = _Section(file, "auth", raw)
    paths = {}
    for key in ("key_file", "fill_key_file"):
        value = s.get(key, str)
        if value is not None:
            if not value.strip():
                s.fail("must not be empty", key)
            paths[key] = _resolve(file.parent, value)
    s.finish()
    return AuthConfig(**paths)


_WINDOW_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*\Z")


def parse_window(text: str) -> tuple[int, int]:
    """``"02:00-14:00"`` (local time; the end may be past midnight: ``"22:00-06:00"``) to
    (start, end) in minutes after midnight; ValueError when malformed."""
    m = _WINDOW_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not a window: {text!r} (expected HH:MM-HH:MM, e.g. 02:00-14:00)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"not a window: {text!r} (hours 00-23, minutes 00-59)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % 1440:
        raise ValueError(f"not a window: {text!r} (it starts where it ends)")
    return start, end


def _fill(file: Path, raw: Any) -> FillConfig:
    s = _Section(file, "fill", raw)
    kw: dict[str, Any] = {}
    url = s.get("manifest_url", str)
    if url is not None:
        if not url.strip():
            s.fail("must not be empty", "manifest_url")
        kw["manifest_url"] = (url if url.startswith(("http://", "https://"))
                              else str(_resolve(file.parent, url)))
    for key, kinds, parse in (("window", str, parse_window),
                              ("max_rate", (str, int, float), parse_rate),
                              ("poll_interval", (str, int, float), parse_duration)):
        value = s.get(key, kinds)
        if value is not None:
            try:
                kw[key] = parse(value)
            except ValueError as e:
                s.fail(str(e), key)
    if not 0.1 <= kw.get("poll_interval", 300.0) <= 86400:
        s.fail(f"must be between 0.1s and 1d, not {s.table['poll_interval']!r}",
               "poll_interval")
    parallel = s.get("parallel", int)
    if parallel is not None:
        if not 1 <= parallel <= 256:
            s.fail(f"must be between 1 and 256, not {parallel}", "parallel")
        kw["parallel"] = parallel
    s.finish()
    return FillConfig(**kw)


STEERED_MODES = ("isp-backbone", "netflix-backbone", "backbone-oca")
"""The upstream modes a [[steering.path]] may name (isp-direct needs no path)."""
RESERVED_TABLES = (0, 253, 254, 255)  # unspec, default, main, local


def _steering(file: Path, raw: Any) -> SteeringConfig:
    import ipaddress
    from urllib.parse import urlsplit

    s = _Section(file, "steering", raw)
    kw: dict[str, Any] = {"enabled": True}
    for key in ("interval", "hold_down"):
        value = s.get(key, (str, int, float))
        if value is not None:
            try:
                kw[key] = parse_duration(value)
            except ValueError as e:
                s.fail(str(e), key)
    if not 0.05 <= kw.get("interval", 1.0) <= 60:
        s.fail("must be between 50ms and 60s", "interval")
    for key, low, high in (("window", 2, 1000), ("down_after", 1, 3), ("consecutive", 1, 100),
                           ("table", 1, 2**31 - 1), ("rule_priority", 1, 32765)):
        value = s.get(key, int)
        if value is not None:
            if not low <= value <= high:
                s.fail(f"must be between {low} and {high}, not {value}", key)
            kw[key] = value
    if kw.get("down_after", 3) > kw.get("window", 10):
        s.fail("must not exceed window", "down_after")
    if kw.get("table", 100) in RESERVED_TABLES:
        s.fail(f"{kw['table']} is a table of the kernel's (local, main, default)", "table")
    for key in ("margin_loss", "margin_rtt"):
        value = s.get(key, (int, float))
        if value is not None:
            if not 0 <= value < 1:
                s.fail(f"must be a fraction from 0 to below 1, not {value}", key)
            kw[key] = float(value)
    value = s.get("margin_rtt_ms", (int, float))
    if value is not None:
        if not 0 <= value <= 10000:
            s.fail(f"must be milliseconds from 0 to 10000, not {value}", "margin_rtt_ms")
        kw["margin_rtt_ms"] = float(value)
    pref = s.get("preference", list)
    if pref is not None:
        for mode in pref:
            if mode not in STEERED_MODES:
                s.fail(f"unknown mode {mode!r} (expected {', '.join(STEERED_MODES)})",
                       "preference")
        if len(set(pref)) != len(pref):
            s.fail("names a mode twice", "preference")
        kw["preference"] = tuple(pref)
    prefixes = s.get("prefixes", list, required=True)
    nets = []
    for text in prefixes:
        try:
            nets.append(ipaddress.ip_network(text, strict=True))
        except (TypeError, ValueError) as e:
            s.fail(f"not an address prefix: {text!r} ({e})", "prefixes")
    if not nets:
        s.fail("at least one origin prefix is needed", "prefixes")
    kw["prefixes"] = tuple(str(n) for n in nets)
    origin_url = s.get("origin_url", str)
    if origin_url is not None:
        if not origin_url.startswith(("http://", "https://")):
            s.fail(f"must be an http(s) URL, not {origin_url!r}", "origin_url")
        kw["origin_url"] = origin_url.rstrip("/")
    raw_paths = s.get("path", list, required=True)
    s.finish()
    paths: list[SteeringPath] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw_paths):
        d = _Section(file, f"steering.path[{i}]", entry)
        mode = d.get("mode", str, required=True)
        if mode not in STEERED_MODES:
            d.fail(f"unknown mode {mode!r} (expected one of {', '.join(STEERED_MODES)}; "
                   "isp-direct needs no path)", "mode")
        if mode in seen:
            d.fail(f"a second path for {mode} (also steering.path[{seen[mode]}])", "mode")
        seen[mode] = i
        addrs = {}
        for key in ("gateway", "source"):
            value = d.get(key, str, required=key == "gateway")
            if value is not None:
                try:
                    addrs[key] = str(ipaddress.ip_address(value))
                except ValueError:
                    d.fail(f"not an IP address: {value!r}", key)
        device = d.get("device", str, required=True)
        if not device or len(device) > 15 or "/" in device or " " in device:
            d.fail(f"not a network device name: {device!r}", "device")
        probe = d.get("probe", (str, list), required=True)
        targets = [probe] if isinstance(probe, str) else probe
        if not targets:
            d.fail("at least one probe URL is needed", "probe")
        for url in targets:
            u = urlsplit(url) if isinstance(url, str) else None
            try:
                host = ipaddress.ip_address((u.hostname or "") if u else "")
            except ValueError:
                host = None
            if u is None or u.scheme not in ("http", "https") or host is None:
                d.fail(f"must be an http(s) URL of an IP address, not {url!r}", "probe")
            if not any(host in n for n in nets):
                d.fail(f"{url!r} is outside the origin prefixes "
                       f"({', '.join(kw['prefixes'])})", "probe")
        d.finish()
        paths.append(SteeringPath(mode, addrs["gateway"], device, tuple(targets),
                                  addrs.get("source")))
    if not paths:
        s.fail("at least one [[steering.path]] is needed", "path")
    kw["paths"] = tuple(paths)
    return SteeringConfig(**kw)


def _store(file: Path, raw: Any) -> StoreConfig:
    s = _Section(file, "store", raw)
    base = file.parent
    index = _resolve(base, s.get("index", str, required=True))
    raw_disks = s.get("disk", list, required=True)
    probe_timeout = 2.0
    value = s.get("disk_probe_timeout", (str, int, float))
    if value is not None:
        try:
            probe_timeout = parse_duration(value)
        except ValueError as e:
            s.fail(str(e), "disk_probe_timeout")
        if not 0.1 <= probe_timeout <= 300:
            s.fail(f"must be between 0.1s and 300s, not {value!r}", "disk_probe_timeout")
    s.finish()
    if not raw_disks:
        s.fail("at least one [[store.disk]] is needed", "disk")
    disks: list[DiskConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw_disks):
        d = _Section(file, f"store.disk[{i}]", entry)
        raw_path = d.get("path", str, required=True)
        if not raw_path.strip():
            d.fail("must not be empty", "path")
        path = _resolve(base, raw_path)
        tier = d.get("tier", str, required=True)
        if tier not in TIERS:
            d.fail(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})", "tier")
        cap_raw = d.get("capacity", (str, int))
        capacity = None
        if cap_raw is not None:
            try:
                capacity = parse_size(cap_raw)
            except ValueError as e:
                d.fail(str(e), "capacity")
            if capacity <= 0:
                d.fail("must be greater than zero", "capacity")
        d.finish()
        key = os.path.normpath(os.path.abspath(path))
        if key in seen:
            d.fail(f"duplicate disk {key} (also store.disk[{seen[key]}])", "path")
        for other, j in seen.items():
            if key.startswith(other + os.sep) or other.startswith(key + os.sep):
                d.fail(f"disk {key} nests with store.disk[{j}] {other}", "path")
        seen[key] = i
        disks.append(DiskConfig(path=Path(key), tier=tier, capacity=capacity))
    idx = os.path.normpath(os.path.abspath(index))
    for d_cfg in disks:
        if idx.startswith(str(d_cfg.path) + os.sep):
            s.fail(f"index {idx} must not live on a data disk ({d_cfg.path})", "index")
    return StoreConfig(index=Path(idx), disks=tuple(disks), disk_probe_timeout=probe_timeout)


def load_config(path: str | os.PathLike) -> Config:
    """Load and validate *path*; raise ConfigError naming the file and key on any problem."""
    file = Path(path)
    try:
        with open(file, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot read config: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: not valid TOML: {e}") from None
    file = file.absolute()
    top = _Section(file, "", raw)
    top.used.update({"server", "store", "auth", "fill", "steering"})
    top.finish()
    if "store" not in raw:
        raise ConfigError(f"{file}: store: missing (required) [store] section")
    return Config(
        path=file,
        server=_server(file, raw.get("server", {})),
        store=_store(file, raw["store"]),
        auth=_auth(file, raw.get("auth", {})),
        fill=_fill(file, raw.get("fill", {})),
        steering=_steering(file, raw["steering"]) if "steering" in raw else SteeringConfig(),
    )


def find_config(explicit: str | None) -> Path:
    """The config path: ``-c`` if given, else ``./oca.toml``, else ``$OCA_CONFIG``."""
    if explicit:
        return Path(explicit)
    if os.path.exists(DEFAULT_CONFIG):
        return Path(DEFAULT_CONFIG)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    raise ConfigError(
        f"no config: {DEFAULT_CONFIG} not found in {os.getcwd()} and ${CONFIG_ENV} not set "
        "(give one with -c FILE)"
    )
