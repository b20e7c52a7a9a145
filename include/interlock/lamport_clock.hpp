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
// 1. Ticking alone does not reach the top in practice (2^64 ticks at 10^9 per second
// last 584 years), but a remote stamp can be anything: a corrupt or hostile one near
// 2^64 would wrap the clock to 0 and run time backwards. So the clock saturates at
// `max_time` (2^64 - 2^32): a clock that reaches it stays there, and tick() and
// witness() return max_time again rather than wrap. Times no longer increase once
// saturated, so a caller that cannot trust its peers checks `remote < max_time`
// (better, a bound on how far ahead a peer may be) before witnessing.
//
// Memory ordering: tick and witness are acq_rel read-modify-writes on one atomic, so
// clock values form one total order consistent with each thread's program order, and
// everything a thread did before a tick that returned t is visible to a thread whose
// later tick or now() observed a value >= t. (This holds at saturation too: the calls
// there still read-modify-write the word.)
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
  /// Starts at `start` (for a process that restores its clock from storage), at most
  /// max_time: a larger start (a corrupt or "-1" record) would let ticks wrap to 0.
  explicit constexpr lamport_clock(time_type start) noexcept
      : time_(start < max_time ? start : max_time) {}
  lamport_clock(const lamport_clock&) = delete;
  lamport_clock& operator=(const lamport_clock&) = delete;

  /// The largest time: a clock that reaches it stays there (see the design note).
  /// 2^32 below the top, so that ticks in flight on any number of threads cannot carry
  /// the word past 2^64 - 1.
  static constexpr time_type max_time = ~time_type{0} - (time_type{1} << 32);

  /// Records a local event and returns its time: the previous time + 1, or max_time
  /// once saturated. Thread-safe; wait-free on platforms with a native fetch_add.
  time_type tick() noexcept {
    // (1) acq_rel: pairs with every other tick/witness (1)/(2) and now() (3).
    const time_type previous = time_.fetch_add(1, std::memory_order_acq_rel);
    if (previous < max_time) return previous + 1;
    // Saturated: take the step back. Each thread has at most one such step in flight,
    // so the word stays within max_time + (threads) and never wraps.
    time_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: (1) already ordered this call
    return max_time;
  }

  /// Records the receipt of a message stamped `remote`: the clock becomes
  /// max(local, remote) + 1 (at most max_time), which is returned. Thread-safe;
  /// lock-free (CAS loop).
  time_type witness(time_type remote) noexcept {
    time_type current = time_.load(std::memory_order_relaxed);  // a guess; the CAS checks it
    time_type next = 0;
    do {
      next = successor(current > remote ? current : remote, current);
      // (2) acq_rel: pairs with (1), (2) and (3).
    } while (!time_.compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    return next < max_time ? next : max_time;
  }

  /// The time of the latest event (at most max_time). Thread-safe; wait-free.
  [[nodiscard]] time_type now() const noexcept {
    // (3) acquire: pairs with the RMWs (1) and (2).
    const time_type time = time_.load(std::memory_order_acquire);
    return time < max_time ? time : max_time;
  }

 private:
  /// What witness stores after seeing `seen`: seen + 1, saturating at max_time; a word
  /// already past max_time (ticks in flight) is stored back unchanged.
  static constexpr time_type successor(time_type seen, time_type current) noexcept {
    if (current >= max_time) return current;
    return seen < max_time ? seen + 1 : max_time;
  }

  std::atomic<time_type> time_{0};
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_LAMPORT_CLOCK_HPP
