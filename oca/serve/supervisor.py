"""``oca serve``: the supervisor. It checks what can be checked before forking
(config, store recovery, the key file, the access log, both ports), forks the
workers, restarts any that dies, serves the admin listener (/metrics, /status,
/health, POST /drain, POST /undrain: answered once every worker has applied the
change), forwards SIGHUP, and on SIGTERM stops the workers gracefully and exits 0.

The supervisor binds the viewer port without listening on it: that reserves the
port (a second server fails at once with a clear error) while the workers' own
SO_REUSEPORT sockets take the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import resource
import signal
import socket
import struct
import sys
import time
import zlib
from urllib.parse import parse_qs

import httptools

import _fastpath

from .. import __version__
from ..config import Config
from ..errors import OcaError
from ..http.accesslog import AccessLog
from ..http.auth import load_key
from ..http.metrics import MetricsArea
from ..storage import Store
from ..storage.recovery import recover
from ..units import parse_duration
from .worker import Worker, listen_socket

log = logging.getLogger("oca.serve")

RESTART_WINDOW = 10.0
RESTART_BURST = 5
"""More than this many worker deaths within the window: wait before restarting."""
CONFIRM_TIMEOUT = 5.0
"""How long POST /drain and /undrain wait for every worker to apply the new state."""
CONFIRM_POLL = 0.005


class Control:
    """Drain state in shared memory, written by the supervisor and read by every worker,
    and each worker's confirmation that it applied it.

    Layout (native byte order, every field 8 bytes and 8-byte aligned)::

        offset  0  seq       uint64  odd while the supervisor writes; generation = seq // 2
                8  crc32     uint64  of (seq, draining, deadline)
               16  draining  double  1.0 or 0.0
               24  deadline  double  epoch seconds at which connections close
               32  applied   uint64 x slots  the generation each worker applied last

    The state follows the seqlock protocol of the metrics slots (metrics.py; one writer,
    the supervisor's loop). The crc32 covers the generation too, so that on a weakly
    ordered CPU a read never pairs a new generation with an old state. Each ``applied``
    word is stored by its worker alone, as one aligned word, and read by the supervisor.
    """

    _WORD = struct.Struct("@Q")
    _STATE = struct.Struct("@dd")
    # (crc32, draining, deadline) as stored at offset 8; (seq, draining, deadline) as signed.
    _RECORD = struct.Struct("@Qdd")
    _APPLIED = 32

    def __init__(self, slots: int):
        self.mem = mmap.mmap(-1, self._APPLIED + self._WORD.size * slots)
        self.write(False, 0.0)

    def write(self, draining: bool, deadline: float) -> int:
        """Publish a new state; its generation, which the workers confirm."""
        seq = self._WORD.unpack_from(self.mem, 0)[0] | 1
        flag = 1.0 if draining else 0.0
        self._WORD.pack_into(self.mem, 0, seq)  # odd: a write is in progress
        self._WORD.pack_into(self.mem, 8, zlib.crc32(self._RECORD.pack(seq + 1, flag, deadline)))
        self._STATE.pack_into(self.mem, 16, flag, deadline)
        self._WORD.pack_into(self.mem, 0, seq + 1)
        return (seq + 1) // 2

    def read(self) -> tuple[int, bool, float] | None:
        """(generation, draining, deadline), or None when no consistent copy could be
        read within ~0.1 s (the supervisor stopped in the middle of a write)."""
        mem = self.mem
        for attempt in range(200):
            seq = self._WORD.unpack_from(mem, 0)[0]
            if not seq & 1:
                crc, flag, deadline = self._RECORD.unpack_from(mem, 8)
                if (self._WORD.unpack_from(mem, 0)[0] == seq
                        and zlib.crc32(self._RECORD.pack(seq, flag, deadline)) == crc):
                    return seq // 2, flag != 0.0, deadline
            if attempt >= 8:
                time.sleep(0.0005)
        return None

    def confirm(self, slot: int, generation: int) -> None:
        """In worker *slot*: it has applied the state of *generation*."""
        self._WORD.pack_into(self.mem, self._APPLIED + self._WORD.size * slot, generation)

    def applied(self, slot: int) -> int:
        """The generation worker *slot* confirmed last (0: none yet)."""
        return self._WORD.unpack_from(self.mem, self._APPLIED + self._WORD.size * slot)[0]


class Supervisor:
    def __init__(self, config: Config):
        self.config = config
        self.workers: dict[int, int] = {}  # pid -> slot
        self.deaths: list[float] = []
        self.stopping = False
        self.started = time.time()
        self.control = Control(config.server.worker_count)
        self.metrics = MetricsArea(config.server.worker_count)
        self.drain_deadline: float | None = None

    # -- start-up checks ----------------------------------------------------

    def prepare(self) -> None:
        cfg = self.config
        with Store(cfg) as store:
            report = recover(store)
            if report.changed:
                log.info("recovery: %d temp files removed, %d adopted, %d strays removed, "
                         "%d dropped, %d quarantined", len(report.temp_removed),
                         len(report.adopted), len(report.strays_removed),
                         len(report.dropped_missing), len(report.quarantined))
            for disk, reason in report.skipped_disks.items():
                log.warning("disk %s not served: %s", disk, reason)
        if cfg.auth.key_file:
            load_key(cfg.auth.key_file)
        AccessLog(cfg.server.access_log, cfg.server.name).close()
        host, port = cfg.server.listen
        self.reservation = self._bind(host, port, "server.listen", listen=False)
        ahost, aport = cfg.server.admin_listen
        self.admin_sock = self._bind(ahost, aport, "server.admin_listen", listen=True)

    def _bind(self, host: str, port: int, key: str, listen: bool) -> socket.socket:
        try:
            if listen:
                return listen_socket(host, port, reuseport=False)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            return sock
        except OSError as e:
            raise OcaError(f"{self.config.path}: {key} {host}:{port}: {e.strerror}") from None

    # -- workers ------------------------------------------------------------

    def spawn(self, slot: int) -> None:
        # The new worker confirms the state it starts in; until then a drain waits for it.
        self.control.confirm(slot, 0)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                # SIGUSR1 before the worker handles it must not kill it (the default): the
                # worker reads the drain state after installing its handler.
                signal.signal(signal.SIGUSR1, signal.SIG_IGN)
                self.admin_sock.close()
                self.reservation.close()
                code = Worker(self.config, slot, self.metrics.worker(slot), self.control).run()
            except BaseException:
                log.exception("worker %d crashed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = slot

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            self.metrics.retire(slot)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            log.error("worker %d (pid %d) exited with %s; restarting", slot, pid,
                      f"signal {-code}" if code < 0 else f"status {code}")
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
            delay = 1.0 if len(self.deaths) > RESTART_BURST else 0.0
            self.loop.call_later(delay, self._respawn, slot)

    def _respawn(self, slot: int) -> None:
        if not self.stopping and slot not in self.workers.values():
            self.spawn(slot)

    def signal_workers(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # -- drain --------------------------------------------------------------

    def drain(self, deadline_s: float) -> int:
        """Publish the drain and signal the workers; the generation they confirm."""
        self.drain_deadline = time.time() + deadline_s
        generation = self.control.write(True, self.drain_deadline)
        self.signal_workers(signal.SIGUSR1)
        log.info("draining: /health answers 503; connections close in %.0f s", deadline_s)
        return generation

    def undrain(self) -> int:
        """Publish the end of the drain and signal the workers; the generation to confirm."""
        self.drain_deadline = None
        generation = self.control.write(False, 0.0)
        self.signal_workers(signal.SIGUSR1)
        log.info("undrained")
        return generation

    async def confirmed(self, generation: int,
                        timeout: float = CONFIRM_TIMEOUT) -> dict[int, int]:
        """Wait until every live worker has applied the drain state of *generation*; the
        workers (pid -> slot) that had not within *timeout* seconds. A worker that dies
        meanwhile drops out; its replacement counts once it has started."""
        deadline = time.monotonic() + timeout
        while True:
            pending = {pid: slot for pid, slot in self.workers.items()
                       if self.control.applied(slot) < generation}
            if not pending or self.stopping or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(CONFIRM_POLL)

    async def apply_drain(self, what: str, generation: int) -> tuple[str, str, bytes]:
        """The answer to POST /drain or /undrain once the workers confirmed *generation*."""
        pending = await self.confirmed(generation)
        st = self.status()
        if not pending:
            return "200 OK", "application/json", json.dumps(st, sort_keys=True).encode() + b"\n"
        names = ", ".join(f"pid {pid} (slot {slot})" for pid, slot in sorted(pending.items()))
        st["unconfirmed"] = sorted(pending)
        if self.stopping:
            st["error"] = f"{what} not confirmed by workers {names}: oca serve is stopping"
        else:
            st["error"] = (
                f"{what} not confirmed within {CONFIRM_TIMEOUT:g} s by {len(pending)} of "
                f"{len(self.workers)} workers: {names}; the others applied it, these apply "
                "it once they run again (stopped? stuck? see the oca serve log)")
        log.error("%s", st["error"])
        return ("504 Gateway Timeout", "application/json",
                json.dumps(st, sort_keys=True).encode() + b"\n")

    def status(self) -> dict:
        cfg = self.config.server
        return {
            "pid": os.getpid(), "version": __version__, "appliance": cfg.name,
            "listen": "{}:{}".format(*cfg.listen),
            "admin_listen": "{}:{}".format(*cfg.admin_listen),
            "workers": sorted(self.workers), "worker_count": cfg.worker_count,
            "fastpath": _fastpath.IMPLEMENTATION,
            "draining": self.drain_deadline is not None, "drain_deadline": self.drain_deadline,
            "started": self.started,
        }

    # -- admin listener -----------------------------------------------------

    async def admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            writer.close()
            return
        req = _AdminRequest()
        parser = httptools.HttpRequestParser(req)
        try:
            parser.feed_data(head)
            req.method = parser.get_method().decode("latin-1")
        except httptools.HttpParserError:
            req.url = None
        status, ctype, body = await self.admin_response(req)
        writer.write(
            f"HTTP/1.1 {status}\r\nServer: oca\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def admin_response(self, req: _AdminRequest) -> tuple[str, str, bytes]:
        if req.url is None:
            return "400 Bad Request", "text/plain", b"bad request\n"
        path, _, query = req.url.partition("?")
        method = req.method
        route = (method, path)
        js = "application/json"
        if route == ("GET", "/metrics"):
            gauges = {"oca_workers": len(self.workers),
                      "oca_draining": 1.0 if self.drain_deadline is not None else 0.0}
            return ("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(gauges).encode())
        if route in (("GET", "/status"), ("GET", "/health")):
            st = self.status()
            code = "503 Service Unavailable" if path == "/health" and (
                st["draining"] or not self.workers) else "200 OK"
            return code, js, json.dumps(st, sort_keys=True).encode() + b"\n"
        if route == ("POST", "/drain"):
            raw = parse_qs(query).get("deadline", ["60"])[0]
            try:
                seconds = parse_duration(raw)
            except ValueError as e:
                return "400 Bad Request", js, json.dumps({"error": str(e)}).encode() + b"\n"
            return await self.apply_drain("drain", self.drain(seconds))
        if route == ("POST", "/undrain"):
            return await self.apply_drain("undrain", self.undrain())
        if path in ("/metrics", "/status", "/health", "/drain", "/undrain"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        return "404 Not Found", "text/plain", b"not found\n"

    # -- main ---------------------------------------------------------------

    def run(self) -> int:
        cfg = self.config.server
        log.info("oca %s serve: %s:%d, admin %s:%d, %d workers, fastpath %s", __version__,
                 *cfg.listen, *cfg.admin_listen, cfg.worker_count, _fastpath.IMPLEMENTATION)
        loop = self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        for slot in range(cfg.worker_count):
            self.spawn(slot)
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        loop.add_signal_handler(signal.SIGTERM, self.shutdown)
        loop.add_signal_handler(signal.SIGINT, self.shutdown)
        loop.add_signal_handler(signal.SIGHUP, self.signal_workers, signal.SIGHUP)
        admin = loop.run_until_complete(asyncio.start_server(self.admin, sock=self.admin_sock))
        loop.call_later(60, self.housekeeping)
        try:
            loop.run_forever()
        finally:
            admin.close()
            loop.run_until_complete(admin.wait_closed())
            loop.close()
        log.info("stopped")
        return 0

    def housekeeping(self) -> None:
        try:
            with Store(self.config) as store:
                store.index.prune_changes()
        except OcaError as e:
            log.warning("housekeeping: %s", e)
        self.loop.call_later(60, self.housekeeping)

    def shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: %d workers finish their responses (up to %.0f s)",
                 len(self.workers), self.config.server.shutdown_timeout)
        self.signal_workers(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.config.server.shutdown_timeout + 5
        self.loop.call_soon(self._wait_workers)

    def _wait_workers(self) -> None:
        self.reap()
        if not self.workers:
            self.loop.stop()
            return
        if time.monotonic() > self.kill_at:
            log.error("workers %s did not stop in time: killing", sorted(self.workers))
            self.signal_workers(signal.SIGKILL)
        self.loop.call_later(0.05, self._wait_workers)


class _AdminRequest:
    """httptools callbacks for the admin listener's tiny requests."""

    def __init__(self):
        self.url: str | None = ""
        self.method = ""

    def on_url(self, url: bytes) -> None:
        self.url = (self.url or "") + url.decode("latin-1")

    def on_headers_complete(self) -> None:
        pass


def raise_fd_limit(config: Config) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (nginx: worker_rlimit_nofile) and
    return it. Every connection and every cached open object is a descriptor; the soft
    limit a service manager hands out (1024 under systemd) is far below max_connections.
    The workers inherit the limit across fork()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS reports an infinite hard limit that the soft one may not take.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, e)
    cfg = config.server
    need = cfg.max_connections + cfg.open_file_cache + 64
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning("open files limit %d is below server.max_connections (%d) plus "
                    "server.open_file_cache (%d): raise the hard limit (LimitNOFILE= under "
                    "systemd) or accept() fails with EMFILE first", soft, cfg.max_connections,
                    cfg.open_file_cache)
    return soft


def serve(config: Config) -> int:
    """Run ``oca serve`` in the foreground; returns the exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s oca serve[%(process)d]: %(message)s")
    sup = Supervisor(config)
    sup.prepare()
    raise_fd_limit(config)
    return sup.run()
