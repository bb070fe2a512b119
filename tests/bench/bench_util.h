/*
 * What the bench programs share: removing their scripts folder, the
 * simulator's loop on its own thread, process memory and time readings.
 */
#ifndef AMI_BENCH_UTIL_H
#define AMI_BENCH_UTIL_H

#include <stddef.h>

/* Remove bench.lua and the folder. */
void bench_remove_dir(const char *dir);
/* pthread entry: ami_sim_run(sim, 0) until ami_sim_stop. */
void *bench_sim_thread(void *sim);
/* VmRSS of this process in KiB, or -1. */
long bench_vmrss_kib(void);
double bench_now_s(void);

#endif
