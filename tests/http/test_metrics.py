"""Serving metrics: counted in forked workers, summed and rendered by the supervisor.

Every rendering is checked with prometheus_client's own parser.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oca.http import metrics
from oca.http.metrics import BUCKETS, STATUSES, TIERS, MetricsArea


def in_child(fn: Callable[[], None]) -> int:
    """Run *fn* in a forked child (a worker); return its pid."""
    pid = os.fork()
    if pid == 0:  # never return into pytest
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def wait_ok(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed"


def run_child(fn: Callable[[], None]) -> None:
    wait_ok(in_child(fn))


def parse(text: str) -> dict[str, tuple[str, dict]]:
    """family name -> (type, {(sample name, sorted label items): value})."""
    out = {}
    for fam in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
        assert len(samples) == len(fam.samples), f"duplicate samples in {fam.name}"
        out[fam.name] = (fam.type, samples)
    return out


def by_label(parsed, family: str, label: str) -> dict[str, float]:
    _, samples = parsed[family]
    return {dict(labels)[label]: v for (_, labels), v in samples.items()}


def histogram(parsed) -> tuple[dict[str, float], float, float]:
    kind, samples = parsed["oca_response_seconds"]
    assert kind == "histogram"
    buckets = {dict(labels)["le"]: v for (name, labels), v in samples.items()
               if name == "oca_response_seconds_bucket"}
    return (buckets, samples[("oca_response_seconds_sum", ())],
            samples[("oca_response_seconds_count", ())])


@pytest.fixture
def area():
    a = MetricsArea(slots=3)
    yield a
    a.close()


@pytest.mark.parametrize(("status", "tier", "fastpath", "seconds"), [
    (200, "ssd", True, 0.0004), (200, "hdd", False, 0.0005), (206, None, True, 0.003),
    (599, "tape", False, 42.0), (404, None, True, 0.0)])
def test_slots_name_where_record_counts(area: MetricsArea, status, tier, fastpath, seconds):
    # The compiled connection loop counts in C at these indexes instead of calling record().
    by_record, by_slots = area.worker(0), area.worker(1)
    by_record.record(status, tier, 1234, seconds, fastpath)
    c = by_slots.counts
    status_slot, tier_slot, send_slot = by_slots.slots(status, tier, fastpath)
    c[status_slot] += 1
    c[tier_slot] += 1234
    c[send_slot] += 1
    c[by_slots.BUCKET0 + bisect.bisect_left(by_slots.BUCKETS, seconds)] += 1
    c[by_slots.SECONDS] += seconds
    assert by_slots.counts == by_record.counts


def test_worker_counts_reach_the_supervisor(area: MetricsArea):
    def worker():
        m = area.worker(1)
        m.record(200, "ssd", 1000, 0.0004, True)
        m.record(206, "ssd", 500, 0.001, True)  # on a bound: le is "less or equal"
        m.record(206, "hdd", 700, 0.003, False)
        m.record(404, None, 0, 0.00002, True)
        m.record(599, "flash", 1, 42.0, False)  # unlisted status, beyond the last bucket
        m.record(302, "tape", 3, 0.2, True)  # unknown tier counts as none
        m.active_connections = 1
        m.publish()

    run_child(worker)
    text = area.render()
    parsed = parse(text)

    assert parsed["oca_requests"][0] == "counter"
    requests = by_label(parsed, "oca_requests", "status")
    assert set(requests) == {str(s) for s in STATUSES} | {"other"}
    assert {k: v for k, v in requests.items() if v} == {"200": 1, "206": 2, "404": 1,
                                                        "302": 1, "other": 1}
    assert by_label(parsed, "oca_body_bytes", "tier") == {"ssd": 1500, "flash": 1, "hdd": 700,
                                                          "none": 3}
    assert set(by_label(parsed, "oca_body_bytes", "tier")) == set(TIERS) | {"none"}
    assert by_label(parsed, "oca_sends", "path") == {"fastpath": 4, "fallback": 2}
    assert parsed["oca_active_connections"] == ("gauge", {("oca_active_connections", ()): 1})

    buckets, total, count = histogram(parsed)
    assert count == 6
    assert total == pytest.approx(0.0004 + 0.001 + 0.003 + 0.00002 + 42.0 + 0.2)
    assert list(buckets) == [metrics._format_value(b) for b in BUCKETS] + ["+Inf"]
    assert buckets["0.0005"] == 2  # 0.0004, 0.00002
    assert buckets["0.001"] == 3
    assert buckets["0.005"] == 4
    assert buckets["0.25"] == 5
    assert buckets["10"] == 5 and buckets["+Inf"] == 6
    values = list(buckets.values())
    assert values == sorted(values)  # cumulative


def test_text_format_details(area: MetricsArea):
    text = area.render()
    assert text.endswith("\n") and "\n\n" not in text
    assert "# TYPE oca_requests_total counter\n" in text
    assert '# TYPE oca_response_seconds histogram\noca_response_seconds_bucket{le="0.0005"} 0\n' \
        in text
    assert 'oca_response_seconds_bucket{le="+Inf"} 0\n' in text
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or \
            line.startswith("oca_"), line


def test_slots_and_accumulator_are_summed(area: MetricsArea):
    for index in range(area.slots):
        def worker(index=index):
            m = area.worker(index)
            for _ in range(index + 1):
                m.record(200, "ssd", 10, 0.01, True)
            m.active_connections = 1
            m.publish()
        run_child(worker)
    parsed = parse(area.render())
    assert by_label(parsed, "oca_requests", "status")["200"] == 1 + 2 + 3
    assert by_label(parsed, "oca_body_bytes", "tier")["ssd"] == 60
    assert parsed["oca_active_connections"][1][("oca_active_connections", ())] == 3
    assert histogram(parsed)[2] == 6


def test_retire_keeps_counters_monotonic(area: MetricsArea):
    def first_life():
        m = area.worker(0)
        for _ in range(3):
            m.record(206, "hdd", 100, 0.02, True)
        m.active_connections = 1
        m.publish()

    run_child(first_life)
    before = parse(area.render())
    area.retire(0)  # the supervisor reaped worker 0
    after = parse(area.render())
    assert by_label(after, "oca_requests", "status") == by_label(before, "oca_requests",
                                                                 "status")
    assert histogram(after) == histogram(before)
    assert after["oca_active_connections"][1][("oca_active_connections", ())] == 0

    def second_life():
        m = area.worker(0)  # the replacement starts from zero in the same slot
        m.record(206, "hdd", 50, 0.5, False)
        m.publish()

    run_child(second_life)
    parsed = parse(area.render())
    assert by_label(parsed, "oca_requests", "status")["206"] == 4
    assert by_label(parsed, "oca_body_bytes", "tier")["hdd"] == 350
    assert by_label(parsed, "oca_sends", "path") == {"fastpath": 3, "fallback": 1}
    _, total, count = histogram(parsed)
    assert count == 4 and total == pytest.approx(3 * 0.02 + 0.5)

    area.retire(0)
    area.retire(0)  # retiring an empty slot adds nothing
    assert histogram(parse(area.render()))[2] == 4


def test_gauges_from_the_supervisor(area: MetricsArea):
    text = area.render({
        "oca_workers": 4,
        "oca_draining": False,
        "oca_disk_up{disk=/data/ssd0}": 1,
        'oca_disk_up{disk=/data/we"ird\\,{x=y}\nname}': 0,
        "oca_disk_free_bytes{disk=/data/ssd0}": 2.5e12,
        "oca_temperature": math.nan,
    }, gauge_help={"oca_disk_free_bytes": "Free bytes on the disk."})
    parsed = parse(text)
    assert parsed["oca_workers"] == ("gauge", {("oca_workers", ()): 4})
    assert parsed["oca_draining"] == ("gauge", {("oca_draining", ()): 0})
    assert by_label(parsed, "oca_disk_up", "disk") == {
        "/data/ssd0": 1, '/data/we"ird\\,{x=y}\nname': 0}
    assert by_label(parsed, "oca_disk_free_bytes", "disk") == {"/data/ssd0": 2.5e12}
    assert math.isnan(parsed["oca_temperature"][1][("oca_temperature", ())])
    assert "# HELP oca_disk_free_bytes Free bytes on the disk.\n" in text
    assert text.count("# TYPE oca_disk_up gauge\n") == 1
    for bad in ("oca disk", "oca_disk_up{disk}", "0ca", "oca_x{__name__=y}", "__x",
                "oca_active_connections", "oca_requests_total{status=200}"):
        with pytest.raises(ValueError, match="bad gauge key"):
            area.render({bad: 1})


def test_worker_index_is_checked(area: MetricsArea):
    for index in (-1, area.slots):
        with pytest.raises(IndexError):
            area.worker(index)
        with pytest.raises(IndexError):
            area.retire(index)
    with pytest.raises(ValueError):
        MetricsArea(0)


def test_slot_of_a_worker_killed_mid_publish(area: MetricsArea, monkeypatch):
    def worker():
        m = area.worker(2)
        m.record(200, "ssd", 5, 0.1, True)
        m.publish()
        # Killed between the two seq stores: the slot stays odd, the body half written.
        metrics._WORD.pack_into(area._area, m._offset, m._seq + 1)
        area._area[m._offset + 16:m._offset + 24] = b"\xff" * 8

    area.render()
    run_child(worker)
    monkeypatch.setattr(metrics, "_READ_TRIES", 20)
    t0 = time.monotonic()
    parsed = parse(area.render())
    assert time.monotonic() - t0 < 1
    # Never read in a consistent state: the slot counts as its last consistent copy (empty).
    assert histogram(parsed)[2] == 0
    area.retire(2)
    m = area.worker(2)  # a replacement can use the slot again
    m.record(200, "ssd", 5, 0.1, True)
    m.publish()
    assert histogram(parse(area.render()))[2] == 1


def test_checksum_rejects_a_body_torn_behind_an_even_seq(area: MetricsArea, monkeypatch):
    m = area.worker(0)
    m.record(200, "ssd", 5, 0.1, True)
    m.publish()
    assert histogram(parse(area.render()))[2] == 1
    m.record(200, "ssd", 5, 0.1, True)
    m.publish()
    # As if a weakly ordered CPU let the reader see the new seq before this body word.
    area._area[m._offset + 16:m._offset + 24] = struct.pack("@Q", 12345)
    monkeypatch.setattr(metrics, "_READ_TRIES", 3)
    assert histogram(parse(area.render()))[2] == 1  # the last consistent copy


def test_reader_never_sees_a_torn_slot(area: MetricsArea):
    """A worker publishing as fast as it can while the supervisor renders."""
    seconds = 1.5

    def worker():
        m = area.worker(0)
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            # Every field changes on each publish, so a torn copy shows as a mismatch.
            i += 1
            m.record(STATUSES[i % len(STATUSES)], TIERS[i % 3], 1000, 0.004 * (i % 7),
                     i % 2 == 0)
            if i % 5 == 0:
                m.record(777, None, 1000, 20.0, True)
            m.active_connections = i % 100
            m.publish()

    pid = in_child(worker)
    renders, seen = 0, set()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the worker failed"
            break
        t = area.totals()
        count = t.count
        assert sum(t.requests.values()) == count
        assert sum(t.sends.values()) == count
        assert sum(t.body_bytes.values()) == 1000 * count
        assert t.buckets[-1] == t.requests["other"]  # the 20 s records, and only them
        assert 0 <= t.active_connections < 100
        parsed = parse(area.render())
        assert histogram(parsed)[2] == sum(by_label(parsed, "oca_requests", "status").values())
        renders += 1
        seen.add(count)
    final = area.totals()
    assert renders > 50 and len(seen) > 25, (renders, len(seen))
    assert final.count == sum(final.requests.values()) > 0
