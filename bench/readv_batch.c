/* What one process_vm_readv costs, and what batching saves: reads N small pieces (64 bytes,
 * like a frame or a thread state) of another process's memory, once as N calls of one iovec
 * each (what gilscope's walker does today), as calls of up to 1024 iovecs, and as one read
 * of the whole span (what reading a thread's frame stack chunk at once would do).
 *
 *   cc -O2 -o /tmp/readv_batch bench/readv_batch.c
 *   sudo /tmp/readv_batch PID [N=420] [ROUNDS=2000]
 *
 * The pieces are spread over the first writable anonymous mapping of PID (its heap), 64 bytes
 * apart, as a walk over thread states and frames would touch them. Prints the CPU time per
 * round (one "sample") for both ways.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PID [N] [ROUNDS]\n", argv[0]);
        return 2;
    }
    int pid = atoi(argv[1]);
    int n = argc > 2 ? atoi(argv[2]) : 420;
    int rounds = argc > 3 ? atoi(argv[3]) : 2000;
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *maps = fopen(path, "r");
    if (!maps) {
        perror(path);
        return 1;
    }
    unsigned long start = 0, end = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long s, e;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && perms[0] == 'r' &&
            perms[1] == 'w' && (strstr(line, "[heap]") || e - s >= (unsigned long)n * 64)) {
            if (e - s >= (unsigned long)n * 64) {
                start = s;
                end = e;
                break;
            }
        }
    }
    fclose(maps);
    if (!start) {
        fprintf(stderr, "no writable mapping of %d bytes in %d\n", n * 64, pid);
        return 1;
    }
    char *buf = malloc((size_t)n * 64);
    struct iovec *local = calloc(n, sizeof *local), *remote = calloc(n, sizeof *remote);
    for (int i = 0; i < n; i++) {
        local[i].iov_base = buf + 64 * i;
        local[i].iov_len = 64;
        remote[i].iov_base = (void *)(start + 64UL * i);
        remote[i].iov_len = 64;
    }
    double t0 = cpu_now();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++)
            if (process_vm_readv(pid, &local[i], 1, &remote[i], 1, 0) != 64) {
                perror("process_vm_readv");
                return 1;
            }
    double one = (cpu_now() - t0) / rounds;
    t0 = cpu_now();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i += 1024) {
            int k = n - i < 1024 ? n - i : 1024;
            if (process_vm_readv(pid, &local[i], k, &remote[i], k, 0) != 64L * k) {
                perror("process_vm_readv");
                return 1;
            }
        }
    double batched = (cpu_now() - t0) / rounds;
    struct iovec whole_local = {buf, 64UL * n}, whole_remote = {(void *)start, 64UL * n};
    t0 = cpu_now();
    for (int r = 0; r < rounds; r++)
        if (process_vm_readv(pid, &whole_local, 1, &whole_remote, 1, 0) != 64L * n) {
            perror("process_vm_readv");
            return 1;
        }
    double whole = (cpu_now() - t0) / rounds;
    printf("%d reads of 64 bytes over %lu KiB of pid %d: %.1f us per round as %d calls "
           "(%.2f us per call), %.1f us as %d batched call(s) (%.1fx less CPU), "
           "%.1f us as one read of the whole span (%.1fx less)\n",
           n, (64UL * n + 1023) / 1024, pid, one * 1e6, n, one * 1e6 / n, batched * 1e6,
           (n + 1023) / 1024, one / batched, whole * 1e6, one / whole);
    (void)end;
    return 0;
}
