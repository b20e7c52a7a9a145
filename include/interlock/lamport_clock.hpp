// interlock/lamport_clock.hpp: an atomic Lamport clock.
//
// Design note. A Lamport clock is a counter that orders events: every local event
// ticks it, and every message received from elsewhere moves it past the sender's
// time (`witness`). If event a happened before event b, then time(a) < time(b); the
// converse does not hold (use vector_clock to detect concurrency). cas_slot stamps
// every commit with one; several slots can share one clock so that their stamps
// order commits across all of them.
//
// Guarantees: lock-free (one fetch_add for tick, a CAS loop for witness), never
// blocks, never allocates. Times start at 0 (no event yet) and the first tick returns
// 1. A 64-bit counter does not wrap in practice (2^64 ticks at 10^9 per second last
// 584 years).
//
// Memory ordering: tick and witness are acq_rel read-modify-writes on one atomic, so
// clock values form one total order consistent with each thread's program order, and
// everything a thread did before a tick that returned t is visible to a thread whose
// later tick or now() observed a value >= t.
#ifndef INTERLOCK_LAMPORT_CLOCK_HPP
#define INTERLOCK_LAMPORT_CLOCK_HPP

#include <interlock/config.hpp>

#include <atomic>
#include <cstdint>

INTERLOCK_NAMESPACE_BEGIN

class lamport_clock {
 public:
  using time_type = std::uint64_t;

  constexpr lamport_clock() noexcept = default;
  /// Starts at `start` (for a process that restores its clock from storage).
  explicit constexpr lamport_clock(time_type start) noexcept : time_(start) {}
  lamport_clock(const lamport_clock&) = delete;
  lamport_clock& operator=(const lamport_clock&) = delete;

  /// Records a local event and returns its time: the previous time + 1.
  /// Thread-safe; wait-free on platforms with a native fetch_add.
  time_type tick() noexcept {
    // (1) acq_rel: pairs with every other tick/witness (1)/(2) and now() (3).
    return time_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }

  /// Records the receipt of a message stamped `remote`: the clock becomes
  /// max(local, remote) + 1, which is returned. Thread-safe; lock-free (CAS loop).
  time_type witness(time_type remote) noexcept {
    time_type current = time_.load(std::memory_order_relaxed);  // a guess; the CAS checks it
    time_type next = 0;
    do {
      next = (current > remote ? current : remote) + 1;
      // (2) acq_rel: pairs with (1), (2) and (3).
    } while (!time_.compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    return next;
  }

  /// The time of the latest event. Thread-safe; wait-free.
  [[nodiscard]] time_type now() const noexcept {
    // (3) acquire: pairs with the RMWs (1) and (2).
    return time_.load(std::memory_order_acquire);
  }

 private:
  std::atomic<time_type> time_{0};
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_LAMPORT_CLOCK_HPP
