"""Build and install oca: the appliance (oca), the fill planner (fill) and the
Cython data path (_fastpath), plus the fill planner's compiled greedy pass.

The extension is optional at run time: when it is missing or OCA_NO_EXTENSIONS=1
is set, _fastpath selects its pure-Python twin.
"""

import os
from pathlib import Path

from setuptools import Extension, find_packages, setup


def llhttp() -> dict:
    """How _fastpath._connection gets llhttp, the parser its loop calls from C: the
    generated C of Debian's node-llhttp (apt-get install node-llhttp; the Makefile does),
    built in strict mode (a field name with a space in it is refused, as by the llhttp of
    httptools, which the twin uses), or a system libllhttp (FreeBSD: pkg install llhttp).
    OCA_LLHTTP_SRC names another directory of api.c, http.c, llhttp.c and llhttp.h."""
    src = os.environ.get("OCA_LLHTTP_SRC")
    for sources, include in ([(Path(src), Path(src))] if src else []) + [
            (Path("/usr/share/llhttp"), Path("/usr/share/include/llhttp"))]:
        if (sources / "llhttp.c").is_file() and (include / "llhttp.h").is_file():
            return {"sources": [str(sources / n) for n in ("api.c", "http.c", "llhttp.c")],
                    "include_dirs": [str(include)],
                    "define_macros": [("LLHTTP_STRICT_MODE", "1")]}
    for prefix in (Path("/usr/local"), Path("/usr")):
        if (prefix / "include" / "llhttp.h").is_file():
            return {"include_dirs": [str(prefix / "include")], "libraries": ["llhttp"],
                    "library_dirs": [str(prefix / "lib")]}
    raise SystemExit("setup.py: llhttp not found (Debian: apt-get install node-llhttp; "
                     "FreeBSD: pkg install llhttp; or set OCA_LLHTTP_SRC, or build without "
                     "extensions: OCA_NO_EXTENSIONS=1)")


ext_modules = []
# Same reading as _fastpath/__init__.py: unset, "" or "0" means build the extension.
if os.environ.get("OCA_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension("_fastpath._sendfile", ["_fastpath/_sendfile.pyx"]),
            # The connection loop; calls _sendfile's send_response_c at C level
            # (_fastpath/_sendfile.pxd) and llhttp's parser with C callbacks.
            Extension("_fastpath._connection", ["_fastpath/_connection.pyx"]
                      + (ll := llhttp()).pop("sources", []), **ll),
            # oca-fill: the placement's greedy pass as one C loop (twin: placement._Greedy).
            Extension("fill._greedy", ["fill/_greedy.pyx"]),
        ],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
        include_path=["_fastpath/includes"],
    )

setup(
    name="oca",
    version="0.1.0",
    description="Open CDN appliance software: tiered video store, sendfile serving, fill planning",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-2-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["oca", "oca.*", "fill", "fill.*", "_fastpath"]),
    package_data={"_fastpath": ["*.pyx", "*.pxd", "includes/*.pxd", "includes/*.h"],
                  "fill": ["*.pyx"]},
    ext_modules=ext_modules,
    install_requires=[
        "xxhash>=3.4",  # xxh3-128 digests: the contract's digest everywhere
        "psutil>=5.9",  # per-disk I/O counters and mount lookup for `oca status`
        "tqdm>=4.66",  # progress bars on a terminal for long jobs (verify, demo)
        "httptools>=0.6",  # llhttp, the HTTP/1.1 parser of oca serve (no hand-written parser)
        "uvloop>=0.19; sys_platform != 'win32'",  # the event loop of oca serve's workers
        "numpy>=1.26",  # oca-fill: per-object arrays (forecast, placement, scheduling)
        "polars>=1.0",  # oca-fill: streaming JSONL access logs and the catalog CSV, in Rust
        "isal>=1.6",  # oca-fill: ISA-L inflates gzip access logs 2.7x as fast as zlib
        "distributed>=2024.1",  # oca-fill plan --dask: sites on a Dask cluster (and tests)
        "pyroute2>=0.9",  # steering: routes and rules of ours over netlink
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-benchmark>=4",  # bench/: lookup and ingest figures
            "hypothesis>=6",
            "ruff>=0.5",
            # tests/http/test_metrics.py: our /metrics text must parse with the reference
            # parser (prometheus_client.parser.text_string_to_metric_families).
            "prometheus-client>=0.20",
            # tests/http/test_serve.py: REDbot (HTTP lint: validators, ranges, caching
            # headers) checks the running server's responses end to end.
            "redbot>=2.7",
            # bench/fill/compare.py and tests/fill/test_simulate.py: libCacheSim's LRU,
            # S3FIFO, ARC, WTinyLFU and Belady/BeladySize, the peers of `oca-fill simulate`
            # (0.3.5: the Python API used there, Request.next_access_vtime included).
            "libcachesim>=0.3.5",
            # tests/hangfs.py: a FUSE passthrough disk whose operations block or fail on
            # demand (a dying HDD, a stuck mount); ctypes over libfuse.so.2 (Debian libfuse2).
            "fusepy>=3.0.1",
            # bench/fill/clients.py: the fill agent's receive path (http.client's readinto)
            # measured against the two async-capable clients made for the job.
            "httpx>=0.27",
            "aiohttp>=3.9",
        ],
    },
    entry_points={
        "console_scripts": [
            "oca = oca.cli.main:main",
            "oca-fill = fill.cli:main",
        ],
    },
    zip_safe=False,
)
