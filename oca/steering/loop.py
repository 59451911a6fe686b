"""The steering loop: probe every path (``probe.Prober``, a thread each), decide every
interval (``policy.decide``), apply a switch to the routes (``routes.Routes``), and keep
the state file that ``oca steer status`` reads.

Files, beside the index (``[store] index``'s folder), each replaced atomically:

* ``steer-state.json``: ``{"mode", "since", "reason", "forced": {"mode", "until"} | null,
  "switches", "updated", "pid", "paths": {MODE: {"up", "loss", "rtt_ms", "rtt_p95_ms"}}}``
  (DESIGN.md's ``oca steer status --json`` keys and ours);
* ``steer-force.json``: an operator's override (``oca steer force MODE --for 10m``):
  ``{"mode", "until"}``; past ``until`` it is ignored, ``oca steer release`` removes it.

A netlink error when a switch is applied (the device vanished) is logged, that path is
held down for ``down_after`` rounds and the loop decides again. SIGTERM: our routes and
rules are removed (a clean stop); a crash or SIGKILL leaves them as they were (the next
start reconciles).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from ..config import Config
from .policy import (
    ISP_DIRECT,
    MODES,
    Health,
    State,
    best_path,
    decide,
    health,
    settings_from,
)
from .probe import Prober
from .routes import RouteError, Routes

log = logging.getLogger("oca.steering")

STATE = "steer-state.json"
FORCE = "steer-force.json"


def state_path(config: Config) -> Path:
    return Path(config.store.index).parent / STATE


def force_path(config: Config) -> Path:
    return Path(config.store.index).parent / FORCE


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_state(config: Config) -> dict | None:
    try:
        return json.loads(state_path(config).read_text())
    except (OSError, ValueError):
        return None


def read_force(config: Config, now: float | None = None) -> dict | None:
    """The operator's override in force at *now*, or None."""
    try:
        force = json.loads(force_path(config).read_text())
    except (OSError, ValueError):
        return None
    now = time.time() if now is None else now
    if force.get("mode") not in MODES or not isinstance(force.get("until"), int | float) \
            or force["until"] <= now:
        return None
    return force


def force(config: Config, mode: str, seconds: float) -> dict:
    data = {"mode": mode, "until": time.time() + seconds}
    force_path(config).parent.mkdir(parents=True, exist_ok=True)
    _write(force_path(config), data)
    return data


def release(config: Config) -> bool:
    try:
        force_path(config).unlink()
        return True
    except FileNotFoundError:
        return False


