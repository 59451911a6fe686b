"""The drain state in shared memory (``Control``) and how POST /drain and /undrain wait
for the workers to confirm it (``Drain.confirmed``), without a server."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

from oca.serve import control as control_module
from oca.serve.control import Control, Drain


def test_control_generations_and_confirmations():
    control = Control(3)
    first, draining, deadline = control.read()
    assert (draining, deadline) == (False, 0.0)
    assert [control.applied(slot) for slot in range(3)] == [0, 0, 0]
    generation = control.write(True, 1234.5)
    assert generation == first + 1
    assert control.read() == (generation, True, 1234.5)
    assert control.write(False, 0.0) == generation + 1
    control.confirm(2, generation)
    assert [control.applied(slot) for slot in range(3)] == [0, 0, generation]


def test_control_seen_by_a_forked_process():
    control = Control(2)
    generation = control.write(True, 99.0)
    pid = os.fork()
    if pid == 0:
        state = control.read()
        control.confirm(1, state[0] if state == (generation, True, 99.0) else 0)
        os._exit(0)
    os.waitpid(pid, 0)
    assert (control.applied(0), control.applied(1)) == (0, generation)


def test_control_read_refuses_a_torn_state(monkeypatch):
    control = Control(1)
    control.write(True, 10.0)
    sleeps = []
    monkeypatch.setattr(control_module.time, "sleep", sleeps.append)
    seq = Control._WORD.unpack_from(control.mem, 0)[0]
    Control._WORD.pack_into(control.mem, 0, seq + 1)  # a write in progress, never finished
    assert control.read() is None
    Control._WORD.pack_into(control.mem, 0, seq)
    Control._STATE.pack_into(control.mem, 16, 0.0, 10.0)  # the state without its crc32
    assert control.read() is None
    assert sleeps  # it waited for the writer before giving up
    Control._STATE.pack_into(control.mem, 16, 1.0, 10.0)
    assert control.read() == (seq // 2, True, 10.0)


class _Books:
    """What Drain reads of the supervisor: the live workers (pid -> slot)."""

    def __init__(self, workers: dict[int, int]):
        self.workers = dict(workers)
        self.stopping = False
        self.signalled: list[int] = []

    def pids(self, role: str) -> dict[int, int]:
        assert role == "worker"
        return dict(self.workers)

    def signal(self, role: str, sig: int) -> None:
        self.signalled.append(sig)


def _supervisor(workers: dict[int, int]) -> SimpleNamespace:
    books = _Books(workers)
    drain = Drain(Control(max(workers.values()) + 1), books)
    return SimpleNamespace(control=drain.control, confirmed=drain.confirmed,
                           workers=books.workers, drain=drain, books=books)


def test_drain_publishes_and_signals_the_workers():
    import signal
    sup = _supervisor({101: 0})
    generation = sup.drain.drain(30)
    assert sup.drain.draining and sup.books.signalled == [signal.SIGUSR1]
    assert sup.control.read()[:2] == (generation, True)
    assert sup.drain.undrain() == generation + 1
    assert not sup.drain.draining and sup.control.read()[1] is False


def test_confirmed_waits_for_every_worker():
    sup = _supervisor({101: 0, 102: 1})
    generation = sup.control.write(True, 0.0)

    async def confirm_later():
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, sup.control.confirm, 0, generation)
        loop.call_later(0.10, sup.control.confirm, 1, generation + 1)  # a later one counts
        t0 = time.monotonic()
        pending = await sup.confirmed(generation, timeout=5)
        return pending, time.monotonic() - t0

    pending, waited = asyncio.run(confirm_later())
    assert pending == {}
    assert 0.09 <= waited < 2


def test_confirmed_names_the_workers_that_do_not_confirm():
    sup = _supervisor({101: 0, 102: 1, 103: 2})
    generation = sup.control.write(False, 0.0)
    sup.control.confirm(1, generation)
    sup.control.confirm(2, generation - 1)  # confirmed the previous state only
    t0 = time.monotonic()
    assert asyncio.run(sup.confirmed(generation, timeout=0.1)) == {101: 0, 103: 2}
    assert time.monotonic() - t0 >= 0.1


def test_confirmed_forgets_a_worker_that_died():
    sup = _supervisor({101: 0, 102: 1})
    generation = sup.control.write(True, 0.0)
    sup.control.confirm(1, generation)

    async def die():
        asyncio.get_running_loop().call_later(0.02, sup.workers.pop, 101)  # reaped
        return await sup.confirmed(generation, timeout=5)

    t0 = time.monotonic()
    assert asyncio.run(die()) == {}
    assert time.monotonic() - t0 < 2


def test_confirmed_waits_for_a_replacement_worker_to_start():
    sup = _supervisor({101: 0, 102: 1})
    generation = sup.control.write(True, 0.0)
    sup.control.confirm(0, generation)
    sup.control.confirm(1, generation)

    def replace():  # what reap() and spawn() do to the books
        del sup.workers[101]
        sup.control.confirm(0, 0)
        sup.workers[201] = 0

    replace()
    assert asyncio.run(sup.confirmed(generation, timeout=0.05)) == {201: 0}

    async def start():
        asyncio.get_running_loop().call_later(0.02, sup.control.confirm, 0, generation)
        return await sup.confirmed(generation, timeout=5)

    assert asyncio.run(start()) == {}
