"""The admin listener of ``oca serve`` (``[server] admin_listen``, loopback by default):
``GET /metrics`` (Prometheus text), ``GET /status`` and ``GET /health`` (JSON), ``POST
/drain?deadline=60s`` and ``POST /undrain`` (answered once every worker applied the
change; 504 naming the workers that did not within CONFIRM_TIMEOUT). It runs on the
supervisor's event loop; requests are tiny and closed after one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import httptools

from ..http.metrics import MetricsArea
from ..units import parse_duration
from .control import CONFIRM_TIMEOUT, Drain

log = logging.getLogger("oca.serve")

JSON = "application/json"


class AdminListener:
    """Answers the admin requests from the daemon's *status* (a callable returning the
    status dict), its *metrics* and its *drain* state."""

    def __init__(self, status: Callable[[], dict], metrics: MetricsArea, drain: Drain,
                 workers: Callable[[], dict[int, int]],
                 fill_state: Callable[[], dict | None] | None = None,
                 steer_state: Callable[[], dict | None] | None = None):
        self.status = status
        self.metrics = metrics
        self.drain = drain
        self.workers = workers
        self.fill_state = fill_state  # the fill agent's state file (oca.fill.state)
        self.steer_state = steer_state  # the steering role's (oca.steering.loop)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        status, ctype, body = await self.respond(req.method, req.url)
        writer.write(
            f"HTTP/1.1 {status}\r\nServer: oca\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def respond(self, method: str, url: str | None) -> tuple[str, str, bytes]:
        if url is None:
            return "400 Bad Request", "text/plain", b"bad request\n"
        path, _, query = url.partition("?")
        route = (method, path)
        if route == ("GET", "/metrics"):
            gauges = {"oca_workers": len(self.workers()),
                      "oca_draining": 1.0 if self.drain.draining else 0.0}
            if self.fill_state is not None:
                gauges.update(fill_gauges(self.fill_state()))
            if self.steer_state is not None:
                gauges.update(steer_gauges(self.steer_state()))
            return ("200 OK", "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(gauges, {**FILL_HELP, **STEER_HELP}).encode())
        if route in (("GET", "/status"), ("GET", "/health")):
            st = self.status()
            code = "503 Service Unavailable" if path == "/health" and (
                st["draining"] or not st["workers"]) else "200 OK"
            return code, JSON, _json(st)
        if route == ("POST", "/drain"):
            raw = parse_qs(query).get("deadline", ["60"])[0]
            try:
                seconds = parse_duration(raw)
            except ValueError as e:
                return "400 Bad Request", JSON, _json({"error": str(e)})
            return await self.confirm("drain", self.drain.drain(seconds))
        if route == ("POST", "/undrain"):
            return await self.confirm("undrain", self.drain.undrain())
        if path in ("/metrics", "/status", "/health", "/drain", "/undrain"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        return "404 Not Found", "text/plain", b"not found\n"

    async def confirm(self, what: str, generation: int) -> tuple[str, str, bytes]:
        """The answer to POST /drain or /undrain once the workers confirmed *generation*."""
        pending = await self.drain.confirmed(generation)
        st = self.status()
        if not pending:
            return "200 OK", JSON, _json(st)
        names = ", ".join(f"pid {pid} (slot {slot})" for pid, slot in sorted(pending.items()))
        st["unconfirmed"] = sorted(pending)
        if self.drain.supervisor.stopping:
            st["error"] = f"{what} not confirmed by workers {names}: oca serve is stopping"
        else:
            st["error"] = (
                f"{what} not confirmed within {CONFIRM_TIMEOUT:g} s by {len(pending)} of "
                f"{len(self.workers())} workers: {names}; the others applied it, these apply "
                "it once they run again (stopped? stuck? see the oca serve log)")
        log.error("%s", st["error"])
        return "504 Gateway Timeout", JSON, _json(st)


def _json(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True).encode() + b"\n"


class _AdminRequest:
    """httptools callbacks for the admin listener's tiny requests."""

    def __init__(self):
        self.url: str | None = ""
        self.method = ""

    def on_url(self, url: bytes) -> None:
        self.url = (self.url or "") + url.decode("latin-1")

    def on_headers_complete(self) -> None:
        pass


FILL_HELP = {
    "oca_fill_running": "1 while the fill agent applies a manifest, else 0.",
    "oca_fill_bytes": "Bytes fetched by the current (or last) fill, by the source they came "
                      "from.",
    "oca_fill_objects": "Objects of the current (or last) fill, by result (added, moved, "
                        "deleted, failed, refused copies, not started).",
    "oca_fill_rate_bits_per_second": "The current (or last) fill's fetch rate over its last "
                                     "second.",
}


def fill_gauges(fill: dict | None) -> dict[str, float]:
    """/metrics gauges of the fill state (oca.fill.state); none before the first fill."""
    if not fill:
        return {}
    snap = fill.get("progress") or fill.get("summary") or {}
    out = {"oca_fill_running": 1.0 if fill.get("state") == "running" else 0.0}
    for source, n in sorted(snap.get("bytes_by_source", {}).items()):
        out[f"oca_fill_bytes{{source={source}}}"] = float(n)
    for result in ("added", "moved", "deleted"):
        out[f"oca_fill_objects{{result={result}}}"] = float(snap.get(result, 0))
    out["oca_fill_objects{result=failed}"] = float(len(snap.get("failed", {})))
    out["oca_fill_objects{result=refused}"] = float(len(snap.get("refused", [])))
    out["oca_fill_objects{result=not_started}"] = float(snap.get("not_started", 0))
    out["oca_fill_rate_bits_per_second"] = (float(snap.get("rate_bps", 0.0))
                                            if fill.get("state") == "running" else 0.0)
    return out


STEER_HELP = {
    "oca_steering_mode": "1 for the steering mode the appliance is in, 0 for the others.",
    "oca_steering_path_up": "1 when the path's probes answer, 0 when it is down.",
    "oca_steering_path_loss": "The path's probe loss over the window (0-1).",
    "oca_steering_path_rtt_ms": "The path's median probe time, connect to status line (ms).",
    "oca_steering_switches": "Mode switches since the steering role started, by reason "
                             "(hard, voluntary, appliance, no-path, forced, override-over).",
}


def steer_gauges(state: dict | None) -> dict[str, float]:
    """/metrics gauges of the steering state (oca.steering.loop); none before it ran."""
    if not state:
        return {}
    from ..steering.policy import MODES

    out = {f"oca_steering_mode{{mode={m}}}": 1.0 if state.get("mode") == m else 0.0
           for m in MODES}
    for mode, h in sorted(state.get("paths", {}).items()):
        out[f"oca_steering_path_up{{path={mode}}}"] = 1.0 if h.get("up") else 0.0
        out[f"oca_steering_path_loss{{path={mode}}}"] = float(h.get("loss", 1.0))
        if h.get("rtt_ms") is not None:
            out[f"oca_steering_path_rtt_ms{{path={mode}}}"] = float(h["rtt_ms"])
    for kind, n in sorted(state.get("switches_by", {}).items()):
        out[f"oca_steering_switches{{reason={kind}}}"] = float(n)
    return out
