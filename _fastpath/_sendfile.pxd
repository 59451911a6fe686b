# The C-level interface of _sendfile.pyx, for the compiled connection loop (_connection.pyx):
# a call with no Python call around it.

cdef long long send_response_c(int sock_fd, bytes head, int file_fd, long long offset,
                               long long count, long long sent, long long budget) except -1
