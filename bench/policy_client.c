/* The policy bench's load generator in C (bench/policy.py --client c compiles it with gcc -O2).
 *
 * It does what drive() in bench/policy.py does, as postfix's smtpd processes do: N unix-socket
 * connections, one outstanding request per connection (the next request on a connection is sent
 * only after the previous answer on it was read); an open loop at a fixed rate (each request is
 * due on a schedule and drawn to a connection at random; one whose connection still waits for an
 * answer waits too and is sent when that answer comes, so latency is measured both from the send
 * and from when it was due: no coordinated omission), or a closed loop (rate 0: every connection
 * sends its next request as soon as its answer comes). Why C: the Python generator shares the
 * 2 cores with the service it measures, and its own scheduling and per-answer work sat inside
 * every client-side figure; this one costs a few microseconds a request.
 *
 * The request bytes come from Python (request() in bench/policy.py), written to a file, each
 * request ending with its empty line ("\n\n", which a request has nowhere else), so the bytes
 * are the same by construction. Timing: CLOCK_MONOTONIC (what Python's perf_counter reads), and
 * epoll_pwait2's nanosecond timeout, so that requests leave when due rather than in a
 * millisecond's burst (epoll_wait's timeout is whole milliseconds).
 *
 * Usage: policy_client SOCKET CONNS SECONDS RATE SEED REQUESTS_FILE OUT_FILE [TICK_US]
 * OUT_FILE gets: 6 int64 (answers, latency samples, lateness samples, connections closed by the
 * server, epoll waits, voluntary context switches: its sleeps), 2 doubles (user and system CPU seconds of this process), then the doubles (seconds): latencies from
 * the send, latencies from when due (as many), lateness of each send after its due time.
 * Exit status: 0 done, 2 usage, 3 setup failed (message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    double *v;
    size_t n, cap;
} vec;

static void push(vec *a, double x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 65536;
        a->v = realloc(a->v, a->cap * sizeof(double));
        if (!a->v) {
            perror("realloc");
            exit(3);
        }
    }
    a->v[a->n++] = x;
}

/* the due times queued on one connection while it waits for its answer (a growable ring) */
typedef struct {
    double *v;
    size_t head, n, cap;
} ring;

static void ring_push(ring *r, double x) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        double *v = malloc(cap * sizeof(double));
        if (!v) {
            perror("malloc");
            exit(3);
        }
        for (size_t i = 0; i < r->n; i++)
            v[i] = r->v[(r->head + i) % r->cap];
        free(r->v);
        r->v = v, r->head = 0, r->cap = cap;
    }
    r->v[(r->head + r->n++) % r->cap] = x;
}

static double ring_pop(ring *r) {
    double x = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->n--;
    return x;
}

typedef struct {
    int fd;
    int busy, dead;
    char last; /* the last byte read of the current answer: an answer ends with "\n\n" */
    double sent_at, due_at;
    ring waiting;
} conn;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of this process: user (its own work) and system (the kernel's: the sockets'
 * sends, which include waking the service, receives and epoll) */
static long switches; /* voluntary context switches (its sleeps) so far */
static void cpu_seconds(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    switches = ru.ru_nvcsw;
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* splitmix64: the open loop's draw of a connection (Python's uses random.Random(seed)) */
static uint64_t rng_state;
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static char **reqs;
static size_t *req_len;
static size_t nreqs;

static void load_requests(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(3);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(size + 1);
    if (!buf || fread(buf, 1, size, f) != (size_t)size) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(3);
    }
    fclose(f);
    size_t cap = 1024;
    reqs = malloc(cap * sizeof(char *));
    req_len = malloc(cap * sizeof(size_t));
    long start = 0;
    for (long i = 1; i < size; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\n') {
            if (nreqs == cap) {
                cap *= 2;
                reqs = realloc(reqs, cap * sizeof(char *));
                req_len = realloc(req_len, cap * sizeof(size_t));
            }
            reqs[nreqs] = buf + start;
            req_len[nreqs++] = i + 1 - start;
            start = i + 1;
        }
    }
    if (!nreqs) {
        fprintf(stderr, "no requests in %s\n", path);
        exit(3);
    }
}

static size_t sent_count;

/* Send the next request on c. A request is ~900 bytes into an empty socket buffer (one request
 * outstanding per connection), so a short write does not happen in practice; if it does, the
 * rest is written after poll() says it can be (a stall that shows up in the figures). */
