/*
 * One sendfile for every supported platform, chosen at compile time.
 *
 * oca_sendfile() sends up to `count` bytes of `in_fd`, starting at `offset`,
 * to the socket `out_fd`. It stores the number of bytes sent in *sent and
 * returns 0, or returns -1 with errno set. *sent is meaningful on -1 too:
 * FreeBSD reports partial progress alongside EAGAIN and EINTR.
 * Neither the file position of `in_fd` nor any other state is changed.
 */
#ifndef OCA_SENDFILE_H
#define OCA_SENDFILE_H

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>

#if defined(__linux__)

#include <sys/sendfile.h>

static inline int
oca_sendfile(int out_fd, int in_fd, off_t offset, size_t count, off_t *sent)
{
    /*
     * Linux transfers at most 0x7ffff000 bytes (MAX_RW_COUNT) per call and
     * returns the short count; callers loop. A non-blocking socket that is
     * full returns the bytes already queued, or -1/EAGAIN when none were.
     * A reply of 0 means `offset` is at or past the end of the file.
     */
    ssize_t n = sendfile(out_fd, in_fd, &offset, count);

    if (n < 0) {
        *sent = 0;
        return -1;
    }
    *sent = (off_t) n;
    return 0;
}

#elif defined(__FreeBSD__)

#include <sys/socket.h>
#include <sys/uio.h>

static inline int
oca_sendfile(int out_fd, int in_fd, off_t offset, size_t count, off_t *sent)
{
    /*
     * FreeBSD takes the file first and the socket second. nbytes == 0 means
     * "up to the end of the file", so a zero count must not reach the kernel.
     * On a non-blocking socket a partial send returns -1/EAGAIN *with*
     * sbytes set; EINTR and EBUSY likewise report progress in sbytes.
     * An offset past the end of the file succeeds with sbytes == 0.
     * The hdtr argument (headers/trailers sent in the same call) is how the
     * serving path will coalesce the HTTP head with the body.
     */
    *sent = 0;
    if (count == 0)
        return 0;
    return sendfile(in_fd, out_fd, offset, count, NULL, sent, 0);
}

#else
#error "oca_sendfile: no sendfile implementation for this platform (Linux and FreeBSD only)"
#endif

#endif /* OCA_SENDFILE_H */
