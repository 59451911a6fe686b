"""What holding each object at each site is worth tomorrow: predicted bytes served per day.

The model (docs/fill-inputs.md explains each choice and every parameter):

1. **Rates with exposure.** Decayed request counts (logs.read_demand) become requests per
   day by dividing by the decayed length of time the object could be watched: from the
   later of the logs' start and the object's catalog ``release`` to the logs' end. An
   object released six hours ago is not diluted over a week it did not exist.
2. **Sites borrow from the fleet.** A site's count is shrunk toward its share of the
   fleet's count, as a Gamma-Poisson posterior: ``(n + k) * mu / (mu + k)`` with
   ``mu = share * fleet count``. Objects a site sees often keep their own rate; rare ones
   follow the fleet. The strength ``k`` (how alike sites are) is estimated from the
   logs by the method of moments unless given. Fleet-wide lines (no known appliance)
   are spread over the sites by traffic share.
3. **Trend.** Recent (short half-life) over long-term counts, against what a steady
   object would show and relative to the whole site (so the night trough at planning
   time lifts or sinks nothing), shrunk toward 1 by pseudo-counts and clipped: rising
   titles go up, fading ones down.
4. **Titles.** An encode with no history takes its title's rate times the share its
   `type` gets across titles (1 / number of encodes when the type is unknown or rare).
5. **Releases.** An object with no history whose release is within the lookahead gets
   the 90th percentile of past releases' first-day demand seen in the logs (else of
   the titles' daily rates, else a default), so it is placed before its first view;
   one released later than the lookahead gets 0.
6. **Hints** (CSV ``id_or_title,expected_requests_per_day``) override all of the above.

value = requests per day x bytes per request (the object's logged bytes per request,
shrunk toward the fleet's fraction of an object a request reads); peak_gbps = value x 8
/ 86400 x peak_factor / 1e9. Everything is vectorized over objects; sites are a loop.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .errors import InputError
from .logs import FIRST_DAY
from .model import FLEET, Catalog, Demand, SiteForecast, Topology

__all__ = ["ForecastParams", "Forecaster", "forecast", "forecast_backbone", "load_hints"]

log = logging.getLogger(__name__)

DAY = 86400.0
_MIN_EXPOSURE = 3600.0  # an object's rate is never spread over less than this
_K_RANGE = (0.05, 1000.0)  # estimated prior strength is kept inside this
_BYTES_PSEUDO = 1.0  # pseudo-requests shrinking an object's bytes per request


@dataclass
class ForecastParams:
    """Knobs of the forecaster; times in seconds, rates in requests per day. Checked when
    made (ValueError); the CLI sets fields afterwards, and forecast() checks again."""

    half_life: float = DAY
    """Decay of the long-term counts (pass to read_demand): demand a day old counts half."""
    recent_half_life: float = 6 * 3600.0
    """Decay of the recent counts that measure the trend (6 h did a little better than
    3 h on the replayed traces of bench/fill/tracegen.py, shapes A, B, C)."""
    trend_min: float = 0.25
    trend_max: float = 4.0
    """The trend multiplies a rate by at most this much, and divides it by at most
    1 / trend_min."""
    trend_pseudo: float = 2.0
    """Pseudo-requests (recent-count units) pulling a trend toward 1: an object with a
    handful of recent requests is not declared a rising star."""
    site_prior_strength: float | None = None
    """k of the site-vs-fleet shrinkage, in (decayed) requests: a site trusts its own
    count of an object once it expects about k of them. None: estimated from the logs."""
    release_lookahead: float = DAY
    """An unseen object released up to this long after now gets the release prior (placed
    ahead of its first view); released later: 0, as tomorrow's plan can still place it.
    (One day beat two by 0.4-0.7 points of byte hit ratio on the replayed traces: a title
    held two days early takes the room of one watched in the meantime.)"""
    release_quantile: float = 0.9
    """Which quantile of past releases' first-day demand a new release is expected at."""
    release_min_samples: int = 3
    """Past releases (titles) needed before their first days are used for the prior."""
    release_default: float = 100.0
    """Fleet-wide requests per day of a new title when the logs show nothing to learn from."""
    type_min_titles: int = 3
    """Titles that must show a `type` before its share of a title's demand is trusted."""
    peak_factor: float = 2.5
    """Peak-hour over mean rate of a day (evening peak of video traffic is ~2-3x mean)."""
    min_rate: float = 1e-3
    """Objects predicted below this many requests per day at a site are left out of its
    forecast: holding one would serve a request every few years."""
    keep_capacity_factor: float | None = 1.25
    """Keep per site only the densest objects whose sizes add up to this many times the
    site's capacity (all tiers of all appliances); what is past that cannot be placed and
    costs ~24 bytes per object per site. None keeps every object with a value."""
    hints: Path | None = None
    """CSV of `id_or_title,expected_requests_per_day` (fleet-wide) that override."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        for name in ("half_life", "recent_half_life", "trend_min", "peak_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ForecastParams.{name} must be greater than zero")
        if not self.trend_max >= self.trend_min:
            raise ValueError("ForecastParams.trend_max must be at least trend_min")
        if not 0 <= self.release_quantile <= 1:
            raise ValueError("ForecastParams.release_quantile must be within 0..1")
        for name in ("trend_pseudo", "release_lookahead", "release_default", "min_rate"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ForecastParams.{name} must not be negative")
        if self.site_prior_strength is not None and not self.site_prior_strength > 0:
            raise ValueError("ForecastParams.site_prior_strength must be greater than zero")
        if self.keep_capacity_factor is not None and not self.keep_capacity_factor > 0:
            raise ValueError("ForecastParams.keep_capacity_factor must be greater than zero")


def load_hints(path: str | os.PathLike) -> dict[str, float]:
    """Read a hints CSV: header with `id_or_title` and `expected_requests_per_day`
    (other columns ignored), one object id or title per row with its expected fleet-wide
    requests per day. Raises InputError naming the file, line and column."""
    file = Path(path)
    try:
        f = open(file, encoding="utf-8-sig", newline="")  # noqa: SIM115 (the `with` below)
    except FileNotFoundError:
        raise InputError(f"{file}: hints file not found") from None
    except OSError as e:
        raise InputError(f"{file}: cannot read hints: {e.strerror or e}") from None
    hints: dict[str, float] = {}
    first_line: dict[str, int] = {}
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{file}: line 1: empty; expected a header "
                                 "id_or_title,expected_requests_per_day")
            for name in ("id_or_title", "expected_requests_per_day"):
                if name not in header:
                    raise InputError(f"{file}: line 1: no {name!r} column (the header needs "
                                     "id_or_title,expected_requests_per_day)")
            key_at = header.index("id_or_title")
            rate_at = header.index("expected_requests_per_day")
            line = reader.line_num + 1
            for record in reader:
                where = f"{file}: line {line}"
                line = reader.line_num + 1
                if not any(field.strip() for field in record):
                    continue
                key = record[key_at].strip() if key_at < len(record) else ""
                raw = record[rate_at].strip() if rate_at < len(record) else ""
                if not key:
                    raise InputError(f"{where}: id_or_title: empty")
                try:
                    rate = float(raw)
                except ValueError:
                    rate = math.nan
                if not (math.isfinite(rate) and rate >= 0):
                    raise InputError(f"{where}: expected_requests_per_day: {raw!r} is not a "
                                     "number of requests per day (0 or more)")
                if key in hints:
                    raise InputError(f"{where}: id_or_title: {key!r} appears twice (first "
                                     f"on line {first_line[key]})")
                hints[key] = rate
                first_line[key] = int(where.rsplit(" ", 1)[1])
        except UnicodeDecodeError:
            raise InputError(f"{file}: line {reader.line_num + 1}: not UTF-8 text") from None
        except csv.Error as e:
            raise InputError(f"{file}: line {reader.line_num}: not CSV: {e}") from None
    return hints


def forecast(demand: Demand, catalog: Catalog, topology: Topology, now: float,
             params: ForecastParams) -> dict[str, SiteForecast]:
    """Predicted value of holding each object at each site tomorrow, by site name in
    topology order. *demand* must come from read_demand with params.half_life and
    params.recent_half_life. Objects with no predicted demand are left out."""
    model = Forecaster(demand, catalog, topology, now, params)
    return {site.name: model.site(site.name) for site in topology.sites}


def forecast_backbone(forecasts: dict[str, SiteForecast],
                      topology: Topology) -> dict[str, SiteForecast]:
    """Per backbone node (topology order): the sum over the sites whose upstream it is
    of their forecasts (value and peak_gbps add up object by object)."""
    out = {}
    for node in topology.backbone:
        served = [forecasts[s.name] for s in topology.sites
                  if s.upstream == node.name and s.name in forecasts]
        n = 1 + max((int(fc.obj[-1]) for fc in served if fc.obj.size), default=-1)
        value = np.zeros(n)
        peak = np.zeros(n)
        for fc in served:  # in topology order: the same sums every run
            value[fc.obj] += fc.value  # obj is unique within a forecast
            peak[fc.obj] += fc.peak_gbps
        obj = np.flatnonzero(value > 0)
        out[node.name] = SiteForecast(node.name, obj.astype(np.int64), value[obj], peak[obj])
    return out


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique hashes: several times slower on 1M int64)."""
    out = np.sort(values)
    return out[np.concatenate(([True], out[1:] != out[:-1]))] if out.size else out


