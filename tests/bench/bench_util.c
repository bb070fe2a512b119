#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim/sim.h"
#include "util/clock.h"

void bench_remove_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bench.lua", dir);
    unlink(path);
    rmdir(dir);
}

void *bench_sim_thread(void *sim)
{
    ami_sim_run(sim, 0);
    return NULL;
}

long bench_vmrss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

double bench_now_s(void)
{
    return (double)ami_now_ns() / 1e9;
}
