// interlock/hybrid_clock.hpp: a lock-free hybrid logical clock (HLC).
//
// Design note. A hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical
// Clocks", OPODIS 2014) stamps events with (physical, logical): the physical part
// follows wall-clock time, so stamps are meaningful to people and close to NTP time,
// and the logical part orders events within one physical tick and across skewed
// machines. Like a Lamport clock: if a happened before b then stamp(a) < stamp(b), and
// stamps of one clock are strictly increasing, even when the physical clock jumps
// backwards. Use it for MVCC timestamps, log ordering across services, snapshot reads
// "as of" a time.
//
// When not to use it: to detect concurrency (use vector_clock), or where stamps must
// never run ahead of the physical clock (a burst of more than 65536 events within one
// millisecond moves the physical part ahead, see below).
//
// Representation: `hlc_timestamp` packs a 48-bit physical time in milliseconds since
// the Unix epoch (enough until the year 10889) above a 16-bit logical counter into one
// std::uint64_t, so the clock is one atomic word and timestamps order as integers.
//
// Overflow: when the logical counter would pass 65535, the physical part advances by
// one millisecond and the logical counter restarts at 0 (the packed word simply grows
// by one). The clock then runs up to a few milliseconds ahead of the physical clock
// until the physical clock catches up; stamps stay strictly increasing.
//
// Maximum offset: update() rejects a remote stamp whose physical part is more than
// `max_offset` milliseconds ahead of the local physical clock (a broken or malicious
// peer would otherwise drag every clock into the future). Remote stamps in the past
// are always accepted.
//
// The physical clock is injected: `basic_hybrid_clock<PhysicalClock>` calls
// `PhysicalClock{}()`-like objects returning milliseconds as std::uint64_t (values at
// or above 2^48 are clamped). `hybrid_clock` uses `coarse_wall_clock_ms`, which reads
// CLOCK_REALTIME_COARSE on Linux (a few nanoseconds, 1 to 4 ms resolution, absorbed by
// the logical counter) and std::chrono::system_clock elsewhere.
//
// Guarantees: now() and update() are lock-free (one CAS loop on one atomic word),
// never allocate and never throw unless the physical clock does.
//
// Memory ordering: every update of the clock word is an acq_rel compare_exchange, so
// stamps form one total order consistent with each thread's program order, and
// everything a thread did before a now() or update() that returned stamp t is visible
// to a thread whose later now(), update() or last() observed a stamp >= t.
#ifndef INTERLOCK_HYBRID_CLOCK_HPP
#define INTERLOCK_HYBRID_CLOCK_HPP

#include <interlock/config.hpp>

#include <atomic>
#include <chrono>
#include <compare>
#include <cstdint>
#include <optional>
#include <ostream>
#include <utility>

#if defined(__linux__)
#include <time.h>
#endif

INTERLOCK_NAMESPACE_BEGIN

/// A hybrid logical clock timestamp: 48-bit physical milliseconds and a 16-bit
/// logical counter packed into one integer (physical in the high bits), so timestamps
/// compare as their packed value. A regular value type.
class hlc_timestamp {
 public:
  static constexpr unsigned logical_bits = 16;
  static constexpr std::uint64_t max_logical = (std::uint64_t{1} << logical_bits) - 1;
  static constexpr std::uint64_t max_physical = (std::uint64_t{1} << (64 - logical_bits)) - 1;

  constexpr hlc_timestamp() noexcept = default;
  /// From parts. Precondition: physical <= max_physical, logical <= max_logical.
  constexpr hlc_timestamp(std::uint64_t physical, std::uint64_t logical) noexcept
      : packed_((physical << logical_bits) | logical) {
    INTERLOCK_ASSERT(physical <= max_physical && logical <= max_logical,
                     "hlc_timestamp part out of range");
  }
  /// From the packed form (as returned by packed()).
  [[nodiscard]] static constexpr hlc_timestamp from_packed(std::uint64_t packed) noexcept {
    hlc_timestamp t;
    t.packed_ = packed;
    return t;
  }

  /// Milliseconds since the Unix epoch (for the default physical clock).
  [[nodiscard]] constexpr std::uint64_t physical() const noexcept {
    return packed_ >> logical_bits;
  }
  [[nodiscard]] constexpr std::uint64_t logical() const noexcept { return packed_ & max_logical; }
  [[nodiscard]] constexpr std::uint64_t packed() const noexcept { return packed_; }

