/* backoff — exponential backoff with equal jitter. See backoff.h. */
#define _GNU_SOURCE
#include "backoff.h"

#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static __thread uint64_t rng_state;

static uint64_t next_random(void)
{
    if (rng_state == 0) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                   (uint64_t)(uintptr_t)&ts;
        }
        rng_state = seed != 0 ? seed : 0x9e3779b97f4a7c15ULL;
    }
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

uint64_t backoff_random(uint64_t bound)
{
    uint64_t r = next_random();
    return bound == UINT64_MAX ? r : r % (bound + 1);
}

int64_t backoff_cap_ms(int n, int64_t base_ms, int64_t max_ms)
{
    if (base_ms <= 0) {
        base_ms = 1;
    }
    if (max_ms < base_ms) {
        max_ms = base_ms;
    }
    int64_t cap = base_ms;
    for (int i = 1; i < n && cap < max_ms; i++) {
        cap = cap > INT64_MAX / 2 ? INT64_MAX : cap * 2;
    }
    return cap > max_ms ? max_ms : cap;
}

int64_t backoff_delay_ms(int n, int64_t base_ms, int64_t max_ms)
{
    int64_t cap = backoff_cap_ms(n, base_ms, max_ms);
    int64_t half = cap / 2;
    return half + (int64_t)backoff_random((uint64_t)(cap - half));
}
