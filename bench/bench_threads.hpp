// The largest thread count every scaling benchmark runs (1, 2, 4, ... up to it).
//
// Set at configure time with -DINTERLOCK_BENCH_MAX_THREADS=N (CMake cache variable, default
// 8, which oversubscribes a small machine on purpose: spinning must give way to sleeping).
// A machine with more cores measures how the primitives scale past that with, for example,
// -DINTERLOCK_BENCH_MAX_THREADS=16.
#pragma once

#ifndef INTERLOCK_BENCH_MAX_THREADS
#define INTERLOCK_BENCH_MAX_THREADS 8
#endif

namespace interlock_bench {

inline constexpr int max_threads = INTERLOCK_BENCH_MAX_THREADS;
static_assert(max_threads >= 1, "INTERLOCK_BENCH_MAX_THREADS must be at least 1");

}  // namespace interlock_bench
