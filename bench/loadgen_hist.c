/* loadgen_hist.c: the load generator's latency histogram (bench/loadgen.c).
 *
 * Log-linear: one bucket per microsecond below 1024 us (exact), then 512
 * buckets per power of two (the top 10 bits of the value kept: within
 * 0.2 %), up to NBUCKETS; a percentile is its bucket's middle. */
#include <stdint.h>
#include "loadgen.h"

#define NBUCKETS 16384

static uint64_t hist[NBUCKETS], total;

static int bucket_of(uint64_t us) {
    if (us < 1024) return (int)us;
    int msb = 63 - __builtin_clzll(us), shift = msb - 9;  /* keep the top 10 bits */
    int i = 1024 + (shift - 1) * 512 + (int)((us >> shift) - 512);
    return i < NBUCKETS ? i : NBUCKETS - 1;
}

static double value_of(int i) {
    if (i < 1024) return i;
    int shift = (i - 1024) / 512 + 1;
    uint64_t sub = (uint64_t)((i - 1024) % 512 + 512);
    return ((double)(sub << shift) + (double)((sub + 1) << shift)) / 2.0;  /* the bucket's middle */
}

void hist_add(uint64_t us) {
    hist[bucket_of(us)]++;
    total++;
}

double hist_percentile(double p) {
    uint64_t want = (uint64_t)(p * (double)total + 0.5), seen = 0;
    for (int i = 0; total && i < NBUCKETS; i++)
        if ((seen += hist[i]) >= (want ? want : 1)) return value_of(i);
    return 0;
}
