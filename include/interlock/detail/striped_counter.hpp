// interlock/detail/striped_counter.hpp: statistics counters that many threads bump
// without sharing a cache line.
//
// Design note. A single atomic counter bumped on every call (every replay of an
// idempotency_guard, say) bounces its cache line between all the cores that bump it:
// at two threads that alone can cost more than the operation it counts. Striped
// counters give each thread (by a small per-thread index) its own cache-line-sized
// stripe; reading a total sums the stripes. Bumps are relaxed: a statistic is ordered
// with nothing else, and a total read while others bump is exact per counter up to
// the bumps in flight.
#ifndef INTERLOCK_DETAIL_STRIPED_COUNTER_HPP
#define INTERLOCK_DETAIL_STRIPED_COUNTER_HPP

#include <interlock/config.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

/// A small per-thread number (1, 2, ...) that spreads statistics over stripes.
inline unsigned thread_stripe_index() noexcept {
  static constinit thread_local unsigned index = 0;  // 0: not assigned yet
  if (index == 0) {
    static std::atomic<unsigned> next{0};
    // Relaxed: only distinctness matters, and the RMW gives that.
    index = next.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  return index;
}

/// `Counters` relaxed event counters, striped over `Stripes` cache lines.
template <std::size_t Counters, std::size_t Stripes = 16>
class striped_counters {
 public:
  void bump(std::size_t counter) noexcept {
    // Relaxed: a statistic (see the design note).
    stripes_[thread_stripe_index() % Stripes].values[counter].fetch_add(1,
                                                                        std::memory_order_relaxed);
  }

  /// The total of one counter. O(Stripes).
  [[nodiscard]] std::uint64_t total(std::size_t counter) const noexcept {
    std::uint64_t sum = 0;
    for (const auto& s : stripes_) sum += s.values[counter].load(std::memory_order_relaxed);
    return sum;
  }

 private:
  struct alignas(cache_line_size) stripe {
    std::array<std::atomic<std::uint64_t>, Counters> values{};
  };
  std::array<stripe, Stripes> stripes_{};
};

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_STRIPED_COUNTER_HPP
