"""What ``oca serve`` checks and sets up before it forks anything, so that a mistake is
one clear error at start-up instead of a child that dies again and again: the store's
recovery, the key file, the access log, both listening ports, the descriptor limit and
the runtime folder that holds the store watcher's socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import socket
import tempfile
from dataclasses import dataclass

from ..config import Config
from ..errors import OcaError
from ..http.accesslog import AccessLog
from ..http.auth import load_key
from ..storage import Store
from ..storage.recovery import recover
from . import feed
from .worker import listen_socket

log = logging.getLogger("oca.serve")


@dataclass
class Prepared:
    """What start-up made: the viewer port's reservation (bound, not listening: a second
    server fails at once while the workers' own SO_REUSEPORT sockets take the
    connections), the admin listener, and the feed's folder and listening socket."""

    reservation: socket.socket
    admin_sock: socket.socket
    runtime_dir: str
    feed_sock: socket.socket

    @property
    def feed_path(self) -> str:
        return os.path.join(self.runtime_dir, feed.SOCKET_NAME)

    def close(self) -> None:
        for s in (self.reservation, self.admin_sock, self.feed_sock):
            s.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def prepare(config: Config) -> Prepared:
    """Run the start-up checks; raises OcaError naming what is wrong."""
    with Store(config) as store:
        report = recover(store)
        if report.changed:
            log.info("recovery: %d temp files removed, %d adopted, %d strays removed, "
                     "%d dropped, %d quarantined", len(report.temp_removed),
                     len(report.adopted), len(report.strays_removed),
                     len(report.dropped_missing), len(report.quarantined))
        for disk, reason in report.skipped_disks.items():
            log.warning("disk %s not served: %s", disk, reason)
    if config.auth.key_file:
        load_key(config.auth.key_file)
    if config.auth.fill_key_file:
        load_key(config.auth.fill_key_file)
    if config.steering.enabled:
        from ..steering.loop import preflight

        preflight(config)  # names the network does not have: usage errors, nothing started
    AccessLog(config.server.access_log, config.server.name).close()
    host, port = config.server.listen
    reservation = _bind(config, host, port, "server.listen", listen=False)
    ahost, aport = config.server.admin_listen
    try:
        admin_sock = _bind(config, ahost, aport, "server.admin_listen", listen=True)
    except BaseException:
        reservation.close()
        raise
    # systemd's RuntimeDirectory= when set; otherwise a private folder under TMPDIR. A
    # Unix socket path holds at most 104 bytes (FreeBSD; 108 on Linux): keep it short.
    parent = os.environ.get("RUNTIME_DIRECTORY") or None
    runtime_dir = tempfile.mkdtemp(prefix="oca-serve-", dir=parent)
    try:
        feed_sock = feed.listen(runtime_dir)
    except OSError as e:
        reservation.close()
        admin_sock.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)
        raise OcaError(f"cannot listen on {runtime_dir}/{feed.SOCKET_NAME} for the store "
                       f"watcher: {e.strerror}") from None
    return Prepared(reservation, admin_sock, runtime_dir, feed_sock)


def _bind(config: Config, host: str, port: int, key: str, listen: bool) -> socket.socket:
    try:
        if listen:
            return listen_socket(host, port, reuseport=False)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        return sock
    except OSError as e:
        raise OcaError(f"{config.path}: {key} {host}:{port}: {e.strerror}") from None


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
