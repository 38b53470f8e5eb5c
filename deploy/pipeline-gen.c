/*
 * deploy/pipeline-gen.c: a second load generator for a-chat's direct workload, written
 * apart from a-chat's own bench (no code shared), in the way redis-benchmark -P works:
 * each client keeps PIPELINE messages in flight and sends one more for each of its
 * messages delivered, writing whatever it owes in one write as soon as it learns of it.
 *
 *   cc -O2 -o pipeline-gen deploy/pipeline-gen.c
 *   pipeline-gen HOST PORT CLIENTS PIPELINE SECONDS SERVER_PID [each|apart]
 *
 * With `each`, every message goes out in a write of its own (as a client that does not
 * batch), instead of everything a client owes in one write. With `apart`, consecutive
 * lines name their recipient two ways in turn (`g1:` and `g1 :`, the same person), so
 * that a-chat, which joins a run of lines naming their recipients alike into one item,
 * joins none: the cost of a client whose lines go to different people.
 *
 * Client i logs in as g<i> and sends `g<i+1>: <seq> <padding>` (64-byte lines) to the next
 * client. Every delivery is checked: from the client that sends to it, with the next
 * sequence number (nothing lost, duplicated or reordered). After SECONDS it stops sending,
 * waits for what is in flight (up to 5 s), and prints one line of key=value figures:
 * deliveries, deliveries/s, the server's CPU per delivery (from /proc/PID/stat), and the
 * generator's own reads and writes (system calls and bytes per call). It prints a progress
 * line on stderr every second. Exit status 0 when every message arrived in order.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE 64
#define MAX_CLIENTS 4096

struct client {
    int fd;
    long sent, acked, expected; /* messages sent, delivered (to the next), next seq from the previous */
    char in[65536];
    size_t in_len;
};

