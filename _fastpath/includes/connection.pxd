# C declarations for _connection.pyx beyond Cython's own libc/posix ones.

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)
    int shutdown(int sockfd, int how)
    int SHUT_WR

cdef extern from "oca_poll.h" nogil:
    int oca_poll_create()
    int oca_poll_add(int pfd, int fd)
    int oca_poll_want(int pfd, int fd, int write)
    int oca_poll_del(int pfd, int fd)
    int oca_poll_wait(int pfd, int *fds, int n)