  friend constexpr bool operator==(hlc_timestamp, hlc_timestamp) noexcept = default;
  friend constexpr std::strong_ordering operator<=>(hlc_timestamp a, hlc_timestamp b) noexcept {
    return a.packed_ <=> b.packed_;
  }
  /// Writes `physical.logical`, e.g. `1732540000123.7`.
  friend std::ostream& operator<<(std::ostream& out, hlc_timestamp t) {
    return out << t.physical() << '.' << t.logical();
  }

 private:
  std::uint64_t packed_ = 0;
};

/// Wall-clock milliseconds since the Unix epoch from std::chrono::system_clock (0 for
/// a time before 1970, a clock set wrong: never a huge unsigned value).
struct wall_clock_ms {
  std::uint64_t operator()() const noexcept {
    const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count();
    return ms > 0 ? static_cast<std::uint64_t>(ms) : 0;
  }
};

/// Wall-clock milliseconds since the Unix epoch, read cheaply: CLOCK_REALTIME_COARSE
/// on Linux (resolution of the kernel tick, 1 to 4 ms), system_clock elsewhere.
struct coarse_wall_clock_ms {
  std::uint64_t operator()() const noexcept {
#if defined(__linux__) && defined(CLOCK_REALTIME_COARSE)
    timespec now{};
    if (clock_gettime(CLOCK_REALTIME_COARSE, &now) == 0) {
      if (now.tv_sec < 0) return 0;  // before 1970: as wall_clock_ms
      return static_cast<std::uint64_t>(now.tv_sec) * 1000U +
             static_cast<std::uint64_t>(now.tv_nsec) / 1000000U;
    }
#endif
    return wall_clock_ms{}();
  }
};

/// A hybrid logical clock over the physical clock `PhysicalClock` (an invocable
/// returning milliseconds as std::uint64_t; a lambda, a functor, or
/// std::function<std::uint64_t()> for tests).
///
/// Thread-safety: every member may be called concurrently, provided PhysicalClock may
/// be: now() and update() call it from every calling thread at once, with no lock. A
/// stateful test clock (a mutable lambda, a counter) must make its state atomic.
template <class PhysicalClock = coarse_wall_clock_ms>
class basic_hybrid_clock {
 public:
  using physical_clock_type = PhysicalClock;

  /// The default maximum offset accepted from a remote stamp: 500 ms.
  static constexpr std::uint64_t default_max_offset_ms = 500;

  explicit basic_hybrid_clock(PhysicalClock physical = PhysicalClock{},
                              std::uint64_t max_offset_ms = default_max_offset_ms)
      : physical_(std::move(physical)), max_offset_ms_(max_offset_ms) {}
  basic_hybrid_clock(const basic_hybrid_clock&) = delete;
  basic_hybrid_clock& operator=(const basic_hybrid_clock&) = delete;

  /// Where the clock saturates: the first stamp of the last representable millisecond
  /// (the year 10889, or a remote stamp claiming it). A clock whose state reaches it
  /// stays there: now() returns its latest stamp again rather than a larger one, and
  /// update() refuses. Only now()'s fetch_add moves the state past `saturated`, each
  /// call at most one step past a value it read below it, so fewer than 65,536 threads
  /// cannot carry the state past 2^64 - 1 and wrap it to 0; update() and now()'s CAS
  /// never write past `saturated`.
  static constexpr std::uint64_t saturated = hlc_timestamp::max_physical
                                             << hlc_timestamp::logical_bits;

