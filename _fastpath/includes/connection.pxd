# C declarations for _connection.pyx beyond Cython's own libc/posix ones.

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)
