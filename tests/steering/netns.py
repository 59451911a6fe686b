"""A real upstream network of network namespaces for the steering tests (CI runs as
root; nothing leaves the namespaces):

    app --up1-- r1 --+
    app --up2-- r2 --+-- origin (203.0.113.10 on lo; an HTTP responder on :80)
    app --up3-- r3 --+

Path k: app's ``upk`` 10.k.0.2/24, router rk 10.k.0.1; rk to the origin 10.1k.0.0/24. The
origin answers each path back through its own router. In app, a table 100+k sends the
origin prefix via rk and a rule sends what comes from 10.k.0.2 there: a probe bound to
that source address takes path k and no other. The responder delays its answers to the
subnets named in ``delays.json`` (this kernel has no netem). Names carry a unique
suffix; ``close()`` deletes the namespaces (the fixture's finalizer calls it).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ORIGIN = "203.0.113.10"
PREFIX = "203.0.113.0/24"
_ids = itertools.count()

RESPONDER = r'''
import http.server, ipaddress, json, sys, time
delays_file = sys.argv[1]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        try:
            delays = json.load(open(delays_file))
        except (OSError, ValueError):
            delays = {}
        client = ipaddress.ip_address(self.client_address[0])
        for net, seconds in delays.items():
            if client in ipaddress.ip_network(net):
                time.sleep(seconds)
        body = b'{"ok": true}\n'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer((sys.argv[2], 80), H).serve_forever()
'''


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Network:
    def __init__(self, root: Path, paths: int = 3):
        n = next(_ids)
        tag = f"{os.getpid() % 100000}-{n}"
        self.app, self.origin = f"ocat-app-{tag}", f"ocat-org-{tag}"
        self.routers = [f"ocat-r{k}-{tag}" for k in range(1, paths + 1)]
        self.root = root
        self.delays = root / "delays.json"
        self.delays.write_text("{}")
        self.procs: list[subprocess.Popen] = []
        self.namespaces = [self.app, self.origin, *self.routers]
        try:
            self._build(paths)
        except BaseException:
            self.close()
            raise

    def _build(self, paths: int) -> None:
        for ns in self.namespaces:
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.origin, "addr", "add", f"{ORIGIN}/32", "dev", "lo")
        for k, router in enumerate(self.routers, start=1):
            ip("-n", self.app, "link", "add", f"up{k}", "type", "veth", "peer", "name", "rin",
               "netns", router)
            ip("-n", router, "link", "add", "toorg", "type", "veth", "peer", "name", f"r{k}",
               "netns", self.origin)
            ip("-n", self.app, "addr", "add", f"10.{k}.0.2/24", "dev", f"up{k}")
            ip("-n", router, "addr", "add", f"10.{k}.0.1/24", "dev", "rin")
            ip("-n", router, "addr", "add", f"10.1{k}.0.1/24", "dev", "toorg")
            ip("-n", self.origin, "addr", "add", f"10.1{k}.0.2/24", "dev", f"r{k}")
            for ns, dev in ((self.app, f"up{k}"), (router, "rin"), (router, "toorg"),
                            (self.origin, f"r{k}")):
                ip("-n", ns, "link", "set", dev, "up")
            subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw",
                            "net.ipv4.ip_forward=1"], check=True)
            ip("-n", router, "route", "add", PREFIX, "via", f"10.1{k}.0.2")
            ip("-n", self.origin, "route", "add", f"10.{k}.0.0/24", "via", f"10.1{k}.0.1")
            # The path's own table and the rule that pins its source address to it.
            ip("-n", self.app, "route", "add", PREFIX, "via", f"10.{k}.0.1", "dev", f"up{k}",
               "table", str(100 + k))
            ip("-n", self.app, "rule", "add", "from", f"10.{k}.0.2", "lookup", str(100 + k),
               "priority", str(500 + k))
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.origin, sys.executable, "-c", RESPONDER,
             str(self.delays), ORIGIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", self.origin, "curl", "-sf", "-o",
                              "/dev/null", f"http://{ORIGIN}/health"]).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the origin's responder did not come up")
            time.sleep(0.05)

    def delay(self, subnet: str, seconds: float) -> None:
        d = json.loads(self.delays.read_text())
        d[subnet] = seconds
        self.delays.write_text(json.dumps(d))

    def link(self, k: int, up: bool) -> None:
        """Path k's link (app side) up or down. The kernel drops the routes through a link
        that goes down; up again, the path's own table gets its route back, as the
        host's network configuration would do (steering's routes are its own business)."""
        ip("-n", self.app, "link", "set", f"up{k}", "up" if up else "down")
        if up:
            ip("-n", self.app, "route", "replace", PREFIX, "via", f"10.{k}.0.1", "dev",
               f"up{k}", "table", str(100 + k))

    def run_in_app(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run Python *code* inside the app namespace; its stdout."""
        r = subprocess.run(["ip", "netns", "exec", self.app, sys.executable, "-c", code, *args],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"in {self.app}: {r.stderr[-2000:]}")
        return r.stdout

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
