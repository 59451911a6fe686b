/* Readiness of many sockets through one descriptor the event loop watches: epoll on
 * Linux, kqueue on FreeBSD, chosen at build time. The connection loop registers a
 * connection's socket here instead of with the event loop's add_reader, which costs about
 * 730 bytes per fd in uvloop (a libuv poll handle, a Handle and a bound method; measured
 * with 5,000 socket pairs); here a socket costs the kernel's entry and 8 bytes of the
 * connection table. Level-triggered: a socket with bytes left after a read is reported
 * again by the next wait.
 *
 * A socket is watched in one direction at a time: for reading, or (while a response
 * waits for room in the socket, or has spent its sendfile_max_chunk) for writing; the
 * connection knows which, so the wait returns fds only. Switching is one epoll_ctl
 * (EPOLL_CTL_MOD) or one kevent call. Going through uvloop's add_writer/remove_writer
 * instead cost 33-39% of a worker's user time on 2 MiB objects (perf, 2026-12-08: a
 * new libuv poll handle, a Handle and a WeakValueDictionary look-up in Python per call).
 * Each function returns 0 (or a count) or -1 with errno set.
 */
#ifndef OCA_POLL_H
#define OCA_POLL_H

#include <errno.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/epoll.h>

static int oca_poll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

static int oca_poll_add(int pfd, int fd) {
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    ev.data.fd = fd;
    return epoll_ctl(pfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Watch fd (added before) for writing (write != 0) or for reading. */
static int oca_poll_want(int pfd, int fd, int write) {
    struct epoll_event ev;
    ev.events = write ? EPOLLOUT : EPOLLIN;
    ev.data.u64 = 0;
    ev.data.fd = fd;
    return epoll_ctl(pfd, EPOLL_CTL_MOD, fd, &ev);
}

/* Stop watching fd, whichever way it was watched. */
static int oca_poll_del(int pfd, int fd) {
    struct epoll_event ev;  /* ignored, but kernels before 2.6.9 want non-NULL */
    return epoll_ctl(pfd, EPOLL_CTL_DEL, fd, &ev);
}

/* Up to n ready fds into fds, without blocking; their count. */
static int oca_poll_wait(int pfd, int *fds, int n) {
    struct epoll_event evs[256];
    int i, got;
    if (n > 256) n = 256;
    do got = epoll_wait(pfd, evs, n, 0); while (got < 0 && errno == EINTR);
    for (i = 0; i < got; i++) fds[i] = evs[i].data.fd;
    return got;
}

#elif defined(__FreeBSD__)
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#include <fcntl.h>

static int oca_poll_create(void) {
    int kq = kqueue();
    if (kq >= 0 && fcntl(kq, F_SETFD, FD_CLOEXEC) < 0) {
        int e = errno;
        close(kq);
        errno = e;
        return -1;
    }
    return kq;
}

static int oca_poll_add(int pfd, int fd) {
    struct kevent ev[2];
    EV_SET(&ev[0], fd, EVFILT_READ, EV_ADD, 0, 0, NULL);
    EV_SET(&ev[1], fd, EVFILT_WRITE, EV_ADD | EV_DISABLE, 0, 0, NULL);
    return kevent(pfd, ev, 2, NULL, 0, NULL);
}

/* Both filters stay registered; the one not wanted is disabled (EV_DISABLE keeps the
 * knote, so switching allocates nothing). */
static int oca_poll_want(int pfd, int fd, int write) {
    struct kevent ev[2];
    EV_SET(&ev[0], fd, EVFILT_READ, write ? EV_DISABLE : EV_ENABLE, 0, 0, NULL);
    EV_SET(&ev[1], fd, EVFILT_WRITE, write ? EV_ENABLE : EV_DISABLE, 0, 0, NULL);
    return kevent(pfd, ev, 2, NULL, 0, NULL);
}

static int oca_poll_del(int pfd, int fd) {
    struct kevent ev[2];
    EV_SET(&ev[0], fd, EVFILT_READ, EV_DELETE, 0, 0, NULL);
    EV_SET(&ev[1], fd, EVFILT_WRITE, EV_DELETE, 0, 0, NULL);
    return kevent(pfd, ev, 2, NULL, 0, NULL);
}

static int oca_poll_wait(int pfd, int *fds, int n) {
    struct kevent evs[256];
    struct timespec zero = {0, 0};
    int i, got;
    if (n > 256) n = 256;
    do got = kevent(pfd, NULL, 0, evs, n, &zero); while (got < 0 && errno == EINTR);
    for (i = 0; i < got; i++) fds[i] = (int)evs[i].ident;
    return got;
}

#else
#error "oca_poll.h: epoll (Linux) or kqueue (FreeBSD) needed"
#endif

#endif
