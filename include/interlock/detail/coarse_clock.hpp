// interlock/detail/coarse_clock.hpp: a steady clock read from the kernel's last tick.
//
// Design note. Retention checks (has this record expired?) run on every replay of an
// idempotency_guard and every refused claim of unique_claims, and a precise
// steady_clock::now() costs about 25 ns there (a vDSO clock_gettime reading the TSC),
// as much as the rest of a cached lookup. Retention periods are minutes to days, so a
// clock that is a scheduler tick stale (1-10 ms, CONFIG_HZ) is exact enough, and Linux
// keeps one: CLOCK_MONOTONIC_COARSE, about 5 ns to read.
//
// CLOCK_MONOTONIC_COARSE is CLOCK_MONOTONIC as of the last tick: the same epoch as
// std::chrono::steady_clock (CLOCK_MONOTONIC in libstdc++ and libc++ on Linux), never
// ahead of it and at most one tick behind. So its time_point is steady_clock's (the
// Cpp17Clock requirements allow a clock to use another clock's time_point when they
// share an epoch), and a `now` function written for steady_clock plugs in unchanged.
// Elsewhere (or if the call fails) now() is steady_clock::now().
//
// Thread-safety: now() is thread-safe, wait-free (one vDSO read) and never throws.
#ifndef INTERLOCK_DETAIL_COARSE_CLOCK_HPP
#define INTERLOCK_DETAIL_COARSE_CLOCK_HPP

#include <interlock/config.hpp>

#include <chrono>

#if defined(__linux__)
#include <time.h>
#endif

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

struct coarse_steady_clock {
  using duration = std::chrono::steady_clock::duration;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::steady_clock::time_point;
  static constexpr bool is_steady = true;

  /// The monotonic time at the last scheduler tick (steady_clock::now() where there is
  /// no coarse clock).
  static time_point now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    timespec ts{};
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0) {
      return time_point(std::chrono::duration_cast<duration>(std::chrono::seconds(ts.tv_sec) +
                                                             std::chrono::nanoseconds(ts.tv_nsec)));
    }
#endif
    return std::chrono::steady_clock::now();
  }
};

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_COARSE_CLOCK_HPP
