/*
 * One sendfile for every supported platform, chosen at compile time.
 *
 * oca_sendfile() sends up to `count` bytes of `in_fd`, starting at `offset`,
 * to the socket `out_fd`. It stores the number of bytes sent in *sent and
 * returns 0, or returns -1 with errno set. *sent is meaningful on -1 too:
 * FreeBSD reports partial progress alongside EAGAIN and EINTR.
 * Neither the file position of `in_fd` nor any other state is changed.
 *
 * oca_send_response() sends one HTTP response: the head, then `count` bytes
 * of a file, resuming after the `*sent` bytes that earlier calls sent. See
 * its comment below; it is the serving path's only entry point.
 */
#ifndef OCA_SENDFILE_H
#define OCA_SENDFILE_H

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * Linux moves at most MAX_RW_COUNT = INT_MAX & PAGE_MASK = 0x7ffff000 bytes
 * per read/write/sendfile call. FreeBSD has no such limit; one cap for both
 * keeps the loops alike.
 */
#define OCA_SENDFILE_MAX ((off_t) 0x7ffff000)

/*
 * oca_send_response() result besides 0 and errno values: the file ended
 * before `offset + count` (it was truncated while being served). No errno
 * says that; the caller turns it into OSError(ENODATA).
 */
#define OCA_SEND_FILE_SHORT (-1)

/*
 * How many bytes the next step may move: what is left of the response,
 * capped by what is left of this call's budget (budget <= 0: no cap).
 */
static inline off_t
oca_send_room(off_t total, off_t sent, off_t start, off_t budget)
{
    off_t room = total - sent;

    if (budget > 0 && budget - (sent - start) < room)
        room = budget - (sent - start);
    return room;
}

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

/*
 * Sends an HTTP response: `head_len` bytes of `head`, then `count` bytes of
 * `file_fd` from `offset`, to the non-blocking or blocking socket `sock_fd`.
 * *sent counts the bytes of the whole response (head_len + count) that
 * earlier calls sent; the call resumes there and moves *sent on. It stops
 * when the response is done, when the socket is full (EAGAIN), or once
 * `budget` bytes went out in this call (budget <= 0: no cap); every send and
 * sendfile is capped at what is left of the budget, so a call never sends
 * more than `budget` bytes. EINTR is retried.
 *
 * Returns 0 (check *sent to tell done from stopped), an errno value, or
 * OCA_SEND_FILE_SHORT. Nothing is raised or longjmp'd: the caller turns the
 * value into an exception after it has taken the GIL back.
 *
 * Linux: TCP_NODELAY (set by asyncio and uvloop) would push the head out as a
 * segment of its own. send(MSG_MORE) queues it instead, and the sendfile that
 * follows appends the first body bytes and pushes: head and body share the
 * first segment. Measured on loopback: 100 + 1000 bytes, one data segment
 * with MSG_MORE, two without. MSG_MORE is only set when body bytes follow:
 * a lone corked head waits for the 200 ms cork timer before it leaves. (A
 * budget that ends inside the head leaves it corked too; the caller's next
 * call, on the next writability event, sends the body that pushes it.)
 * MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE, even if the embedding
 * process did not ignore SIGPIPE (Python does).
 */
static inline int
oca_send_response(int sock_fd, const char *head, size_t head_len,
                  int file_fd, off_t offset, off_t count,
                  off_t *sent, off_t budget)
{
    const off_t hlen = (off_t) head_len;
    const off_t total = hlen + count;
    const off_t start = *sent;
    off_t room, pos;
    ssize_t n;

    while ((room = oca_send_room(total, *sent, start, budget)) > 0) {
        if (*sent < hlen) {
            if (room > hlen - *sent)
                room = hlen - *sent;
            n = send(sock_fd, head + *sent, (size_t) room,
                     MSG_NOSIGNAL | (count > 0 ? MSG_MORE : 0));
        } else {
            if (room > OCA_SENDFILE_MAX)
                room = OCA_SENDFILE_MAX;
            pos = offset + (*sent - hlen);
            n = sendfile(sock_fd, file_fd, &pos, (size_t) room);
            if (n == 0)
                return OCA_SEND_FILE_SHORT;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return errno;
        }
        *sent += (off_t) n;
    }
    return 0;
}

#elif defined(__FreeBSD__)

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
     * The hdtr argument (headers/trailers sent in the same call) is how
     * oca_send_response() coalesces the HTTP head with the body.
     */
    *sent = 0;
    if (count == 0)
        return 0;
    return sendfile(in_fd, out_fd, offset, count, NULL, sent, 0);
}

/*
 * The contract is the Linux one above; only the coalescing differs.
 *
 * FreeBSD: struct sf_hdtr carries an iovec of header bytes that sendfile
 * sends before the file data in the same call, so the rest of the head and
 * the first body bytes leave together. sbytes counts header bytes too;
 * nbytes does not. sbytes is valid on -1 as well (EAGAIN and EINTR report
 * partial progress; EBUSY only comes with SF_NODISKIO, not used here), so it
 * is always added. nbytes == 0 would mean "to end of
 * file", so a head with no body bytes in this step goes out by send(). An
 * offset at or past the end of the file returns 0 with sbytes == 0 (or short,
 * with the next call returning 0): that is the file-shorter case.
 * MSG_MORE does not exist there and is not needed.
 * This branch cannot be compiled on the Linux CI machines; it is reviewed by
 * reading against sendfile(2) of FreeBSD 13/14, and its loop was run once on
 * Linux against a shim emulating that sendfile (docs/fastpath.md).
 */
static inline int
oca_send_response(int sock_fd, const char *head, size_t head_len,
                  int file_fd, off_t offset, off_t count,
                  off_t *sent, off_t budget)
{
    const off_t hlen = (off_t) head_len;
    const off_t total = hlen + count;
    const off_t start = *sent;
    off_t room, hpart, sbytes;
    struct iovec iov;
    struct sf_hdtr hdtr;
    int rc;

    while ((room = oca_send_room(total, *sent, start, budget)) > 0) {
        hpart = *sent < hlen ? hlen - *sent : 0;
        if (hpart >= room) {
            /* Only head bytes fit in this step (or there is no body). */
            ssize_t n = send(sock_fd, head + *sent, (size_t) room, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return errno;
            }
            *sent += (off_t) n;
            continue;
        }
        if (room - hpart > OCA_SENDFILE_MAX)
            room = hpart + OCA_SENDFILE_MAX;
        sbytes = 0;
        if (hpart > 0) {
            iov.iov_base = (void *) (head + *sent);
            iov.iov_len = (size_t) hpart;
            hdtr.headers = &iov;
            hdtr.hdr_cnt = 1;
            hdtr.trailers = NULL;
            hdtr.trl_cnt = 0;
        }
        rc = sendfile(file_fd, sock_fd, offset + (*sent + hpart - hlen),
                      (size_t) (room - hpart), hpart > 0 ? &hdtr : NULL,
                      &sbytes, 0);
        *sent += sbytes;
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return errno;
        }
        if (sbytes <= hpart)
            return OCA_SEND_FILE_SHORT;
    }
    return 0;
}

#else
#error "oca_sendfile: no sendfile implementation for this platform (Linux and FreeBSD only)"
#endif

#endif /* OCA_SENDFILE_H */
