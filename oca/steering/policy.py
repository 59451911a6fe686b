"""The steering decision: which of the four modes (DESIGN.md) the appliance is in, from
the recorded probe results of its upstream paths. A pure function of its inputs
(``decide``), so every rule is tested on recorded sequences without a network.

Rules, in order:

1. The appliance itself unhealthy (no healthy disk, draining): ``isp-direct`` at once
   (viewers go straight to the origin).
2. No upstream path up: ``isp-direct`` at once.
3. The current mode ``isp-direct`` (and a path is up again), or the current path down (a
   hard failure: its last ``down_after`` probes failed, at most 3 intervals as BFD-style
   detection would): the best path at once, whatever the hold-down.
4. Otherwise a voluntary switch to the best path only when it has beaten the current
   one by the margin for ``consecutive`` rounds in a row and ``hold_down`` seconds have
   passed since the last switch: under flapping, at most one voluntary switch per
   hold-down.

"Best": reachable first, then lower loss, then lower RTT (median), each compared with
its margin; the preference order breaks what the margins call a tie. "Beats by the
margin": loss lower by more than ``margin_loss``, or loss within it and RTT lower by more
than ``margin_rtt`` (a fraction of the current RTT) and by more than ``margin_rtt_ms``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

ISP_DIRECT = "isp-direct"
UPSTREAM_MODES = ("isp-backbone", "netflix-backbone", "backbone-oca")
MODES = (ISP_DIRECT, *UPSTREAM_MODES)


@dataclass(frozen=True)
class Probe:
    """One probe round of one path: when, whether it answered, its RTT."""

    t: float
    ok: bool
    rtt_ms: float | None = None


@dataclass(frozen=True)
class Health:
    """A path's health over the window of its last probe rounds."""

    up: bool
    loss: float  # 0..1 over the window
    rtt_ms: float | None  # median of the answered probes; None: none answered
    rtt_p95_ms: float | None
    rounds: int

    def as_dict(self) -> dict:
        return {"up": self.up, "loss": round(self.loss, 4),
                "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
                "rtt_p95_ms": None if self.rtt_p95_ms is None else round(self.rtt_p95_ms, 3)}


@dataclass(frozen=True)
class Settings:
    window: int = 10  # probe rounds a path's loss and RTT are taken over
    down_after: int = 3  # failed rounds in a row that make a path down (at most 3)
    margin_loss: float = 0.02  # a better loss by more than this is better
    margin_rtt: float = 0.2  # else a better RTT by more than this fraction of the current
    margin_rtt_ms: float = 1.0  # ... and by more than this many milliseconds
    consecutive: int = 3  # rounds in a row a better path must stay better
    hold_down: float = 30.0  # seconds after a switch before a voluntary one
    preference: tuple[str, ...] = ("netflix-backbone", "isp-backbone", "backbone-oca")

    def __post_init__(self):
        if not 1 <= self.down_after <= 3:
            raise ValueError(f"down_after must be 1-3 rounds, not {self.down_after}")
        if self.down_after > self.window:
            raise ValueError("down_after must not exceed the window")
        if sorted(self.preference) != sorted(set(self.preference)) or \
                not set(self.preference) <= set(UPSTREAM_MODES):
            raise ValueError(f"preference: upstream modes, each once, not {self.preference}")


@dataclass(frozen=True)
class State:
    """Where the appliance is: the mode since when and why, the last switch, and the
    path that has been beating the current one (and for how many rounds)."""

    mode: str = ISP_DIRECT
    since: float = 0.0
    reason: str = "starting"
    last_switch: float = float("-inf")
    challenger: str | None = None
    streak: int = 0
    switches: int = 0


@dataclass(frozen=True)
class Decision:
    state: State
    switched: bool
    kind: str  # "hold", "hard", "voluntary", "appliance", "no-path"
    line: str  # the log line: the decision, its reason, the figures behind it


def health(probes: Sequence[Probe], settings: Settings) -> Health:
    """A path's health from its probes (oldest first): the last ``window`` rounds."""
    recent = list(probes)[-settings.window:]
    if not recent:
        return Health(False, 1.0, None, None, 0)
    tail = recent[-settings.down_after:]
    up = not (len(tail) == settings.down_after and not any(p.ok for p in tail))
    if len(recent) < settings.down_after and not any(p.ok for p in recent):
        up = False
    rtts = sorted(p.rtt_ms for p in recent if p.ok and p.rtt_ms is not None)
    loss = sum(not p.ok for p in recent) / len(recent)
    median = statistics.median(rtts) if rtts else None
    p95 = rtts[min(len(rtts) - 1, int(0.95 * len(rtts)))] if rtts else None
    return Health(up, loss, median, p95, len(recent))


