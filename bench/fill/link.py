"""`oca fill apply` over a real link of known rate: two network namespaces joined by a veth
pair whose source side is shaped by a tbf qdisc. Figures: the link's use during the
fill (the agent's bytes over its seconds, against the tbf rate), and with `--rate` set
below the link's rate, how close the agent keeps to it.

    sudo .venv/bin/python bench/fill/link.py [--link 200mbit] [--sizes 48M,48M,48M,48M]
                                             [--limited 0.5] [--parallel 2]

Needs root (namespaces, tc). Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply import OCA, make_object, parse_size, run, write_config  # noqa: E402

NS_SRC, NS_DST = "ocab-src", "ocab-dst"
SRC_IP, DST_IP = "10.77.0.1", "10.77.0.2"


def ns(name: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", name, *cmd, **kw)


def setup(link: str) -> None:
    teardown()
    run("ip", "netns", "add", NS_SRC)
    run("ip", "netns", "add", NS_DST)
    run("ip", "link", "add", "ocab-s", "netns", NS_SRC, "type", "veth", "peer", "name",
        "ocab-d", "netns", NS_DST)
    ns(NS_SRC, "ip", "addr", "add", f"{SRC_IP}/24", "dev", "ocab-s")
    ns(NS_DST, "ip", "addr", "add", f"{DST_IP}/24", "dev", "ocab-d")
    for n, dev in ((NS_SRC, "ocab-s"), (NS_DST, "ocab-d")):
        ns(n, "ip", "link", "set", dev, "up")
        ns(n, "ip", "link", "set", "lo", "up")
    # The fill's direction: the source's egress.
    ns(NS_SRC, "tc", "qdisc", "add", "dev", "ocab-s", "root", "tbf", "rate", link,
       "burst", "256kb", "latency", "100ms")


def teardown() -> None:
    for n in (NS_SRC, NS_DST):
        subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)


def rate_bits(text: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for u, k in units.items():
        if text.endswith(u):
            return float(text[:-len(u)]) * k
    return float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", default="200mbit", help="the tbf rate (tc syntax)")
    ap.add_argument("--sizes", default="48M,48M,48M,48M")
    ap.add_argument("--limited", type=float, default=0.5,
                    help="the second run's --rate, as a fraction of the link")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--dir", default="/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and tc")
    link = rate_bits(args.link)
    sizes = [parse_size(x) for x in args.sizes.split(",")]
    work = Path(args.dir) / f"oca-bench-link-{os.getpid()}"
    (work / "src" / "disk").mkdir(parents=True)
    srv = None
    results = []
    try:
        setup(args.link)
        cfg = write_config(work / "src", work / "src" / "disk", "100T", "src",
                           f'listen = "{SRC_IP}:8080"\nadmin_listen = "127.0.0.1:8081"\n'
                           f'workers = 1\naccess_log = "{work}/src/access.jsonl"')
        run(OCA, "-c", str(cfg), "init")
        objects = {}
        for i, size in enumerate(sizes):
            oid = f"obj{i}.mp4"
            digest = make_object(work / oid, size, i)
            run(OCA, "-c", str(cfg), "put", oid, str(work / oid), "--tier", "hdd")
            (work / oid).unlink()
            objects[oid] = (size, digest)
        srv = subprocess.Popen(["ip", "netns", "exec", NS_SRC, OCA, "-c", str(cfg), "serve"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while ns(NS_DST, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                 f"http://{SRC_IP}:8080/health", check=False).stdout != "200":
            if time.monotonic() > deadline:
                raise SystemExit("the source did not come up")
            time.sleep(0.2)
        for label, rate in (("no --rate", None), (f"--rate {args.limited:g} x link",
                                                   link * args.limited)):
            root = work / "dst"
            shutil.rmtree(root, ignore_errors=True)
            (root / "disk").mkdir(parents=True)
            tcfg = write_config(root, root / "disk", "100T", "a1")
            run(OCA, "-c", str(tcfg), "init")
            manifest = root / "a1.json"
            manifest.write_text(json.dumps({
                "appliance": "a1", "generated": 1, "delete": [], "upstream": ["src"],
                "sources": {"src": f"http://{SRC_IP}:8080"},
                "objects": [{"id": oid, "size": s, "xxh3": d, "tier": "hdd",
                             "source": "src", "wave": 0} for oid, (s, d) in objects.items()]}))
            cmd = [OCA, "-c", str(tcfg), "fill", "apply", str(manifest), "--json",
                   "--parallel", str(args.parallel)]
            if rate:
                cmd += ["--rate", str(int(rate))]
            r = ns(NS_DST, *cmd, check=False)
            if r.returncode != 0:
                raise SystemExit(f"fill failed: {r.stderr[-2000:]}")
            s = json.loads(r.stdout)
            got = sum(s["bytes_by_source"].values()) * 8 / s["seconds"]
            results.append((label, got, got / link, None if rate is None else got / rate))
            print(f"  {label:22} {got / 1e6:8.1f} Mbit/s  {got / link:6.1%} of the link"
                  + ("" if rate is None else f"  {got / rate:6.1%} of --rate"), flush=True)
    finally:
        if srv is not None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(20)
            except subprocess.TimeoutExpired:
                srv.kill()
        teardown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| run | Mbit/s | of the {args.link} link | of --rate |")
    print("| --- | ---: | ---: | ---: |")
    for label, got, of_link, of_rate in results:
        print(f"| {label} | {got / 1e6:.1f} | {of_link:.1%} | "
              + ("-" if of_rate is None else f"{of_rate:.1%}") + " |")
    print(f"\ncommand: {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