def _window(half_life: float, now: float, start: np.ndarray | float, end: float):
    """Decayed seconds between *start* and *end*: the count a steady rate of one request
    a second leaves in a sum decayed with *half_life* to *now*."""
    scale = half_life / math.log(2)
    return scale * (np.exp2(-(now - end) / half_life) - np.exp2(-(now - start) / half_life))


class Forecaster:
    """The forecast's fleet-wide part, computed once (~1 s for 1M objects); each site's
    forecast on request (~50 ms). forecast() is ``{s: f.site(s) for each site}``.

    At 100 sites x 1M objects the forecasts of all sites take ~2 GB (24 bytes per object
    and site): a caller that plans one site at a time can ask each site's forecast when
    it needs it (in each worker of a forked pool, say) and hold one, and backbone()
    sums the sites' forecasts holding one at a time. Not for two threads at once (it
    reuses scratch arrays); each forked process has its own copy.
    """

    def __init__(self, demand: Demand, catalog: Catalog, topology: Topology, now: float,
                 params: ForecastParams):
        params.check()
        now = float(now)
        self.p = params
        self.now = now
        self.topology = topology
        self.catalog = catalog
        n = len(catalog)
        self.n = n
        sites = [s.name for s in topology.sites]
        self.site_names = sites
        self.n_sites = len(sites)
        where = {name: i for i, name in enumerate(sites)}
        self.site_number = where
        fleet = self.n_sites  # FLEET, or a site the topology does not have: fleet-wide
        group = np.array([where.get(name, fleet) if name != FLEET else fleet
                          for name in demand.sites] or [fleet], dtype=np.int64)
        row_site = group[demand.site_idx] if len(demand.site_idx) else np.zeros(0, np.int64)
        obj = demand.obj_idx.astype(np.int64)
        real = row_site < fleet
        size = catalog.size.astype(np.float64)

        # Fleet sums per object: by sites (g), by fleet-wide lines (fl), all (f).
        def per_object(values, mask):
            return np.bincount(obj[mask], values[mask], minlength=n)[:n]

        self.g_long = per_object(demand.requests, real)
        self.g_recent = per_object(demand.recent, real)
        self.fl_long = per_object(demand.requests, ~real)
        self.fl_recent = per_object(demand.recent, ~real)
        f_long = self.g_long + self.fl_long
        f_bytes = per_object(demand.bytes, np.ones(len(obj), bool))
        history = f_long > 0
        self.history = history

        # Rows of each site (read_demand sorts them by site already: no sort then).
        self.rows: list[slice | np.ndarray]
        if (row_site[1:] >= row_site[:-1]).all():
            bounds = np.searchsorted(row_site, np.arange(self.n_sites + 1)).tolist()
            self.rows = [slice(bounds[i], bounds[i + 1]) for i in range(self.n_sites)]
        else:
            order = np.argsort(row_site, kind="stable")
            bounds = np.searchsorted(row_site[order], np.arange(self.n_sites + 1))
            self.rows = [order[bounds[i]:bounds[i + 1]] for i in range(self.n_sites)]
        self.obj = obj
        self.long = demand.requests
        self.recent = demand.recent

        # Log window and each object's exposure in it.
        have_logs = bool(len(obj)) and math.isfinite(demand.start_ts) \
            and math.isfinite(demand.end_ts)
        end = min(demand.end_ts, now) if have_logs else now
        start = min(demand.start_ts, end) if have_logs else end
        self.log_end = end
        latest = max(start, end - _MIN_EXPOSURE)
        release = catalog.release
        exposed_from = np.where(np.isfinite(release), np.clip(release, start, latest), start)
        self.window = np.maximum(_window(params.half_life, now, exposed_from, end), 1.0)
        window_recent = np.maximum(_window(params.recent_half_life, now, exposed_from, end),
                                   1e-9)
        self.steady_ratio = window_recent / self.window  # recent / long of a steady object

        # Site traffic shares: by logged requests; a site without lines by capacity.
        capacity = np.array([sum(a.serve_gbps for a in s.appliances) for s in topology.sites])
        self.capacity_bytes = np.array(
            [sum(sum(a.tiers.values()) for a in s.appliances) for s in topology.sites],
            dtype=np.float64)
        totals = np.bincount(row_site[real], demand.requests[real],
                             minlength=self.n_sites)[:self.n_sites]
        cap_share = capacity / capacity.sum() if capacity.sum() > 0 else \
            np.full(self.n_sites, 1.0 / max(1, self.n_sites))
        if totals.sum() > 0:
            share = totals / totals.sum()
            silent = totals == 0
            share[~silent] *= 1.0 - cap_share[silent].sum()
            share[silent] = cap_share[silent]
        else:
            share = cap_share
        self.share = share

        self.k = params.site_prior_strength or self._estimate_strength(
            row_site, real, start, end)

        # Bytes per request: the object's own, shrunk toward the fleet's fraction of an
        # object that one request reads.
        asked = float((f_long * size).sum())
        fraction = float(np.clip(f_bytes.sum() / asked, 1e-6, 1.0)) if asked > 0 else 1.0
        self.bytes_per_request = np.where(
            history, (f_bytes + _BYTES_PSEUDO * fraction * size) / (f_long + _BYTES_PSEUDO),
            fraction * size)
        self.size = size

        self._titles(f_long)
        self._release_prior(demand, start, end)
        self._hints()
        self.candidates = np.flatnonzero(history)
        self._prepare_sites()
        log.info("forecast: %d objects with history; site-vs-fleet strength k=%.3g; a new "
                 "release is expected at %.4g requests/day (from %s)", self.candidates.size,
                 self.k, self.release_prior_rate, self.release_prior_source)

    def site(self, name: str) -> SiteForecast:
        """The forecast of the site called *name* (KeyError if the topology has none)."""
        return self.site_forecast(self.site_number[name])

    def backbone(self) -> dict[str, SiteForecast]:
        """forecast_backbone() of all sites' forecasts, made one site at a time."""
        out = {}
        for node in self.topology.backbone:
            value = np.zeros(self.n)
            peak = np.zeros(self.n)
            for s, site in enumerate(self.topology.sites):
                if site.upstream == node.name:  # in topology order: the same sums every run
                    fc = self.site_forecast(s)
                    value[fc.obj] += fc.value
                    peak[fc.obj] += fc.peak_gbps
            obj = np.flatnonzero(value > 0)
            out[node.name] = SiteForecast(node.name, obj, value[obj], peak[obj])
        return out

    # -- fleet-level pieces --------------------------------------------------------------

    def _estimate_strength(self, row_site, real, start, end) -> float:
        """k by the method of moments: with mu = share * fleet count, a site's count n
        has E(n - mu)^2 = phi * mu + mu^2 / k, where phi (the variance of a decayed
        Poisson count over its mean) is W(half_life / 2) / W(half_life)."""
        if self.n_sites < 2 or not real.any():
            return _K_RANGE[1]
        p = self.p
        phi = float(_window(p.half_life / 2, self.now, start, end)
                    / max(_window(p.half_life, self.now, start, end), 1e-300))
        n_row = self.long[real]
        mu_row = self.share[row_site[real]] * self.g_long[self.obj[real]]
        square = float((self.share ** 2).sum() * (self.g_long ** 2).sum())
        if square <= 0:
            return _K_RANGE[1]
        excess = float((n_row * n_row - 2 * n_row * mu_row).sum()) + square \
            - phi * float(n_row.sum())
        inverse = excess / square
        if inverse <= 1.0 / _K_RANGE[1]:
            return _K_RANGE[1]
        return float(np.clip(1.0 / inverse, *_K_RANGE))

    def _titles(self, f_long: np.ndarray) -> None:
        """Encode shares by `type`, and which unseen encodes inherit their title's rate."""
        cat = self.catalog
        n_titles = len(cat.titles)
        title = cat.title.astype(np.int64)
        self.n_titles = n_titles
        self.title = title
        rate = np.where(self.history, f_long / self.window * DAY, 0.0)
        title_rate = np.bincount(title, rate, minlength=n_titles)
        title_seen = title_rate > 0
        encodes = np.bincount(title, minlength=n_titles).astype(np.float64)
        even = 1.0 / encodes[title] if self.n else np.zeros(0)
        share = even.copy()
        if self.n and title_seen.any():
            kinds = pl.Series(cat.kind.tolist(), dtype=pl.String).fill_null("")
            kind_idx = (kinds.rank("dense") - 1).cast(pl.Int64).to_numpy()
            names = kinds.unique().sort().to_numpy()
            in_seen = title_seen[title]
            got = np.bincount(kind_idx[in_seen], rate[in_seen], minlength=len(names))
            of = np.bincount(kind_idx[in_seen], title_rate[title][in_seen],
                             minlength=len(names))
            pairs = _distinct(kind_idx[in_seen] * n_titles + title[in_seen])
            support = np.bincount(pairs // max(1, n_titles), minlength=len(names))
            usable = (names != "") & (support >= self.p.type_min_titles) & (got > 0)
            kind_share = np.where(usable, got / np.maximum(of, 1e-300), np.nan)
            learned = kind_share[kind_idx]
            share = np.where(np.isfinite(learned), learned, even)
        self.encode_share = share
        self.inherits = np.flatnonzero(~self.history & title_seen[title]) if self.n \
            else np.zeros(0, np.int64)
        # A new title's prior is split over its encodes by their shares, normalised.
        share_sum = np.bincount(title, share, minlength=n_titles)
        self.split = np.where(share_sum[title] > 0, share / np.maximum(share_sum[title], 1e-300),
                              even) if self.n else np.zeros(0)
        self.title_seen = title_seen

    def _release_prior(self, demand: Demand, start: float, end: float) -> None:
        """Fleet requests per day expected of each unseen, new or upcoming release."""
        cat = self.catalog
        p = self.p
        release = cat.release
        known = np.isfinite(release)
        title_release = np.full(self.n_titles, np.inf)
        np.minimum.at(title_release, self.title[known], release[known])
        first_day = demand.first_day if len(demand.first_day) == self.n else np.zeros(self.n)
        title_first = np.bincount(self.title, first_day, minlength=self.n_titles)
        observed = (title_release >= start) & (title_release + FIRST_DAY <= end) \
            & np.isfinite(title_release)
        if observed.sum() >= p.release_min_samples:
            prior = float(np.quantile(title_first[observed], p.release_quantile))
            source = f"{int(observed.sum())} past releases' first day"
        else:
            rate = np.where(self.history, (self.g_long + self.fl_long) / self.window * DAY, 0)
            title_rate = np.bincount(self.title, rate, minlength=self.n_titles)
            seen = title_rate[title_rate > 0]
            if seen.size:
                prior = float(np.quantile(seen, p.release_quantile))
                source = f"titles' daily rates ({seen.size} titles)"
            else:
                prior = p.release_default
                source = "release_default"
        self.release_prior_rate = prior
        self.release_prior_source = source
        # Unobserved share of the first day: a release after the logs' end could not be
        # seen; one whose first hours are in the logs without a view is less promising.
        unobserved = 1.0 - np.clip((self.log_end - release) / FIRST_DAY, 0.0, 1.0)
        upcoming = known & ~self.history & ~self.title_seen[self.title] \
            & (release <= self.now + p.release_lookahead) & (unobserved > 0)
        self.new_release = np.flatnonzero(upcoming)
        self.new_release_rate = prior * self.split[self.new_release] \
            * unobserved[self.new_release]
        self.not_yet = np.flatnonzero(known & (release > self.now + p.release_lookahead))

    def _hints(self) -> None:
        self.hinted = np.zeros(0, np.int64)
        self.hinted_rate = np.zeros(0)
        if self.p.hints is None:
            return
        hints = load_hints(self.p.hints)
        cat = self.catalog
        ids = cat.ids
        titles = np.array(cat.titles, dtype=object)
        by_title = np.argsort(self.title, kind="stable")
        title_bounds = np.searchsorted(self.title[by_title], np.arange(self.n_titles + 1))
        rate = {}
        unknown = 0
        for key, value in sorted(hints.items()):  # titles first: an id's own hint wins
            t = int(np.searchsorted(titles, key)) if len(titles) else 0
            is_title = t < len(titles) and titles[t] == key
            if is_title:
                for i in by_title[title_bounds[t]:title_bounds[t + 1]].tolist():
                    rate.setdefault(i, value * float(self.split[i]))
            i = int(np.searchsorted(ids, key)) if len(ids) else 0
            if not (i < len(ids) and ids[i] == key) and not is_title:
                unknown += 1
        for key, value in hints.items():
            i = int(np.searchsorted(ids, key)) if len(ids) else 0
            if i < len(ids) and ids[i] == key:
                rate[i] = value
        if unknown:
            log.warning("%s: %d hints name neither an object nor a title of the catalog",
                        self.p.hints, unknown)
        if rate:
            self.hinted = np.array(sorted(rate), dtype=np.int64)
            self.hinted_rate = np.array([rate[i] for i in self.hinted.tolist()])

    # -- per site ------------------------------------------------------------------------

    def _prepare_sites(self) -> None:
        """Per-candidate constants of the site loop, gathered once."""
        c = self.candidates
        self.c_g_long = self.g_long[c]
        self.c_g_recent = self.g_recent[c]
        self.c_fl_long = self.fl_long[c]
        self.c_fl_recent = self.fl_recent[c]
        self.c_steady = self.steady_ratio[c]
        self.c_per_day = DAY / self.window[c]
        self.c_title = self.title[c]
        self.row_pos = np.searchsorted(c, self.obj)  # each demand row's place in c
        self._rate = np.zeros(self.n)
        self._scratch = [np.empty(c.size) for _ in range(5)]

    def site_forecast(self, s: int) -> SiteForecast:
        """The forecast of site number *s*. Uses the model's scratch arrays: one call at a
        time (in-place arithmetic on reused buffers halves the time of 100 sites)."""
        p = self.p
        share = float(self.share[s])
        k = self.k
        c = self.candidates
        rate = self._rate
        rate.fill(0.0)
        if c.size:
            rows = self.rows[s]
            at = self.row_pos[rows]
            b1, b2, b3, long, recent = self._scratch
            # posterior of the site's count: (n + k) * mu / (mu + k), mu = share * fleet
            for fleet, fleet_wide, count, out in (
                    (self.c_g_long, self.c_fl_long, self.long, long),
                    (self.c_g_recent, self.c_fl_recent, self.recent, recent)):
                mu = np.multiply(fleet, share, out=b1)
                part = np.divide(mu, np.add(mu, k, out=b2), out=b3)  # mu / (mu + k)
                np.multiply(part, k, out=out)
                out[at] += count[rows] * part[at]
                out += np.multiply(fleet_wide, share, out=b2)  # fleet-wide lines, by share
            expected = np.multiply(long, self.c_steady, out=b1)  # recent if steady
            total = float(expected.sum())
            expected *= float(recent.sum()) / total if total > 0 else 1.0  # site-relative
            expected += p.trend_pseudo
            recent += p.trend_pseudo
            trend = np.clip(np.divide(recent, expected, out=recent), p.trend_min, p.trend_max,
                            out=recent)
            long *= self.c_per_day
            long *= trend
            rate[c] = long
            if self.inherits.size:
                title_rate = np.bincount(self.c_title, long, minlength=self.n_titles)
                rate[self.inherits] = title_rate[self.title[self.inherits]] \
                    * self.encode_share[self.inherits]
        rate[self.new_release] = share * self.new_release_rate
        rate[self.not_yet] = 0.0
        rate[self.hinted] = share * self.hinted_rate
        keep = np.flatnonzero(rate >= p.min_rate) if p.min_rate > 0 else \
            np.flatnonzero(rate > 0)
        value = np.multiply(rate, self.bytes_per_request, out=rate)[keep]
        if not (value > 0).all():  # objects of size 0
            keep, value = keep[value > 0], value[value > 0]
        cut = self._capacity_cut(keep, value, s)
        if cut is not None:
            keep, value = keep[cut], value[cut]
        return SiteForecast(site=self.site_names[s], obj=keep.astype(np.int64, copy=False),
                            value=value, peak_gbps=value * (8.0 / DAY * p.peak_factor / 1e9))

    def _capacity_cut(self, keep: np.ndarray, value: np.ndarray, s: int) -> np.ndarray | None:
        """Mask of the densest objects whose sizes reach keep_capacity_factor x the site's
        bytes, or None to keep all.

        No sort (100 sorts of 1M floats take seconds): the bits of a positive float64,
        read as an integer, grow with its value, so the top 16 bits (exponent and 4
        mantissa bits: sixteenth-octave bins) of value / size bin the objects by density.
        A size-weighted count of each bin, summed from the densest down, finds the bin
        where the target is reached; whole bins are kept (slightly more than the target,
        and ties never split)."""
        factor = self.p.keep_capacity_factor
        if factor is None or keep.size == 0:
            return None
        size = self.size[keep]
        target = factor * self.capacity_bytes[s]
        if size.sum() <= target:
            return None
        density = value / np.maximum(size, 1.0)
        bins = density.view(np.int64) >> 48
        low = int(bins.min())
        weight = np.bincount(bins - low, weights=size)
        from_top = np.cumsum(weight[::-1])
        j = int(np.searchsorted(from_top, target))
        if j >= weight.size - 1:
            return None
        return bins >= low + weight.size - 1 - j
