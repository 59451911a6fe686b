# llhttp, the HTTP/1.1 parser of Node.js (and of httptools, which the twin uses), called
# from C by the compiled connection loop: its callbacks are C functions, so no Python
# object is made for a field the loop does not act on. The sources are built into
# _connection (setup.py finds them: Debian's node-llhttp, or a system libllhttp).
from libc.stdint cimport uint8_t, uint16_t, uint64_t


cdef extern from "llhttp.h":
    # The callbacks run with the GIL held (the loop calls llhttp_execute holding it).
    ctypedef struct llhttp_t:
        void *data
        uint64_t content_length
        uint8_t method
        uint8_t http_major
        uint8_t http_minor
        uint8_t upgrade
        uint16_t flags

    ctypedef int (*llhttp_data_cb)(llhttp_t *, const char *at, size_t length) noexcept
    ctypedef int (*llhttp_cb)(llhttp_t *) noexcept

    ctypedef struct llhttp_settings_t:
        llhttp_cb on_message_begin
        llhttp_data_cb on_url
        llhttp_data_cb on_header_field
        llhttp_data_cb on_header_value
        llhttp_cb on_header_field_complete
        llhttp_cb on_header_value_complete
        llhttp_cb on_headers_complete
        llhttp_data_cb on_body
        llhttp_cb on_message_complete


cdef extern from "llhttp.h" nogil:
    ctypedef enum llhttp_type_t:
        HTTP_REQUEST

    ctypedef enum llhttp_errno_t:
        HPE_OK
        HPE_INVALID_METHOD
        HPE_PAUSED_UPGRADE
        HPE_USER

    ctypedef enum llhttp_method_t:
        HTTP_GET

    void llhttp_settings_init(llhttp_settings_t *settings)
    void llhttp_init(llhttp_t *parser, llhttp_type_t type, const llhttp_settings_t *settings)
    void llhttp_reset(llhttp_t *parser)
    llhttp_errno_t llhttp_execute(llhttp_t *parser, const char *data, size_t len)
    int llhttp_should_keep_alive(const llhttp_t *parser)
    void llhttp_resume_after_upgrade(llhttp_t *parser)
    const char *llhttp_method_name(llhttp_method_t method)
