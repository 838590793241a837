/* LD_PRELOAD shim for the crash tests: counts the calls that put data on disk (pwrite,
 * fdatasync, fsync, ftruncate) and kills the process with SIGKILL just before the call number
 * $JSEARCH_CRASH_AT (1-based), so that call never happens. With $JSEARCH_CRASH_COUNT set to a file
 * name, the number of calls made is written there at exit (to plan the kill points). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static long target = -1;
static long count = 0;

static void tick(void) {
    if (target == -1) {
        const char *s = getenv("JSEARCH_CRASH_AT");
        target = s ? atol(s) : 0;
    }
    count++;
    if (target > 0 && count == target) {
        kill(getpid(), SIGKILL);
    }
}

__attribute__((destructor)) static void report(void) {
    const char *f = getenv("JSEARCH_CRASH_COUNT");
    if (f) {
        FILE *out = fopen(f, "w");
        if (out) {
            fprintf(out, "%ld\n", count);
            fclose(out);
        }
    }
}

#define WRAP(ret, name, params, args)                        \
    ret name params {                                        \
        static ret(*real) params;                            \
        if (!real) real = (ret(*) params)dlsym(RTLD_NEXT, #name); \
        tick();                                              \
        return real args;                                    \
    }

WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(ssize_t, pwrite64, (int fd, const void *b, size_t n, off_t o), (fd, b, n, o))
WRAP(int, fdatasync, (int fd), (fd))
WRAP(int, fsync, (int fd), (fd))
WRAP(int, ftruncate, (int fd, off_t n), (fd, n))
WRAP(int, ftruncate64, (int fd, off_t n), (fd, n))
