# The typed interface of the compiled connection loop (_connection.pyx): what it reads of
# the object table's entries, the response descriptor Python hands it, and what one
# worker's connections share. The twin (_pyconnection.py) has the same classes; their
# Python interface is _fastpath/__init__.pyi. Nothing outside _fastpath reads the fields
# below that are not public.

cdef class Entry:
    # An object open for serving. oca.http.objects.OpenObject is its Python subclass.
    cdef public str id
    cdef public int fd
    cdef public long long size
    cdef public bytes url               # b"/o/<id>": the target a plain GET names
    cdef public str tier
    cdef public long long hits          # responses sent from this entry
    cdef public long long body_bytes    # their body bytes that went out
    # Handler.render_heads, for the epoch second [head_from, head_until).
    cdef public bytes head200, head206, head_slice, head_slice_mid
    cdef public double head_from, head_until
    # Access-log pieces (oca.http.accesslog: object_prefix, json_str, plain_get_fragments).
    cdef public str log_get, log_head, log_tier
    cdef public tuple log_plain
    cdef Py_ssize_t tier_slot           # the metrics index of its tier's body bytes, -1: unknown
    cdef Entry prev, next               # EntryTable's LRU list


cdef class EntryTable:
    cdef readonly Py_ssize_t capacity
    cdef dict by_id, by_url_
    cdef Entry first, last              # least and most recently used
    cdef Entry lookup_url(self, bytes url)
    cdef void unlink(self, Entry entry) noexcept
    cdef void append(self, Entry entry) noexcept


cdef class Response:
    # A response decided in Python: head (its first head_len bytes the head, the rest a
    # short body), count bytes of entry's file from offset, then each of parts,
    # (part_head, offset, count).
    cdef public int status
    cdef public bytes head
    cdef public Entry entry
    cdef public long long offset, count
    cdef public list parts
    cdef public bint keep_alive
    cdef public Py_ssize_t head_len
    cdef public str method, oid, range, path
    cdef public str scope               # the token's scope when not viewer ("fill")
    cdef public double t0
    cdef long long sent                 # of the current segment
    cdef long long done                 # of the segments before it
    cdef Py_ssize_t part                # 0, then 1 + the index in parts
    cdef bint aborted
    cdef bint own                       # decided by the loop: its log line is made in C


cdef class Shared:
    cdef readonly object server, handler, loop
    cdef EntryTable entries
    cdef object access_log
    cdef list counts                    # WorkerMetrics.counts
    # Counts kept in C (counts' order: counters, then seconds), folded into counts by
    # fold() when WorkerMetrics publishes.
    cdef long long ccounts[64]
    cdef double cseconds
    cdef Py_ssize_t counter_count
    # AccessLog.lines and appliance_json: lines are put together here (log_own), in
    # log_buf (log_len bytes), moved into log_lines by move_log; log_pending: lines
    # made here since the last flush.
    cdef list log_lines
    cdef str log_appliance
    cdef char *log_buf
    cdef Py_ssize_t log_len, log_pending
    cdef object metrics_slots           # WorkerMetrics.slots
    cdef dict status_slots
    cdef bint logging
    cdef object wanted
    cdef double header_timeout, keepalive_timeout, send_timeout
    cdef Py_ssize_t max_head_size, max_header_size, max_url_size, max_ranges, log_max_lines
    cdef long long budget
    cdef list pool                      # Readers between requests
    # Readiness of every connection, through one fd (includes/oca_poll.h): each watched
    # for reading, or for writing while a response waits; by_fd[fd] is the (borrowed)
    # Connection on fd, NULL for none.
    cdef int poll_fd
    cdef void **by_fd
    cdef Py_ssize_t by_fd_size
    cdef Py_ssize_t slot_200, slot_206, slot_fastpath, slot_bucket0, slot_seconds
    cdef Py_ssize_t slot_no_tier, bucket_count
    cdef double bucket_bounds[64]
    cdef int watch(self, int fd, object conn) except -1
    cdef int want(self, int fd, bint write) except -1
    cdef void unwatch(self, int fd) noexcept
    # The Date value (29 bytes) of the heads Handler.render_heads rendered last, for the
    # epoch second [date_from, date_from + 1): other entries' heads are redated with it.
    cdef char date[29]
    cdef double date_from
    cdef int heads(self, Entry entry, double now) except -1
    cdef Py_ssize_t status_slot(self, int status) except -1
    cdef int count(self, int status, Entry entry, long long body, double dur) except -1
    cdef int move_log(self) except -1
    cdef int log_own(self, Entry entry, int status, str rng, long long body, double dur,
                     str client_json) except -1