class SteeringLoop:
    def __init__(self, config: Config, dry_run: bool = False,
                 appliance_ok=lambda: (True, ""), board=None):
        self.config = config
        self.cfg = config.steering
        self.settings = settings_from(self.cfg)
        self.paths = {p.mode: p for p in self.cfg.paths}
        self.routes = Routes(self.cfg.prefixes, self.cfg.table, self.cfg.rule_priority,
                             dry_run=dry_run)
        self.probers = {m: Prober(m, p.probe, p.source, self.cfg.interval)
                        for m, p in self.paths.items()}
        self.appliance_ok = appliance_ok
        self.state = State(mode=ISP_DIRECT, since=time.time(), reason="starting")
        self.held_down: dict[str, int] = {}  # mode -> rounds it is held down (netlink error)
        self.stopping = threading.Event()
        self.board = board  # board.Board: the mode the serving workers see
        self.switches_by: dict[str, int] = {}  # switches by kind (hard, voluntary, ...)
        self._published: tuple[str, str] | None = None

    def _stop(self, *_) -> None:
        self.stopping.set()

    def healths(self) -> dict[str, Health]:
        out = {}
        for mode, prober in self.probers.items():
            h = health(prober.history(), self.settings)
            if self.held_down.get(mode):
                h = Health(False, h.loss, h.rtt_ms, h.rtt_p95_ms, h.rounds)
            out[mode] = h
        return out

    def _count(self, kind: str) -> None:
        self.switches_by[kind] = self.switches_by.get(kind, 0) + 1

    def apply(self, mode: str) -> bool:
        """Routes for *mode*; False (the path held down) on a netlink error."""
        try:
            if mode == ISP_DIRECT:
                self.routes.apply(None, None)
            else:
                path = self.paths[mode]
                self.routes.apply(path.gateway, path.device)
            return True
        except RouteError as e:
            log.warning("steering: applying %s failed: %s; %s held down", mode, e, mode)
            self.held_down[mode] = self.settings.down_after
            return False

    def round(self, now: float) -> None:
        for mode in list(self.held_down):
            self.held_down[mode] -= 1
            if self.held_down[mode] <= 0:
                del self.held_down[mode]
        healths = self.healths()
        forced = read_force(self.config, now)
        if forced is not None:
            if self.state.mode != forced["mode"] or not self.state.reason.startswith("forced"):
                until = time.strftime("%H:%M:%S", time.localtime(forced["until"]))
                reason = f"forced by an operator until {until}"
                log.info("steering: switch %s -> %s (forced): %s", self.state.mode,
                         forced["mode"], reason)
                if self.apply(forced["mode"]):
                    self._count("forced")
                    self.state = State(mode=forced["mode"], since=now, reason=reason,
                                       last_switch=now, switches=self.state.switches + 1)
        else:
            ok, why = self.appliance_ok()
            if self.state.reason.startswith("forced"):
                # Released or expired: the policy's choice at once, as at a start.
                usable = {m: h for m, h in healths.items() if h.up}
                mode = best_path(usable, self.settings) if usable and ok else ISP_DIRECT
                log.info("steering: override over: %s -> %s", self.state.mode, mode)
                if mode == self.state.mode or self.apply(mode):
                    if mode != self.state.mode:
                        self._count("override-over")
                    self.state = State(mode=mode, since=now if mode != self.state.mode
                                       else self.state.since, reason="override over: "
                                       f"{mode} is the policy's choice", last_switch=now,
                                       switches=self.state.switches + (
                                           mode != self.state.mode))
            d = decide(self.state, healths, now, self.settings, ok, why)
            if d.switched:
                log.info("%s", d.line)
                if not self.apply(d.state.mode):
                    healths = self.healths()
                    d = decide(self.state, healths, now, self.settings, ok, why)
                    log.info("%s", d.line)
                    if d.switched and not self.apply(d.state.mode):
                        d = decide(self.state, self.healths(), now, self.settings, False,
                                   "no path could be applied")
                        self.apply(d.state.mode)
                if d.switched:
                    self._count(d.kind)
            self.state = d.state
        if self.board is not None and self._published != (self.state.mode, self.state.reason):
            self.board.write(self.state.mode, self.state.reason)
            self._published = (self.state.mode, self.state.reason)
        _write(state_path(self.config), {
            "mode": self.state.mode, "since": self.state.since, "reason": self.state.reason,
            "forced": forced, "switches": self.state.switches,
            "switches_by": dict(sorted(self.switches_by.items())), "updated": now,
            "pid": os.getpid(),
            "paths": {m: h.as_dict() for m, h in healths.items()}})

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.routes.reconcile()
        for p in self.probers.values():
            p.start()
        log.info("steering: %d paths, every %.2g s, table %d", len(self.paths),
                 self.cfg.interval, self.cfg.table)
        # Routes stay as they were until a decision: a restart after a crash keeps the
        # path the last run chose until the probes have spoken.
        last = read_state(self.config)
        if last is not None and last.get("mode") in MODES:
            self.state = State(mode=last["mode"], since=last.get("since", time.time()),
                               reason="restarted: " + str(last.get("reason", "")),
                               switches=int(last.get("switches", 0)))
        next_at = time.monotonic() + self.cfg.interval
        try:
            while not self.stopping.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.cfg.interval
                self.round(time.time())
        finally:
            for p in self.probers.values():
                p.stop()
            if self.stopping.is_set():
                self.routes.clear()
                log.info("steering: stopped; routes of ours removed")
            self.routes.close()
        return 0


def preflight(config: Config) -> None:
    """Check what the config names against the host's network before any route is
    touched: each path's device exists and its gateway is on one of the device's
    subnets, and our table holds no route that is not ours. UsageError naming the key."""
    import ipaddress

    from pyroute2 import IPRoute

    from ..errors import UsageError
    from .routes import PROTO

    cfg = config.steering
    with IPRoute() as ipr:
        for i, path in enumerate(cfg.paths):
            key = f"steering.path[{i}]"
            idx = ipr.link_lookup(ifname=path.device)
            if not idx:
                raise UsageError(f"{config.path}: {key}.device: no network device "
                                 f"{path.device!r} on this host")
            gw = ipaddress.ip_address(path.gateway)
            nets = [ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a.get('prefixlen')}"
                                           ).network for a in ipr.get_addr(index=idx[0])]
            if not any(gw in n for n in nets):
                raise UsageError(f"{config.path}: {key}.gateway: {path.gateway} is on none of "
                                 f"{path.device}'s subnets ({', '.join(map(str, nets)) or 'none'})")
        for family in (2, 10):
            for r in ipr.get_routes(family=family, table=cfg.table):
                if r.get("proto") != PROTO and r.get("type") == 1:
                    raise UsageError(f"{config.path}: steering.table: table {cfg.table} holds "
                                     "routes that are not ours (another program's table?)")


def run_role(config: Config, board, control) -> int:
    """The ``steering`` role of ``oca serve``: the loop, with the appliance's own health:
    draining (the supervisor's drain state) or no disk answering its probe (checked every
    5 s with the disk probe timeout) is unhealthy."""
    from ..storage import Store

    store = Store(config)
    last = {"at": float("-inf"), "ok": (True, "")}

    def appliance_ok() -> tuple[bool, str]:
        state = control.read()
        if state is not None and state[1]:
            return False, "draining"
        now = time.monotonic()
        if now - last["at"] >= 5.0:
            healths = store.probe_all()
            last["at"] = now
            last["ok"] = ((True, "") if any(h.servable for h in healths.values())
                          else (False, "no healthy disk"))
        return last["ok"]
    try:
        return SteeringLoop(config, appliance_ok=appliance_ok, board=board).run()
    finally:
        store.close()