  /// Stamps a local or send event: max(last + 1, (physical now, 0)), i.e. the
  /// paper's l' = max(l, pt), c' = (l' == l) ? c + 1 : 0, with logical overflow
  /// carried into the physical part. Returns a stamp greater than every stamp this
  /// clock returned before (until the clock saturates, see `saturated`). Thread-safe;
  /// lock-free (one fetch_add when the clock is ahead of physical time, else a CAS
  /// loop whose retry means another thread's stamp was taken).
  hlc_timestamp now() noexcept(noexcept(std::declval<PhysicalClock&>()())) {
    const std::uint64_t floor = physical_floor();
    // A guess; the RMW below decides.
    std::uint64_t current = state_.load(std::memory_order_relaxed);
    if (current >= floor && current < saturated) {
      // The common case under load: the clock is already at or past the physical
      // time, so the rule max(last + 1, floor) is last + 1 for every later `last`
      // too (the state only grows). One fetch_add, no CAS retries; a logical
      // overflow carries into the physical part, as in the CAS path.
      // (4) acq_rel: pairs with (1), (2), (4) and the load (3).
      return hlc_timestamp::from_packed(state_.fetch_add(1, std::memory_order_acq_rel) + 1);
    }
    std::uint64_t next = 0;
    do {
      // Saturated: write the word back unchanged, so that this call still orders
      // like any other (the memory-ordering note), and return the latest stamp.
      // Otherwise current < saturated and floor <= saturated, so next <= saturated.
      next = current >= saturated ? current : (current + 1 > floor ? current + 1 : floor);
      // (1) acq_rel: pairs with the RMWs (1), (2), (4) of other calls and the load (3).
    } while (!state_.compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed));
    return hlc_timestamp::from_packed(next);
  }

  /// Stamps the receipt of a message stamped `remote` (the paper's receive rule):
  /// l' = max(l, l_m, pt); c' = max(c, c_m) + 1 when l' == l == l_m, c + 1 when only
  /// l' == l, c_m + 1 when only l' == l_m, and 0 when l' == pt alone; logical
  /// overflow carries into the physical part. Thread-safe; lock-free (CAS loop).
  /// Returns the new stamp, or an empty optional (the clock unchanged) when remote's
  /// physical part is more than max_offset_ms() ahead of the local physical clock, or
  /// when there is no successor: the clock is saturated or `remote` is at or past
  /// `saturated`.
  [[nodiscard]] std::optional<hlc_timestamp> update(hlc_timestamp remote) noexcept(
      noexcept(std::declval<PhysicalClock&>()())) {
    const std::uint64_t floor = physical_floor();
    const std::uint64_t pt = floor >> hlc_timestamp::logical_bits;
    if (remote.physical() > pt && remote.physical() - pt > max_offset_ms_) return std::nullopt;
    if (remote.packed() >= saturated) return std::nullopt;  // the clock would saturate
    // A guess; the CAS below checks it.
    std::uint64_t current = state_.load(std::memory_order_relaxed);
    std::uint64_t next = 0;
    do {
      if (current >= saturated) return std::nullopt;  // no successor exists
      // current and remote are below saturated and floor is at most saturated, so
      // next is at most saturated: update never carries the word past it.
      const std::uint64_t seen = current > remote.packed() ? current : remote.packed();
      next = seen + 1 > floor ? seen + 1 : floor;
      // (2) acq_rel: pairs with the CASes (1), (2) of other calls and the load (3).
    } while (!state_.compare_exchange_weak(current, next, std::memory_order_acq_rel,
                                           std::memory_order_relaxed));
    return hlc_timestamp::from_packed(next);
  }

  /// The latest stamp returned (or the zero stamp). Thread-safe; wait-free.
  [[nodiscard]] hlc_timestamp last() const noexcept {
    // (3) acquire: pairs with the acq_rel CASes (1) and (2).
    return hlc_timestamp::from_packed(state_.load(std::memory_order_acquire));
  }

  [[nodiscard]] std::uint64_t max_offset_ms() const noexcept { return max_offset_ms_; }

 private:
  // (physical now, 0) as a packed word. A reading past 48 bits (after the year 10889:
  // an error value such as -1 cast to unsigned) is not a time and counts as 0, so the
  // clock goes on counting logically; clamping it would saturate the clock for good.
  std::uint64_t physical_floor() noexcept(noexcept(std::declval<PhysicalClock&>()())) {
    const std::uint64_t pt = static_cast<std::uint64_t>(physical_());
    return pt > hlc_timestamp::max_physical ? 0 : pt << hlc_timestamp::logical_bits;
  }

  PhysicalClock physical_;
  const std::uint64_t max_offset_ms_;
  std::atomic<std::uint64_t> state_{0};
};

/// The hybrid logical clock over the coarse wall clock.
using hybrid_clock = basic_hybrid_clock<>;

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_HYBRID_CLOCK_HPP
