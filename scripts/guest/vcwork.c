/*
 * vcwork: the workload of the vcoord test guest, configured from the kernel command line.
 *
 *   vc.cpu=P[@S][,P[@S]...]   duty cycle of every vCPU: P percent of one vCPU for S seconds, then
 *                             the next phase; the last phase lasts forever. Default: 0 (idle).
 *   vc.cpuN=...               the same for vCPU N only (overrides vc.cpu).
 *   vc.mem=PHASE[,PHASE...]   memory held by this process over time, phases:
 *                               grow:R:L  grow by R MiB/s until L MiB are held
 *                               hold:S    keep what is held for S seconds
 *                               use:M     hold exactly M MiB at once
 *                               free      release everything
 *                             After the last phase what is held stays held.
 *
 * Memory is anonymous and touched, so the guest really uses it. Progress goes to the console as
 * "vcwork: mem_mib=N" every 2 s.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_PHASES 32
#define MAX_CPUS 64
#define CHUNK (1u << 20)
#define MAX_CHUNKS 65536

struct cpu_phase { double pct, secs; };
struct cpu_plan { int n; struct cpu_phase p[MAX_PHASES]; };

static char cmdline[4096];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = { (time_t)s, (long)((s - (time_t)s) * 1e9) };
    nanosleep(&ts, NULL);
}

/* Value of "key=" on the command line, copied into out; 0 when absent. */
static int param(const char *key, char *out, size_t len)
{
    size_t klen = strlen(key);
    for (char *p = cmdline; (p = strstr(p, key)); p += klen) {
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t n = strcspn(v, " \n");
            if (n >= len)
                n = len - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

static void parse_cpu_plan(const char *s, struct cpu_plan *plan)
{
    plan->n = 0;
    while (*s && plan->n < MAX_PHASES) {
        struct cpu_phase *ph = &plan->p[plan->n++];
        char *end;
        ph->pct = strtod(s, &end);
        ph->secs = -1;
        if (*end == '@')
            ph->secs = strtod(end + 1, &end);
        s = *end == ',' ? end + 1 : end + strlen(end);
    }
}

static void *cpu_worker(void *arg)
{
    struct cpu_plan *plan = arg;
    const double period = 0.1;
    int phase = 0;
    double phase_start = now_s();
    for (;;) {
        struct cpu_phase *ph = &plan->p[phase];
        double t = now_s();
        if (ph->secs >= 0 && t - phase_start >= ph->secs && phase + 1 < plan->n) {
            phase++;
            phase_start = t;
            continue;
        }
        double busy = period * ph->pct / 100.0;
        volatile unsigned long spin = 0;
        while (now_s() - t < busy)
            spin++;
        sleep_s(period - busy);
    }
    return NULL;
}

static void *chunks[MAX_CHUNKS];
static int held;

static int grab_one(void)
{
    if (held >= MAX_CHUNKS)
        return 0;
    void *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 0;
    memset(p, 0xa5, CHUNK);
    chunks[held++] = p;
    return 1;
}

static void release_all(void)
{
    while (held > 0)
        munmap(chunks[--held], CHUNK);
}

static void report(void)
{
    static double last;
    double t = now_s();
    if (t - last >= 2.0) {
        printf("vcwork: mem_mib=%d\n", held);
        fflush(stdout);
        last = t;
    }
}

static void run_memory(char *spec)
{
    const double step = 0.05;
    for (char *save = NULL, *ph = strtok_r(spec, ",", &save); ph; ph = strtok_r(NULL, ",", &save)) {
        double a = 0, b = 0;
        if (sscanf(ph, "grow:%lf:%lf", &a, &b) == 2) {
            double owed = 0;
            while (held < b) {
                owed += a * step;
                while (owed >= 1 && held < b && grab_one())
                    owed -= 1;
                report();
                sleep_s(step);
            }
        } else if (sscanf(ph, "hold:%lf", &a) == 1) {
            double end = now_s() + a;
            while (now_s() < end) {
                report();
                sleep_s(step);
            }
        } else if (sscanf(ph, "use:%lf", &a) == 1) {
            while (held > a)
                munmap(chunks[--held], CHUNK);
            while (held < a && grab_one())
                ;
        } else if (strcmp(ph, "free") == 0) {
            release_all();
        } else {
            printf("vcwork: unknown memory phase '%s'\n", ph);
        }
        printf("vcwork: phase %s done, mem_mib=%d\n", ph, held);
        fflush(stdout);
    }
}

int main(void)
{
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) {
        if (!fgets(cmdline, sizeof cmdline, f))
            cmdline[0] = 0;
        fclose(f);
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu > MAX_CPUS)
        ncpu = MAX_CPUS;
    static struct cpu_plan plans[MAX_CPUS];
    char buf[512], key[16];
    for (long i = 0; i < ncpu; i++) {
        snprintf(key, sizeof key, "vc.cpu%ld", i);
        if (param(key, buf, sizeof buf) || param("vc.cpu", buf, sizeof buf))
            parse_cpu_plan(buf, &plans[i]);
        if (plans[i].n == 0 || (plans[i].n == 1 && plans[i].p[0].pct <= 0))
            continue;
        pthread_t th;
        pthread_attr_t attr;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(i, &set);
        pthread_attr_init(&attr);
        pthread_attr_setaffinity_np(&attr, sizeof set, &set);
        if (pthread_create(&th, &attr, cpu_worker, &plans[i]) != 0)
            printf("vcwork: cannot start cpu worker %ld\n", i);
    }
    printf("vcwork: started on %ld vcpu(s)\n", ncpu);
    fflush(stdout);
    if (param("vc.mem", buf, sizeof buf))
        run_memory(buf);
    for (;;) {
        report();
        sleep_s(1);
    }
}