static int send_next(conn *c, double now, double due) {
    const char *p = reqs[sent_count % nreqs];
    size_t left = req_len[sent_count % nreqs];
    sent_count++;
    while (left) {
        ssize_t w = send(c->fd, p, left, MSG_NOSIGNAL);
        if (w > 0) {
            p += w, left -= w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
        } else {
            c->dead = 1;
            return 0;
        }
    }
    c->sent_at = now, c->due_at = due, c->busy = 1, c->last = 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: %s SOCKET CONNS SECONDS RATE SEED REQUESTS_FILE OUT_FILE [TICK_US]\n", argv[0]);
        return 2;
    }
    double tick = argc == 9 ? atof(argv[8]) * 1e-6 : 0.0;
    const char *path = argv[1];
    int nconns = atoi(argv[2]);
    double seconds = atof(argv[3]), rate = atof(argv[4]);
    rng_state = strtoull(argv[5], NULL, 10);
    load_requests(argv[6]);
    if (nconns <= 0 || seconds <= 0) {
        fprintf(stderr, "CONNS and SECONDS must be positive\n");
        return 2;
    }
    /* the timer slack (50 us by default) would blur the 50 us gaps of 20,000/s */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    conn *conns = calloc(nconns, sizeof(conn));
    int ep = epoll_create1(0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "socket path too long\n");
        return 3;
    }
    strcpy(addr.sun_path, path);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
            perror("connect");
            return 3;
        }
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }

    vec lat = {0}, lat_due = {0}, lag = {0};
    int64_t answers = 0, closed = 0;
    double user0, sys0, user1, sys1;
    cpu_seconds(&user0, &sys0);
    long switches0 = switches;
    int64_t polls = 0;
    double start = mono(), end = start + seconds, next_due = start;
    double gap = rate > 0 ? 1.0 / rate : 0.0;
    if (rate <= 0)
        for (int i = 0; i < nconns; i++) {
            double t = mono();
            send_next(&conns[i], t, t);
        }
    struct epoll_event events[256];
    char buf[4096];
    for (;;) {
        double now = mono();
        if (now >= end)
            break;
        struct timespec ts;
        if (rate > 0) {
            while (next_due <= now) {
                conn *c = &conns[rng_next() % (uint64_t)nconns];
                if (c->dead) {
                    /* its requests are not sent: counted as not answered */
                } else if (c->busy) {
                    ring_push(&c->waiting, next_due); /* sent when its answer comes */
                } else if (send_next(c, now, next_due)) {
                    push(&lag, now - next_due);
                }
                next_due += gap;
            }
            double wake = next_due;
            if (tick > 0) /* wake on the tick after the next due time: fewer, burstier wake-ups */
                wake = start + tick * (double)(int64_t)((next_due - start) / tick + 1);
            double wait = wake - mono();
            if (wait > end - now)
                wait = end - now;
            if (wait < 0)
                wait = 0;
            ts.tv_sec = (time_t)wait;
            ts.tv_nsec = (long)((wait - ts.tv_sec) * 1e9);
        } else {
            ts.tv_sec = 0, ts.tv_nsec = 100000000;
        }
        int n = epoll_pwait2(ep, events, 256, &ts, NULL);
        polls++;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_pwait2");
            return 3;
        }
        for (int k = 0; k < n; k++) {
            conn *c = &conns[events[k].data.u32];
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) { /* closed by the service (or an error): stop using it */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                c->dead = 1, c->busy = 0;
                closed++;
                continue;
            }
            /* one answer outstanding, so an answer is complete when what was read ends with
             * its empty line (possibly split across reads) */
            int done = (r >= 2 && buf[r - 2] == '\n' && buf[r - 1] == '\n') || (r == 1 && c->last == '\n' && buf[0] == '\n');
            c->last = buf[r - 1];
            if (!done || !c->busy)
                continue;
            double t = mono();
            push(&lat, t - c->sent_at);
            push(&lat_due, t - c->due_at);
            answers++;
            c->busy = 0;
            if (rate <= 0) {
                send_next(c, t, t);
            } else if (c->waiting.n) {
                double due = ring_pop(&c->waiting);
                if (send_next(c, t, due))
                    push(&lag, t - due);
            }
        }
    }
    cpu_seconds(&user1, &sys1);
    double cpu[2] = {user1 - user0, sys1 - sys0};
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);

    FILE *out = fopen(argv[7], "wb");
    if (!out) {
        perror(argv[7]);
        return 3;
    }
    int64_t head[6] = {answers, (int64_t)lat.n, (int64_t)lag.n, closed, polls, switches - switches0};
    fwrite(head, sizeof head, 1, out);
    fwrite(cpu, sizeof cpu, 1, out);
    fwrite(lat.v, sizeof(double), lat.n, out);
    fwrite(lat_due.v, sizeof(double), lat_due.n, out);
    fwrite(lag.v, sizeof(double), lag.n, out);
    if (fclose(out) != 0) {
        perror(argv[7]);
        return 3;
    }
    return 0;
}