def best_path(usable: Mapping[str, Health], settings: Settings) -> str:
    """The best of the *usable* paths: in preference order, the first that no later one
    beats by the margin (lower loss beyond ``margin_loss``, else lower RTT beyond
    ``margin_rtt``); RTTs within the margin are a tie the preference breaks."""
    order = sorted(usable, key=lambda m: settings.preference.index(m)
                   if m in settings.preference else len(settings.preference))
    best = order[0]
    for mode in order[1:]:
        if beats(usable[mode], usable[best], settings):
            best = mode
    return best


def beats(a: Health, b: Health, settings: Settings) -> bool:
    """Whether path health *a* is better than *b* by the margin."""
    if a.up != b.up:
        return a.up
    if a.loss < b.loss - settings.margin_loss:
        return True
    if a.loss > b.loss + settings.margin_loss:
        return False
    if a.rtt_ms is None or b.rtt_ms is None:
        return a.rtt_ms is not None and b.rtt_ms is None
    return (a.rtt_ms < b.rtt_ms * (1.0 - settings.margin_rtt)
            and b.rtt_ms - a.rtt_ms > settings.margin_rtt_ms)


def _figures(healths: Mapping[str, Health]) -> str:
    parts = []
    for mode, h in healths.items():
        rtt = "-" if h.rtt_ms is None else f"{h.rtt_ms:.1f}ms"
        parts.append(f"{mode} {'up' if h.up else 'DOWN'} loss {h.loss:.0%} rtt {rtt}")
    return "; ".join(parts)


def decide(state: State, healths: Mapping[str, Health], now: float, settings: Settings,
           appliance_ok: bool = True, appliance_reason: str = "") -> Decision:
    """The next state after one probe round: *healths* maps each configured upstream
    mode to its path's health; *appliance_ok* is the box's own health."""
    figures = _figures(healths)

    def go(mode: str, kind: str, reason: str) -> Decision:
        switched = mode != state.mode
        new = replace(state, challenger=None, streak=0)
        if switched:
            new = replace(new, mode=mode, since=now, reason=reason, last_switch=now,
                          switches=state.switches + 1)
        verb = f"switch {state.mode} -> {mode}" if switched else f"stay {mode}"
        return Decision(new, switched, kind, f"steering: {verb} ({kind}): {reason} [{figures}]")

    if not appliance_ok:
        return go(ISP_DIRECT, "appliance",
                  f"appliance unhealthy: {appliance_reason or 'no reason given'}")
    usable = {m: h for m, h in healths.items() if h.up and m in UPSTREAM_MODES}
    if not usable:
        return go(ISP_DIRECT, "no-path", "no upstream path is up")
    best = best_path(usable, settings)
    current = healths.get(state.mode)
    if state.mode == ISP_DIRECT or current is None or not current.up:
        why = ("a path is up again" if state.mode == ISP_DIRECT
               else f"{state.mode} is down" if current is not None
               else f"{state.mode} is not configured")
        return go(best, "hard", f"{why}; {best} is the best up")
    if best == state.mode or not beats(usable[best], current, settings):
        new = replace(state, challenger=None, streak=0)
        return Decision(new, False, "hold", f"steering: stay {state.mode} (hold): "
                        f"no path better by the margin [{figures}]")
    streak = state.streak + 1 if state.challenger == best else 1
    held = now - state.last_switch
    if streak >= settings.consecutive and held >= settings.hold_down:
        return go(best, "voluntary", f"{best} better than {state.mode} by the margin for "
                  f"{streak} rounds, {held:.0f} s since the last switch")
    new = replace(state, challenger=best, streak=streak)
    wait = (f"{streak}/{settings.consecutive} rounds" if streak < settings.consecutive
            else f"hold-down: {held:.0f} of {settings.hold_down:.0f} s")
    return Decision(new, False, "hold",
                    f"steering: stay {state.mode} (hold): {best} better, {wait} [{figures}]")


def settings_from(config) -> Settings:
    """The policy's settings from ``[steering]`` (oca.config.SteeringConfig)."""
    return Settings(window=config.window, down_after=config.down_after,
                    margin_loss=config.margin_loss, margin_rtt=config.margin_rtt,
                    margin_rtt_ms=config.margin_rtt_ms,
                    consecutive=config.consecutive, hold_down=config.hold_down,
                    preference=config.preference)
