"""HTTP/1.1 connections of one worker: the socket is ours, not an asyncio transport.

Why not a transport: the body goes out by sendfile(2) on the socket, and a head
written through a transport may still sit in the transport's buffer when
sendfile runs (body bytes would land inside the head); uvloop implements neither
loop.sendfile nor loop.sock_sendfile. So each connection is a non-blocking fd
watched for readiness (the compiled loop: in one epoll/kqueue descriptor of its own,
which the event loop watches; the twin: loop.add_reader / loop.add_writer), parsed by
httptools (llhttp), and
answered by one call into the send loop per request (again per writability event
when the socket fills up).

The connection loop itself is ``_fastpath.Connection``: compiled (Cython) unless
OCA_NO_EXTENSIONS selects its pure-Python twin (docs/fastpath.md). This module accepts
connections and keeps the worker's bookkeeping.

Per worker, one receive buffer and a pool of parsers serve every connection
(requests are parsed synchronously), so an idle keep-alive connection costs only
its Connection and its entry in the worker's poll set (docs/fastpath.md, "Memory
per connection").

Timeouts are checked by one sweep a second over all connections (nginx's
client_header_timeout, keepalive_timeout and send_timeout), not by a timer per
connection.
"""

from __future__ import annotations

import logging
import socket
import time

from _fastpath import Connection, Shared

from ..http.accesslog import json_str
from ..http.handler import Handler

log = logging.getLogger("oca.serve")


class WorkerServer:
    """The accept loop and connection bookkeeping of one worker process."""

    def __init__(self, loop, listen_sock: socket.socket, handler: Handler, objects, config):
        self.loop = loop
        self.listen_sock = listen_sock
        self.handler = handler
        self.objects = objects
        server_cfg = config.server
        self.header_timeout = server_cfg.header_timeout
        self.keepalive_timeout = server_cfg.keepalive_timeout
        self.send_timeout = server_cfg.send_timeout
        self.max_connections = server_cfg.max_connections
        self.max_header_size = server_cfg.max_header_size
        self.max_url_size = server_cfg.max_url_size
        self.max_head_size = server_cfg.max_header_size + server_cfg.max_url_size
        self.sendfile_max_chunk = server_cfg.sendfile_max_chunk
        self.connections: set[Connection] = set()
        self.accepting = False
        self.shared = Shared(self)

    def start(self) -> None:
        self.accepting = True
        self.loop.add_reader(self.listen_sock.fileno(), self.on_accept)

    def stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.listen_sock.fileno())
            self.listen_sock.close()

    def on_accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self.listen_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # EMFILE/ENFILE: out of descriptors. Log and stop this round.
                log.error("accept: %s", e.strerror)
                return
            sock.setblocking(False)
            if len(self.connections) >= self.max_connections:
                self.handler.refuse(sock)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = addr[0] if isinstance(addr, tuple) else str(addr)
            # The connection owns the fd; no socket object is kept per connection.
            self.connections.add(Connection(self.shared, sock.detach(), json_str(client)))
            self.handler.metrics.active_connections = len(self.connections)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.handler.metrics.active_connections = len(self.connections)

    def sweep(self) -> None:
        """Once a second: close connections whose timeout passed."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline < now]:
            conn.close()

    def close_idle(self) -> None:
        for conn in [c for c in self.connections if c.idle]:
            conn.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
