"""The steering policy on recorded probe sequences (no network): reachability, then loss,
then RTT, preference as the tie-break; hard failures at once, voluntary switches only
after the margin held for N rounds and the hold-down; isp-direct when nothing is up or
the appliance itself is unhealthy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from oca.steering.policy import (
    ISP_DIRECT,
    Probe,
    Settings,
    State,
    decide,
    health,
)

S = Settings(window=10, down_after=3, margin_loss=0.02, margin_rtt=0.2, consecutive=3,
             hold_down=30.0)


def probes(pattern: str, rtt: float = 10.0, t0: float = 0.0) -> list[Probe]:
    """'.' answered (with *rtt*), 'x' lost; one a second."""
    return [Probe(t0 + i, c == ".", rtt if c == "." else None) for i, c in enumerate(pattern)]


def test_health_over_the_window():
    h = health(probes("." * 12, rtt=7.0), S)
    assert (h.up, h.loss, h.rtt_ms, h.rounds) == (True, 0.0, 7.0, 10)
    assert health(probes("....xx"), S).up  # two lost: not yet down
    assert not health(probes("....xxx"), S).up  # three in a row: down
    assert health(probes("xxx."), S).up  # answered again: up
    assert health(probes(".x.x.x.x.x"), S).loss == 0.5
    assert not health([], S).up and not health(probes("x"), S).up
    rtts = [Probe(i, True, float(r)) for i, r in enumerate([5, 1, 9, 3, 7])]
    assert (health(rtts, S).rtt_ms, health(rtts, S).rtt_p95_ms) == (5.0, 9.0)


def healths(**paths: tuple[str, float]) -> dict:
    """mode (underscores for dashes) -> (pattern, rtt) -> Health."""
    return {m.replace("_", "-"): health(probes(p, r), S) for m, (p, r) in paths.items()}


def test_from_isp_direct_to_the_best_path_at_once():
    d = decide(State(), healths(isp_backbone=("..........", 20.0),
                                netflix_backbone=("..........", 10.0)), 100.0, S)
    assert (d.state.mode, d.switched, d.kind) == ("netflix-backbone", True, "hard")
    assert d.line.startswith("steering: switch isp-direct -> netflix-backbone (hard): ")
    assert "netflix-backbone up loss 0% rtt 10.0ms" in d.line


def test_reachability_then_loss_then_rtt_then_preference():
    # Equal health: the preference order (netflix-backbone first by default).
    equal = healths(isp_backbone=("..........", 10.0), netflix_backbone=("..........", 10.0),
                    backbone_oca=("..........", 10.0))
    assert decide(State(), equal, 0.0, S).state.mode == "netflix-backbone"
    # Loss beats RTT.
    lossy = healths(isp_backbone=("..........", 50.0), netflix_backbone=("..x..x..x.", 5.0))
    assert decide(State(), lossy, 0.0, S).state.mode == "isp-backbone"
    # A down path is never chosen, however fast it was.
    down = healths(isp_backbone=("..........", 50.0), netflix_backbone=(".......xxx", 1.0))
    assert decide(State(), down, 0.0, S).state.mode == "isp-backbone"


def test_a_down_current_path_switches_at_once_even_inside_the_hold_down():
    now = 1000.0
    state = State(mode="netflix-backbone", since=now - 1, last_switch=now - 1)
    d = decide(state, healths(netflix_backbone=(".......xxx", 10.0),
                              isp_backbone=("..........", 30.0)), now, S)
    assert (d.state.mode, d.kind, d.state.last_switch) == ("isp-backbone", "hard", now)
    assert "netflix-backbone is down" in d.line


def test_a_voluntary_switch_waits_for_n_rounds_and_the_hold_down():
    better = healths(netflix_backbone=("..........", 30.0), isp_backbone=("..........", 10.0))
    state = State(mode="netflix-backbone", since=0.0, last_switch=0.0)
    kinds = []
    for now in (10.0, 11.0, 12.0, 13.0):  # 3 rounds better, but inside the hold-down
        d = decide(state, better, now, S)
        state = d.state
        kinds.append((d.state.mode, d.kind))
    assert kinds == [("netflix-backbone", "hold")] * 4
    assert "hold-down: 13 of 30 s" in d.line
    d = decide(state, better, 30.0, S)
    assert (d.state.mode, d.kind) == ("isp-backbone", "voluntary")
    assert "for 5 rounds, 30 s since the last switch" in d.line
    # Within the margin (10% faster, margin 20%): no switch, the streak resets.
    close = healths(netflix_backbone=("..........", 10.0), isp_backbone=("..........", 11.0))
    d2 = decide(d.state, close, 100.0, S)
    assert (d2.state.mode, d2.switched, d2.state.streak) == ("isp-backbone", False, 0)


def test_the_streak_must_be_unbroken():
    state = State(mode="netflix-backbone", last_switch=-1000.0)
    better = healths(netflix_backbone=("..........", 30.0), isp_backbone=("..........", 10.0))
    same = healths(netflix_backbone=("..........", 10.0), isp_backbone=("..........", 10.0))
    for now, h in ((1.0, better), (2.0, better), (3.0, same), (4.0, better), (5.0, better)):
        state = decide(state, h, now, S).state
    assert (state.mode, state.streak) == ("netflix-backbone", 2)
    assert decide(state, better, 6.0, S).state.mode == "isp-backbone"


@pytest.mark.parametrize(("appliance_ok", "paths", "kind", "reason"), [
    (False, {"isp_backbone": ("..........", 10.0)}, "appliance", "appliance unhealthy: draining"),
    (True, {"isp_backbone": (".......xxx", 10.0), "netflix_backbone": ("xxx", 1.0)}, "no-path",
     "no upstream path is up"),
])
def test_isp_direct_when_nothing_upstream_or_the_box_is_unhealthy(appliance_ok, paths, kind,
                                                                  reason):
    state = State(mode="isp-backbone", last_switch=999.0)
    d = decide(state, healths(**paths), 1000.0, S, appliance_ok, "draining")
    assert (d.state.mode, d.kind, d.switched) == (ISP_DIRECT, kind, True)
    assert reason in d.line and d.state.reason.endswith(reason.split(": ")[-1])


def test_flapping_gives_at_most_one_voluntary_switch_per_hold_down():
    """isp-backbone's RTT flaps between 5 ms and 80 ms every 8 s (netflix-backbone a
    steady 40 ms) for 5 minutes: each way is better by far in turn, yet voluntary
    switches are 30 s (the hold-down) apart at least."""
    state = State(mode="netflix-backbone", last_switch=-1000.0)
    isp, nfx = [], []
    voluntary = []
    for now in range(300):
        isp.append(Probe(now, True, 5.0 if (now // 8) % 2 == 0 else 80.0))
        nfx.append(Probe(now, True, 40.0))
        d = decide(state, {"isp-backbone": health(isp, S), "netflix-backbone": health(nfx, S)},
                   float(now), S)
        assert d.kind in ("hold", "voluntary")
        if d.kind == "voluntary":
            voluntary.append(now)
        state = d.state
    assert len(voluntary) >= 4
    assert all(b - a >= S.hold_down for a, b in zip(voluntary, voluntary[1:], strict=False))
    assert state.switches == len(voluntary)


def test_a_path_going_up_and_down_fails_over_at_once():
    """The preferred path answers 6 s, then loses 6 s: it is down after 3 lost rounds (a
    hard switch away, at once); with half its probes lost it is not chosen again."""
    state = State()
    nfx, isp = [], []
    kinds = []
    for now in range(120):
        nfx.append(Probe(now, (now // 6) % 2 == 0, 5.0))
        isp.append(Probe(now, True, 5.0))
        d = decide(state, {"netflix-backbone": health(nfx, S), "isp-backbone": health(isp, S)},
                   float(now), S)
        if d.switched:
            kinds.append((now, d.kind, d.state.mode))
        state = d.state
    away = [now for now, kind, mode in kinds if mode == "isp-backbone"]
    assert kinds[0] == (0, "hard", "netflix-backbone")
    assert away and all(k == "hard" for _, k, m in kinds if m == "isp-backbone")
    # Down after the 3rd lost round: at 8 (lost from 6).
    assert away[0] == 8
    assert [m for _, _, m in kinds] == ["netflix-backbone", "isp-backbone"]


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(1.0, 200.0), st.booleans(),
                          st.floats(1.0, 200.0), st.booleans()), min_size=1, max_size=120),
       st.integers(1, 5), st.sampled_from([0.0, 5.0, 30.0]))
def test_no_two_voluntary_switches_inside_a_hold_down(rounds, consecutive, hold_down):
    """Any probe sequence: voluntary switches are hold_down apart, a switch lands on a
    path that is up (or isp-direct when none is), and the mode is isp-direct exactly
    when no path is up."""
    cfg = Settings(consecutive=consecutive, hold_down=hold_down)
    seq = {"isp-backbone": [], "netflix-backbone": []}
    state = State()
    last_voluntary = None
    for i, (ok1, rtt1, ok2, rtt2, appliance_ok) in enumerate(rounds):
        now = float(i)
        seq["isp-backbone"].append(Probe(now, ok1, rtt1 if ok1 else None))
        seq["netflix-backbone"].append(Probe(now, ok2, rtt2 if ok2 else None))
        hs = {m: health(p, cfg) for m, p in seq.items()}
        d = decide(state, hs, now, cfg, appliance_ok, "test")
        if d.kind == "voluntary":
            assert last_voluntary is None or now - last_voluntary >= hold_down
            assert now - state.last_switch >= hold_down
            last_voluntary = now
        any_up = any(h.up for h in hs.values())
        if not appliance_ok or not any_up:
            assert d.state.mode == ISP_DIRECT
        else:
            assert d.state.mode != ISP_DIRECT and hs[d.state.mode].up
        state = d.state


def test_bad_settings():
    for kw in ({"down_after": 4}, {"down_after": 0}, {"preference": ("isp-direct",)},
               {"preference": ("isp-backbone", "isp-backbone")}, {"window": 2}):
        with pytest.raises(ValueError):
            Settings(**kw)
