"""Catalog load: `fill.catalog.load_catalog` of a 1M-row CSV against polars' bare read.

Ours: the whole load (polars reads every column as a string, every check is one
vectorized expression, ids sorted and numbered). Peer, on the same file in the same run:
`polars.read_csv` of the same columns as strings with no check at all, the floor under
ours; the ratio is what the checks and the numbering cost. Moved here from
tests/fill/test_catalog.py, which asserts the behaviour only.
"""

from __future__ import annotations

import os

import polars as pl
import pytest

from fill.catalog import load_catalog

ROWS = int(os.environ.get("OCA_BENCH_CATALOG_ROWS", 1_000_000))
ROUNDS = 5


@pytest.fixture(scope="module")
def catalog_csv(tmp_path_factory: pytest.TempPathFactory):
    """ROWS rows, four encodes per title, in reverse id order (the load sorts them)."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,size,xxh3,title,type,release\n")
        for i in reversed(range(ROWS)):
            f.write(f"t{i // 4:07d}-e{i % 4}.mp4,{1000 + i},,t{i // 4:07d},e{i % 4},\n")
    return path


@pytest.mark.benchmark(group="catalog")
def test_load_catalog(benchmark, catalog_csv, bench_report):
    """Ours: the whole checked load."""
    cat = benchmark.pedantic(load_catalog, args=(catalog_csv,), rounds=ROUNDS, iterations=1)
    assert len(cat) == ROWS
    bench_report.setdefault("catalog", {"rows": ROWS})["ours_s"] = benchmark.stats.stats.median


@pytest.mark.benchmark(group="catalog")
def test_polars_read_csv(benchmark, catalog_csv, bench_report):
    """Peer: the same columns read as strings by polars, nothing checked."""
    def read(path):
        return pl.read_csv(path, infer_schema=False)

    df = benchmark.pedantic(read, args=(catalog_csv,), rounds=ROUNDS, iterations=1)
    assert df.height == ROWS
    fig = bench_report.setdefault("catalog", {"rows": ROWS})
    fig["peer_s"] = benchmark.stats.stats.median
    if "ours_s" in fig:
        fig["lines"] = [
            f"RATIO catalog load, {ROWS:,} rows: load_catalog {fig['ours_s']:.2f} s vs bare "
            f"polars.read_csv {fig['peer_s']:.2f} s: {fig['ours_s'] / fig['peer_s']:.1f}x "
            "(the checks and the numbering)"]
