/* netns-tests/bench/alloccount.c — an LD_PRELOAD shim that counts heap calls.
 *
 *   LD_PRELOAD=build/alloccount.so ALLOCCOUNT_FILE=/tmp/x program ...
 *   kill -USR2 PID      appends one line to /tmp/x.PID:
 *                       "pid=P malloc=N calloc=N realloc=N memalign=N free=N bytes=N"
 *
 * Every allocation entry point of glibc is interposed and forwarded to glibc's
 * own __libc_* functions (no dlsym, so no bootstrap recursion); counters are
 * relaxed atomics, so all threads are counted. The dump runs in the signal
 * handler with async-signal-safe calls only (open/write/close, hand-made
 * number formatting). Counts are cumulative: a benchmark takes one dump after
 * warm-up and one after a fixed amount of traffic and divides the difference
 * by the datagrams carried. Nothing is written at exit, so short-lived helper
 * processes that inherit the environment (a wrapper, `ip netns exec`) never
 * touch the file. C++ `new` reaches malloc, so it is counted too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static unsigned long n_malloc, n_calloc, n_realloc, n_memalign, n_free, n_bytes;
static char dump_path[512];

#define COUNT(var) __atomic_add_fetch(&(var), 1, __ATOMIC_RELAXED)
#define ADD(var, v) __atomic_add_fetch(&(var), (unsigned long)(v), __ATOMIC_RELAXED)
#define LOAD(var) __atomic_load_n(&(var), __ATOMIC_RELAXED)

void *malloc(size_t n) {
    COUNT(n_malloc);
    ADD(n_bytes, n);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    COUNT(n_calloc);
    ADD(n_bytes, a * b);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    COUNT(n_realloc);
    ADD(n_bytes, n);
    return __libc_realloc(p, n);
}
void free(void *p) {
    if (p) COUNT(n_free);
    __libc_free(p);
}
void *memalign(size_t align, size_t n) {
    COUNT(n_memalign);
    ADD(n_bytes, n);
    return __libc_memalign(align, n);
}
void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
void *valloc(size_t n) { return memalign((size_t)sysconf(_SC_PAGESIZE), n); }
void *pvalloc(size_t n) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return memalign(pg, (n + pg - 1) / pg * pg);
}
int posix_memalign(void **out, size_t align, size_t n) {
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    void *p = memalign(align, n);
    if (!p && n) return ENOMEM;
    *out = p;
    return 0;
}

/* --- the dump (async-signal-safe) --- */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
    while (*s && at < cap) buf[at++] = *s++;
    return at;
}
static size_t put_num(char *buf, size_t at, size_t cap, unsigned long v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < sizeof tmp);
    while (n && at < cap) buf[at++] = tmp[--n];
    return at;
}

static void dump(int sig) {
    (void)sig;
    int saved = errno;
    char line[256];
    const size_t cap = sizeof line - 1;
    size_t at = 0;
    at = put_str(line, at, cap, "pid=");
    at = put_num(line, at, cap, (unsigned long)getpid());
    at = put_str(line, at, cap, " malloc=");
    at = put_num(line, at, cap, LOAD(n_malloc));
    at = put_str(line, at, cap, " calloc=");
    at = put_num(line, at, cap, LOAD(n_calloc));
    at = put_str(line, at, cap, " realloc=");
    at = put_num(line, at, cap, LOAD(n_realloc));
    at = put_str(line, at, cap, " memalign=");
    at = put_num(line, at, cap, LOAD(n_memalign));
    at = put_str(line, at, cap, " free=");
    at = put_num(line, at, cap, LOAD(n_free));
    at = put_str(line, at, cap, " bytes=");
    at = put_num(line, at, cap, LOAD(n_bytes));
    line[at++] = '\n';
    int fd = open(dump_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, line, at);
        (void)w;
        close(fd);
    }
    errno = saved;
}

__attribute__((constructor)) static void alloccount_init(void) {
    const char *base = getenv("ALLOCCOUNT_FILE");
    if (!base || !*base) return;
    /* "<base>.<pid>" */
    size_t at = put_str(dump_path, 0, sizeof dump_path - 24, base);
    at = put_str(dump_path, at, sizeof dump_path - 1, ".");
    at = put_num(dump_path, at, sizeof dump_path - 1, (unsigned long)getpid());
    dump_path[at] = '\0';
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = dump;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}
