# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The greedy pass of placement.py as one C loop: its pure-Python twin is
`placement._Greedy` (numpy, vectorized by runs), and the two give the same placements
(tests/fill/test_placement.py runs every case on both).

Rows come in the pass's order (value density descending, row index ascending). Each goes
to the first `want` appliances of its preference list on which it fits on some tier
(and, for a charged row, within that appliance's churn budget), on the first tier in
TIERS order where it fits. Preference lists, in rendezvous order (score descending, ties
by position; score = splitmix64(h(object) ^ h(appliance)), rendezvous.py):

* a keep row (not charged) tries the appliances that held it: all of them when it wants
  at least as many (any order gives the same result), else the first `want` of them;
* a charged row tries the appliances that did not hold it (every one, when nothing
  was held).
"""

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

import numpy as np


cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EB
    return x ^ (x >> 31)


cdef inline bint _fit(int64_t s, Py_ssize_t g, bint charged, int64_t *room,
                      int64_t *budget, Py_ssize_t n_tiers, Py_ssize_t *tier) noexcept nogil:
    """Place s on appliance g's first tier with room (and within its budget if charged).
    Raw pointers: a memoryview argument would be reference-counted on every call."""
    cdef Py_ssize_t t
    cdef int64_t *r = room + g * n_tiers
    if charged and s > budget[g]:
        return False
    for t in range(n_tiers):
        if s <= r[t]:
            r[t] -= s
            if charged:
                budget[g] -= s
            tier[0] = t
            return True
    return False


cdef inline int64_t _room_max(int64_t *room, Py_ssize_t g, Py_ssize_t n_tiers) noexcept nogil:
    cdef int64_t m = room[g * n_tiers]
    cdef Py_ssize_t t
    for t in range(1, n_tiers):
        if room[g * n_tiers + t] > m:
            m = room[g * n_tiers + t]
    return m


def run(const int64_t[::1] want, const uint8_t[::1] charged, const int64_t[::1] size,
        const uint8_t[:, ::1] held, bint any_held, const uint64_t[::1] obj_h,
        const uint64_t[::1] app_h, int64_t[:, ::1] room, int64_t[::1] budget):
    """Place the rows, given in pass order as columns (*held* [rows, appliances], ignored
    unless *any_held*; *obj_h* the object hash of each row); returns (row position,
    appliance, tier) int64 arrays of every placement. *room* [appliances, tiers] and
    *budget* [appliances] are updated in place."""
    cdef Py_ssize_t n = want.shape[0], n_apps = app_h.shape[0], n_tiers = room.shape[1]
    cdef Py_ssize_t cap_out = 0, i
    for i in range(n):
        cap_out += want[i] if want[i] < n_apps else n_apps
    out_row = np.empty(cap_out, dtype=np.int64)
    out_app = np.empty(cap_out, dtype=np.int64)
    out_tier = np.empty(cap_out, dtype=np.int64)
    cdef int64_t[::1] o_row = out_row, o_app = out_app, o_tier = out_tier
    cdef uint64_t *score = <uint64_t *>malloc(max(n_apps, 1) * sizeof(uint64_t))
    cdef uint8_t *open_ = <uint8_t *>malloc(max(n_apps, 1) * sizeof(uint8_t))
    if score == NULL or open_ == NULL:
        free(score)
        free(open_)
        raise MemoryError()
    cdef Py_ssize_t k = 0, r, c, g, best, placed, tried, n_held, limit, n_open, t = 0
    cdef int64_t *roomp = &room[0, 0] if room.shape[0] and n_tiers else NULL
    cdef int64_t *budgetp = &budget[0] if budget.shape[0] else NULL
    cdef int64_t s, w
    cdef bint ch, keep_all, is_held
    cdef uint64_t oh
    try:
        with nogil:
            for i in range(n):
                r = i
                w = want[r]
                if w <= 0:
                    continue
                c = i
                s = size[r]
                ch = charged[r] != 0
                n_held = 0
                if any_held:
                    for g in range(n_apps):
                        n_held += held[c, g]
                keep_all = (not ch) and n_held <= w
                if keep_all:  # every holder, in any order
                    placed = 0
                    for g in range(n_apps):
                        if placed == w:
                            break
                        if held[c, g] and _fit(s, g, False, roomp, budgetp, n_tiers, &t):
                            o_row[k] = r
                            o_app[k] = g
                            o_tier[k] = t
                            k += 1
                            placed += 1
                    continue
                # Candidates in rendezvous order: holders (keep row) or the others. A
                # charged row skips appliances it cannot fit on (trying them would fail:
                # same result, and a row that fits nowhere costs a pass over the
                # appliances); a keep row's first `want` holders count even when full.
                oh = obj_h[c]
                n_open = 0
                for g in range(n_apps):
                    is_held = any_held and held[c, g] != 0
                    open_[g] = is_held != ch
                    if open_[g] and ch:
                        open_[g] = s <= budgetp[g] and _room_max(roomp, g, n_tiers) >= s
                    if open_[g]:
                        score[g] = _mix(oh ^ app_h[g])
                        n_open += 1
                if n_open == 0:
                    continue
                limit = w if not ch else n_apps  # a keep row tries its first `want` holders
                placed = 0
                tried = 0
                while placed < w and tried < limit:
                    best = -1
                    for g in range(n_apps):
                        if open_[g] and (best < 0 or score[g] > score[best]):
                            best = g
                    if best < 0:
                        break
                    open_[best] = 0
                    tried += 1
                    if _fit(s, best, ch, roomp, budgetp, n_tiers, &t):
                        o_row[k] = r
                        o_app[k] = best
                        o_tier[k] = t
                        k += 1
                        placed += 1
    finally:
        free(score)
        free(open_)
    return out_row[:k], out_app[:k], out_tier[:k]


def admit(const int64_t[::1] size, const int64_t[:, ::1] options,
          const int64_t[:, ::1] table, int64_t[::1] room):
    """backbone._admit as one loop: transfer i, in order, takes the first of its
    *options* (route ids, -1 none) whose links (a row of *table*, padded with the last
    link, which is never charged) all have *size[i]* bytes of room, and charges them;
    returns the option taken per transfer (-1: deferred). *room* is updated in place."""
    cdef Py_ssize_t n = size.shape[0], k = options.shape[1], hops = table.shape[1]
    cdef Py_ssize_t pad = room.shape[0] - 1, i, o, h
    cdef int64_t s, route, link
    cdef bint fits
    taken_arr = np.full(n, -1, dtype=np.int8)
    cdef signed char[::1] taken = taken_arr
    with nogil:
        for i in range(n):
            s = size[i]
            for o in range(k):
                route = options[i, o]
                if route < 0:
                    continue
                fits = True
                for h in range(hops):
                    link = table[route, h]
                    if link != pad and room[link] < s:
                        fits = False
                        break
                if fits:
                    for h in range(hops):
                        link = table[route, h]
                        if link != pad:
                            room[link] -= s
                    taken[i] = <signed char>o
                    break
    return taken_arr


def object_lines(const unsigned char[::1] heads, const int64_t[::1] head_at,
                 const unsigned char[::1] mids, const int64_t[::1] mid_at,
                 const unsigned char[::1] tails, const int64_t[::1] tail_at,
                 const int64_t[::1] objs, const int64_t[::1] code):
    """manifest._object_lines as one copy: line i is head[objs[i]] + mid[code[i]] +
    tail[objs[i]], each part a slice of its buffer (part j: at[j]..at[j + 1]); every tail
    ends with ",\\n", which the last line replaces with "\\n"."""
    cdef Py_ssize_t n = objs.shape[0], i, total = 0, pos = 0, a, b, c
    if n == 0:
        return b""
    for i in range(n):
        total += (head_at[objs[i] + 1] - head_at[objs[i]]) + (mid_at[code[i] + 1]
                  - mid_at[code[i]]) + (tail_at[objs[i] + 1] - tail_at[objs[i]])
    out = bytearray(total - 1)
    cdef unsigned char[::1] buf = out
    with nogil:
        for i in range(n):
            a = objs[i]
            c = code[i]
            b = head_at[a + 1] - head_at[a]
            memcpy(&buf[pos], &heads[head_at[a]], b)
            pos += b
            b = mid_at[c + 1] - mid_at[c]
            memcpy(&buf[pos], &mids[mid_at[c]], b)
            pos += b
            b = tail_at[a + 1] - tail_at[a]
            if i == n - 1:
                b -= 2  # the last line: no comma
            memcpy(&buf[pos], &tails[tail_at[a]], b)
            pos += b
        buf[pos] = 10  # "\n"
    return out


cdef struct _Run:
    const double *key
    const int32_t *obj
    const int32_t *dst
    const int8_t *via
    int8_t *taken
    Py_ssize_t at, n
    int64_t bb_route, origin_route


cdef inline bint _before(_Run *runs, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Run a's next row comes before run b's: (key, obj, dst) ascending."""
    cdef _Run *x = &runs[a]
    cdef _Run *y = &runs[b]
    cdef double kx = x.key[x.at], ky = y.key[y.at]
    if kx != ky:
        return kx < ky
    if x.obj[x.at] != y.obj[y.at]:
        return x.obj[x.at] < y.obj[y.at]
    return x.dst[x.at] < y.dst[y.at]


cdef inline void _sift_down(_Run *runs, Py_ssize_t *heap, Py_ssize_t size,
                            Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t child, top = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(runs, heap[child + 1], heap[child]):
            child += 1
        if not _before(runs, heap[child], top):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = top


cdef inline bint _take(int64_t route, int64_t s, const int64_t[:, ::1] table,
                       int64_t[::1] room, Py_ssize_t pad) noexcept nogil:
    cdef Py_ssize_t h, hops = table.shape[1]
    cdef int64_t link
    if route < 0:
        return False
    for h in range(hops):
        link = table[route, h]
        if link != pad and room[link] < s:
            return False
    for h in range(hops):
        link = table[route, h]
        if link != pad:
            room[link] -= s
    return True


def admit_sites(list firsts, list taken, const int64_t[::1] size,
                const int64_t[:, ::1] table, int64_t[::1] room):
    """backbone.Fleet.admit as one loop: the sites' first copies (`FirstCopies`, each
    sorted by (key, obj, dst)) merged through a heap in that order, each taking its
    upstream option (when `via` > 0) or else its origin option if the whole route has
    room. *taken* (one int8 array per site, -1 filled) and *room* are updated."""
    cdef Py_ssize_t k = len(firsts), i, size_h = 0, pad = room.shape[0] - 1, r
    cdef _Run *runs = <_Run *>malloc(max(k, 1) * sizeof(_Run))
    cdef Py_ssize_t *heap = <Py_ssize_t *>malloc(max(k, 1) * sizeof(Py_ssize_t))
    cdef const double[::1] key_v
    cdef const int32_t[::1] obj_v, dst_v
    cdef const int8_t[::1] via_v
    cdef int8_t[::1] taken_v
    cdef _Run *run
    cdef int64_t s
    if runs == NULL or heap == NULL:
        free(runs)
        free(heap)
        raise MemoryError()
    try:
        for i in range(k):
            f = firsts[i]
            runs[i].n = len(f.obj)
            runs[i].at = 0
            runs[i].bb_route = f.bb_route
            runs[i].origin_route = f.origin_route
            if runs[i].n == 0:
                continue
            key_v = f.key
            obj_v = f.obj
            dst_v = f.dst
            via_v = f.via
            taken_v = taken[i]
            runs[i].key = &key_v[0]
            runs[i].obj = &obj_v[0]
            runs[i].dst = &dst_v[0]
            runs[i].via = &via_v[0]
            runs[i].taken = &taken_v[0]
            heap[size_h] = i
            size_h += 1
        with nogil:
            i = size_h // 2
            while i > 0:
                i -= 1
                _sift_down(runs, heap, size_h, i)
            while size_h > 0:
                r = heap[0]
                run = &runs[r]
                s = size[run.obj[run.at]]
                if run.via[run.at] > 0 and _take(run.bb_route, s, table, room, pad):
                    run.taken[run.at] = 0
                elif _take(run.origin_route, s, table, room, pad):
                    run.taken[run.at] = 1
                run.at += 1
                if run.at == run.n:
                    size_h -= 1
                    heap[0] = heap[size_h]
                if size_h > 0:
                    _sift_down(runs, heap, size_h, 0)
    finally:
        free(runs)
        free(heap)


def argsort(const double[::1] key):
    """np.argsort(key, kind="stable") for float64 keys by LSD radix on the keys' bits (16
    bits a pass, passes where all keys share the digit skipped): ~3x numpy's sorts on
    10^6 keys. -0.0 sorts as 0.0 and every NaN last, as numpy's."""
    cdef Py_ssize_t n = key.shape[0], i, b, shift, pos
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    cdef int64_t[::1] res = out
    cdef uint64_t *k1 = <uint64_t *>malloc(n * sizeof(uint64_t))
    cdef uint64_t *k2 = <uint64_t *>malloc(n * sizeof(uint64_t))
    cdef int64_t *i1 = <int64_t *>malloc(n * sizeof(int64_t))
    cdef int64_t *i2 = <int64_t *>malloc(n * sizeof(int64_t))
    cdef Py_ssize_t *count = <Py_ssize_t *>malloc(65536 * sizeof(Py_ssize_t))
    cdef uint64_t bits, *kt
    cdef int64_t *it
    cdef double x
    if k1 == NULL or k2 == NULL or i1 == NULL or i2 == NULL or count == NULL:
        free(k1); free(k2); free(i1); free(i2); free(count)
        raise MemoryError()
    try:
        with nogil:
            for i in range(n):
                x = key[i] + 0.0  # -0.0 -> 0.0
                if x != x:
                    bits = <uint64_t>0xFFFFFFFFFFFFFFFF  # NaN: last
                else:
                    memcpy(&bits, &x, 8)
                    if bits >> 63:
                        bits = ~bits
                    else:
                        bits |= (<uint64_t>1) << 63
                k1[i] = bits
                i1[i] = i
            for shift in range(0, 64, 16):
                memset(count, 0, 65536 * sizeof(Py_ssize_t))
                for i in range(n):
                    count[(k1[i] >> shift) & 0xFFFF] += 1
                if count[(k1[0] >> shift) & 0xFFFF] == n:
                    continue  # one digit for all: the order stands
                pos = 0
                for b in range(65536):
                    pos += count[b]
                    count[b] = pos - count[b]
                for i in range(n):
                    b = (k1[i] >> shift) & 0xFFFF
                    k2[count[b]] = k1[i]
                    i2[count[b]] = i1[i]
                    count[b] += 1
                kt = k1; k1 = k2; k2 = kt
                it = i1; i1 = i2; i2 = it
            for i in range(n):
                res[i] = i1[i]
    finally:
        free(k1); free(k2); free(i1); free(i2); free(count)
    return out


cdef inline Py_ssize_t _lit(const unsigned char *b, Py_ssize_t at, Py_ssize_t end,
                            const char *s, Py_ssize_t n) noexcept nogil:
    """at + n when b[at:at + n] is the literal s, else -1."""
    if at < 0 or at + n > end or memcmp(b + at, s, n) != 0:
        return -1
    return at + n


cdef inline Py_ssize_t _digits(const unsigned char *b, Py_ssize_t at,
                               Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t start = at
    while at < end and 48 <= b[at] <= 57:
        at += 1
    return at if at > start else -1


cdef inline int _cmp_key(const unsigned char *key, Py_ssize_t width, const unsigned char *s,
                         Py_ssize_t n) noexcept nogil:
    """Order of a NUL-padded catalog key and the id s[:n], as numpy compares bytes."""
    cdef Py_ssize_t klen = 0, m
    cdef int c
    while klen < width and key[klen] != 0:
        klen += 1
    m = klen if klen < n else n
    c = memcmp(key, s, m)
    if c != 0:
        return c
    return (klen > n) - (klen < n)


def scan_manifest(const unsigned char[::1] body, const unsigned char[::1] keys,
                  Py_ssize_t width):
    """The object lines of a manifest as write_manifests writes them (the grammar of
    manifest._OBJECT_LINE, a comma after every line but the last), ids ascending: (start,
    end) of each id in *body* and its number among *keys* (the catalog's sorted ids,
    *width* bytes each, NUL-padded; -1 when absent), or None for anything else."""
    cdef Py_ssize_t end = body.shape[0], n_keys = keys.shape[0] // width if width else 0
    cdef Py_ssize_t lines = 0, i, at, s, e, j = 0, lo, hi, step, mid
    cdef const unsigned char *b = &body[0] if end else NULL
    cdef const unsigned char *k = &keys[0] if n_keys else NULL
    cdef const unsigned char *prev_id = NULL
    cdef Py_ssize_t prev_n = 0, m
    cdef int c
    for i in range(end):
        if b[i] == 10:
            lines += 1
    starts_a = np.empty(lines, dtype=np.int64)
    ends_a = np.empty(lines, dtype=np.int64)
    nums_a = np.empty(lines, dtype=np.int64)
    cdef int64_t[::1] starts = starts_a, ends = ends_a, nums = nums_a
    cdef bint ok = True
    with nogil:
        at = 0
        for i in range(lines):
            at = _lit(b, at, end, b'{"id":"', 7)
            if at < 0:
                ok = False
                break
            s = at
            while at < end and b[at] != 34 and b[at] != 92 and b[at] >= 32:
                at += 1
            e = at
            at = _lit(b, at, end, b'","size":', 9)
            at = _digits(b, at, end) if at >= 0 else -1
            at = _lit(b, at, end, b',"source":"', 11)
            while at >= 0 and at < end and b[at] != 34 and b[at] >= 32:
                if b[at] == 92:  # an escape: any byte but a newline after it
                    if at + 1 >= end or b[at + 1] == 10:
                        at = -1
                        break
                    at += 1
                at += 1
            at = _lit(b, at, end, b'","tier":"', 10)
            if at >= 0:
                if _lit(b, at, end, b'ssd', 3) >= 0:
                    at += 3
                elif _lit(b, at, end, b'hdd', 3) >= 0:
                    at += 3
                elif _lit(b, at, end, b'flash', 5) >= 0:
                    at += 5
                else:
                    at = -1
            at = _lit(b, at, end, b'","wave":', 9)
            at = _digits(b, at, end) if at >= 0 else -1
            at = _lit(b, at, end, b',"xxh3":', 8)
            if at >= 0:
                if _lit(b, at, end, b'null', 4) >= 0:
                    at += 4
                elif at + 34 <= end and b[at] == 34 and b[at + 33] == 34:
                    for m in range(at + 1, at + 33):
                        if not (48 <= b[m] <= 57 or 97 <= b[m] <= 102):
                            at = -1
                            break
                    if at >= 0:
                        at += 34
                else:
                    at = -1
            at = _lit(b, at, end, b'}', 1)
            if at >= 0 and i < lines - 1:
                at = _lit(b, at, end, b',', 1)
            at = _lit(b, at, end, b'\n', 1)
            if at < 0:
                ok = False
                break
            # ids strictly ascending (as bytes), as write_manifests orders them
            if prev_id != NULL:
                m = prev_n if prev_n < e - s else e - s
                c = memcmp(prev_id, b + s, m)
                if c > 0 or (c == 0 and prev_n >= e - s):
                    ok = False
                    break
            prev_id = b + s
            prev_n = e - s
            starts[i] = s
            ends[i] = e
            # the first key >= the id, galloping on from the last one found
            step = 1
            lo = j
            hi = j
            while hi < n_keys and _cmp_key(k + hi * width, width, b + s, e - s) < 0:
                lo = hi + 1
                hi = hi + step
                step *= 2
            if hi > n_keys:
                hi = n_keys
            while lo < hi:
                mid = (lo + hi) // 2
                if _cmp_key(k + mid * width, width, b + s, e - s) < 0:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo
            if j < n_keys and _cmp_key(k + j * width, width, b + s, e - s) == 0:
                nums[i] = j
            else:
                nums[i] = -1
        if ok and at != end:
            ok = False
    if not ok:
        return None
    return starts_a, ends_a, nums_a
