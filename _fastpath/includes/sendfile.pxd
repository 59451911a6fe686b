# C declarations for _sendfile.pyx. The platform's sendfile (Linux
# <sys/sendfile.h> or FreeBSD <sys/socket.h>) is selected at compile time in
# oca_sendfile.h; declaring either here would #include it on every platform.

cdef extern from "<errno.h>":
    int errno
    enum:
        EAGAIN
        EINTR

cdef extern from "<sys/types.h>":
    ctypedef long long off_t

cdef extern from "oca_sendfile.h" nogil:
    enum:
        OCA_SEND_FILE_SHORT
    int oca_sendfile(int out_fd, int in_fd, off_t offset, size_t count, off_t *sent)
    int oca_send_response(int sock_fd, const char *head, size_t head_len,
                          int file_fd, off_t offset, off_t count,
                          off_t *sent, off_t budget)
