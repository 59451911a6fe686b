# Set-up and everyday targets. `make demo` and `make test` work on a fresh
# machine with nothing but this repository (run as root for the apt-get step
# and for the tests that mount loop devices).

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO_DIR ?= demo

# Debian packages the tests use: mkfs.ext4 and mount/losetup for real disks
# that fill up, turn read-only, fail with EIO or vanish; curl for end-to-end checks;
# libfuse2 (libfuse.so.2, which fusepy loads) and fuse (fusermount) for tests/hangfs.py,
# a disk that hangs or fails on demand; node-llhttp for the C sources of llhttp, the parser
# the compiled connection loop calls (setup.py builds them in); nginx as a fill origin
# that is not oca (tests/fillagent/test_fleet.py); iproute2 (ip netns, tc) and procps
# (sysctl) for the steering tests' network of namespaces.
APT_PACKAGES := e2fsprogs util-linux mount curl libfuse2 fuse node-llhttp nginx iproute2 procps

# Debian packages `make bench-serve` adds: the peer server and the load generator.
# (On Debian 12 nginx-light is only a transitional package that pulls in nginx.)
BENCH_APT_PACKAGES := nginx wrk
# e.g. make bench-serve BENCH_SERVE_ARGS="--rounds 3 --workload small"
BENCH_SERVE_ARGS ?=
# e.g. make bench-fill BENCH_FILL_ARGS="--shapes A --capacities 0.1 --json fill.json"
BENCH_FILL_ARGS ?=

.PHONY: all install system-deps demo test lint bench bench-serve bench-fill bench-fill-apply bench-fill-link clean distclean

all: install

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run as root, or: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

$(STAMP): setup.py pyproject.toml $(wildcard _fastpath/*.pyx _fastpath/*.pxd _fastpath/includes/*.pxd _fastpath/includes/*.h fill/*.pyx)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: system-deps $(STAMP)

demo: install
	$(BIN)/oca demo --dir $(DEMO_DIR)

lint: install
	$(BIN)/ruff check oca fill _fastpath tests bench setup.py

test: install lint
	$(BIN)/python -m pytest -p no:cacheprovider tests

bench: install
	$(BIN)/python -m pytest bench --benchmark-only -p no:cacheprovider

# oca serve against nginx with wrk, same machine, same bytes (bench/serve/run.py).
bench-serve: install
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(BIN)/python bench/serve/run.py $(BENCH_SERVE_ARGS)

# oca fill apply against curl (+ fsync) into an ext4 image and a tmpfs; over a tbf-shaped
# veth link between two network namespaces (both need root).
bench-fill-apply: install
	$(BIN)/python bench/fill/apply.py

bench-fill-link: install
	$(BIN)/python bench/fill/link.py

# oca-fill simulate against libCacheSim (LRU, S3FIFO, ARC, WTinyLFU, Belady, BeladySize) on
# generated traces (bench/fill/compare.py; traces kept in /tmp/oca-bench-fill).
bench-fill: install
	$(BIN)/python bench/fill/compare.py $(BENCH_FILL_ARGS)

clean:
	rm -rf build *.egg-info _fastpath/*.c _fastpath/*.so $(DEMO_DIR)

distclean: clean
	rm -rf $(VENV)