static struct client clients[MAX_CLIENTS];
static int n;
static long pipeline, reads, writes, read_bytes, write_bytes, bad;
static int each; /* one write per message */
static int apart; /* no two consecutive lines name the recipient alike */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double server_cpu(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    /* fields after the command: state(3) ... utime(14) stime(15) */
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    return (utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Writes all of buf to client i's socket (waiting only while the socket is full). */
static void write_all(int i, const char *buf, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(clients[i].fd, buf + off, len - off);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (w <= 0) { perror("write"); exit(2); }
        writes++;
        write_bytes += w;
        off += (size_t)w;
    }
}

/* Sends `count` messages of client i: in one write, or with `each` one write apiece. */
static void send_some(int i, long count) {
    static char buf[LINE * 4096];
    struct client *c = &clients[i];
    size_t len = 0;
    while (count-- > 0) {
        const char *colon = apart && c->sent % 2 ? " :" : ":";
        int k = snprintf(buf + len, LINE, "g%d%s %ld ", (i + 1) % n, colon, c->sent++);
        memset(buf + len + k, 'x', LINE - 1 - k);
        buf[len + LINE - 1] = '\n';
        len += LINE;
        if (each) {
            write_all(i, buf, len);
            len = 0;
        }
    }
    write_all(i, buf, len);
}

/* Handles the whole lines client i has received; returns how many deliveries. */
static long take_lines(int i) {
    struct client *c = &clients[i];
    int from = (i + n - 1) % n;
    char *start = c->in, *end = c->in + c->in_len, *nl;
    long got = 0;
    while ((nl = memchr(start, '\n', end - start))) {
        int who = -1;
        long seq = -1;
        if (sscanf(start, "from g%d: %ld ", &who, &seq) != 2 || who != from || seq != c->expected) {
            if (bad++ < 5) fprintf(stderr, "unexpected line for g%d: %.*s\n", i, (int)(nl - start), start);
        } else {
            c->expected++;
            got++;
            clients[from].acked++;
        }
        start = nl + 1;
    }
    c->in_len = end - start;
    memmove(c->in, start, c->in_len);
    return got;
}

int main(int argc, char **argv) {
    if (argc != 7 && !(argc == 8 && (!strcmp(argv[7], "each") || !strcmp(argv[7], "apart")))) {
        fprintf(stderr, "usage: %s HOST PORT CLIENTS PIPELINE SECONDS SERVER_PID [each|apart]\n", argv[0]);
        return 2;
    }
    each = argc == 8 && !strcmp(argv[7], "each");
    apart = argc == 8 && !strcmp(argv[7], "apart");
    n = atoi(argv[3]);
    pipeline = atol(argv[4]);
    double seconds = atof(argv[5]);
    int pid = atoi(argv[6]);
    if (n < 2 || n > MAX_CLIENTS || pipeline < 1 || pipeline > 4096) {
        fprintf(stderr, "CLIENTS must be 2..%d and PIPELINE 1..4096\n", MAX_CLIENTS);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 2; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        clients[i].fd = fd;
        /* Log in, and confirm it with a line to itself. */
        char hello[64];
        int k = snprintf(hello, sizeof hello, "g%d\ng%d: ready\n", i, i);
        if (write(fd, hello, k) != k) { perror("login"); return 2; }
        char want[64], got[64];
        int w = snprintf(want, sizeof want, "from g%d: ready\n", i);
        size_t have = 0;
        while (have < (size_t)w) {
            ssize_t r = read(fd, got + have, w - have);
            if (r <= 0) { fprintf(stderr, "g%d: no login confirmation\n", i); return 2; }
            have += r;
        }
        if (memcmp(got, want, w)) { fprintf(stderr, "g%d: %.*s\n", i, w, got); return 2; }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double cpu0 = server_cpu(pid), t0 = now(), next_report = t0 + 1, stop_at = t0 + seconds;
    for (int i = 0; i < n; i++) send_some(i, pipeline);
    long delivered = 0, last = 0;
    int sending = 1;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (sending && t >= stop_at) sending = 0;
        if (t >= next_report) {
            fprintf(stderr, "[%5.1fs] delivered %ld (%.0f/s)\n", t - t0, delivered, (double)(delivered - last));
            last = delivered;
            next_report += 1;
        }
        long in_flight = 0;
        for (int i = 0; i < n; i++) in_flight += clients[i].sent - clients[i].acked;
        if (!sending && (in_flight == 0 || t > stop_at + 5)) break;
        int got = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < got; e++) {
            int i = evs[e].data.u32;
            struct client *c = &clients[i];
            for (;;) {
                ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
                if (r < 0 && errno == EAGAIN) break;
                if (r <= 0) { fprintf(stderr, "g%d: the server closed the connection\n", i); return 1; }
                reads++;
                read_bytes += r;
                c->in_len += r;
                delivered += take_lines(i);
            }
        }
        /* Each client sends one more for each of its messages delivered, in one write. */
        if (sending)
            for (int i = 0; i < n; i++) {
                long owed = pipeline - (clients[i].sent - clients[i].acked);
                if (owed > 0) send_some(i, owed);
            }
    }
    double took = now() - t0, cpu = server_cpu(pid) - cpu0;
    long sent = 0, lost = 0;
    for (int i = 0; i < n; i++) {
        sent += clients[i].sent;
        lost += clients[i].sent - clients[i].acked;
    }
    printf("sent=%ld delivered=%ld lost=%ld bad=%ld seconds=%.2f deliveries_per_s=%.0f "
           "server_cpu_s=%.2f server_cpu_ns_per_delivery=%.0f writes=%ld bytes_per_write=%.0f "
           "reads=%ld bytes_per_read=%.0f\n",
           sent, delivered, lost, bad, took, delivered / took, cpu,
           delivered ? cpu * 1e9 / delivered : 0, writes, writes ? (double)write_bytes / writes : 0,
           reads, reads ? (double)read_bytes / reads : 0);
    return lost == 0 && bad == 0 ? 0 : 1;
}
